"""ShapesWorld samples, exact histograms, splits, exports and the `firm world` command."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from firm.commands.world import main
from firm.data import from_wds
from firm.worlds.shapes import ShapesWorld, allocate, parse_histogram, schedule
from firm.worlds.shapes.export import write_bench, write_prompts, write_shards

DIMS = ("execution", "consistency", "instruction", "quality")


def test_allocate_is_exact_and_sums_to_n() -> None:
    assert allocate(2000) == {1: 400, 2: 400, 3: 400, 4: 400, 5: 400}
    assert allocate(14, (0, 0, 1, 2, 4)) == {1: 0, 2: 0, 3: 2, 4: 4, 5: 8}
    assert allocate(7) == {1: 2, 2: 2, 3: 1, 4: 1, 5: 1}  # largest remainder, ties to the lower score
    assert Counter(schedule(14, (0, 0, 1, 2, 4), seed=3)) == {3: 2, 4: 4, 5: 8}
    assert schedule(10, (1,) * 5, seed=1) == schedule(10, (1,) * 5, seed=1)


@pytest.mark.parametrize("text", ["1,1,1", "1,1,1,1,-1", "0,0,0,0,0", "a,b,c,d,e"])
def test_bad_histograms_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="histogram"):
        parse_histogram(text)


@pytest.mark.parametrize("dimension", DIMS)
def test_samples_follow_the_histogram_exactly(dimension: str) -> None:
    world = ShapesWorld(size=32, split="train", seed=1)
    samples = list(world.samples(dimension, 10, (1, 0, 2, 0, 2)))
    assert Counter(s.score for s in samples) == {1: 2, 3: 4, 5: 4}
    assert len({s.key for s in samples}) == 10
    for s in samples:
        assert s.dimension == dimension and s.image.size == (32, 32)
        assert (s.source is not None) == (dimension in ("execution", "consistency"))
        assert ("differences" in s.evidence) == (s.task == "edit") and ("plan" in s.evidence) == (s.task == "gen")
        assert s.provenance["world"] == "shapesworld" and s.provenance["split"] == "train"


def test_samples_are_deterministic_and_splits_disjoint() -> None:
    a = ShapesWorld(64, "train", 0).sample("execution", 5, 3)
    assert a == ShapesWorld(64, "train", 0).sample("execution", 5, 3)
    others = [ShapesWorld(64, split, 0).sample("execution", 5, 3) for split in ("val", "bench")]
    others.append(ShapesWorld(64, "train", 1).sample("execution", 5, 3))
    assert all(o.key != a.key and o.text + str(o.source.tobytes()) != a.text + str(a.source.tobytes()) for o in others)


def test_world_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="32-512"):
        ShapesWorld(size=600)
    with pytest.raises(ValueError, match="unknown split"):
        ShapesWorld(split="dev")
    with pytest.raises(ValueError, match="unknown dimension"):
        ShapesWorld().sample("beauty", 0)


def test_shards_round_trip_and_repeat_byte_for_byte(tmp_path: Path) -> None:
    world = ShapesWorld(size=32, split="val", seed=2)
    paths = write_shards(world, "consistency", 12, tmp_path / "a", shard_size=5, progress=False)
    assert [p.name for p in paths] == [f"shapes-val-consistency-00000{i}.tar" for i in range(3)]
    samples = [from_wds(d) for d in wds.WebDataset([str(p) for p in paths], shardshuffle=False)]
    assert len(samples) == 12 and len({s.key for s in samples}) == 12
    assert samples == list(world.samples("consistency", 12))
    again = write_shards(world, "consistency", 12, tmp_path / "b", shard_size=5, progress=False)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


def test_worker_processes_write_the_same_shards(tmp_path: Path) -> None:
    world = ShapesWorld(size=32, split="train", seed=4)
    one = write_shards(world, "quality", 6, tmp_path / "one", shard_size=3, progress=False)
    two = write_shards(world, "quality", 6, tmp_path / "two", shard_size=3, workers=2, progress=False)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]


def test_bench_folder(tmp_path: Path) -> None:
    path = write_bench(
        ShapesWorld(size=32, split="bench"), 5, tmp_path, dimensions=("execution", "quality"), progress=False
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 10
    for line in lines:
        assert set(line) >= {"id", "task", "dimension", "text", "image", "source", "score", "difficulty"}
        assert Image.open(tmp_path / line["image"]).size == (32, 32)
        assert (line["source"] is None) == (line["task"] == "gen")
        assert line["difficulty"] in ("easy", "hard") and 1 <= line["score"] <= 5
        if line["dimension"] == "quality":
            assert min(line["sub_scores"]) == line["score"]
    assert sorted(line["score"] for line in lines if line["dimension"] == "execution") == [1, 2, 3, 4, 5]


def test_prompt_sets(tmp_path: Path) -> None:
    world = ShapesWorld(size=32, split="test")
    edit = [
        json.loads(x) for x in write_prompts(world, "edit", 4, tmp_path / "e", progress=False).read_text().splitlines()
    ]
    assert (tmp_path / "e" / "test_metadata.jsonl").exists()
    for line in edit:
        assert line["image"].startswith("images/") and (tmp_path / "e" / line["image"]).exists()
        assert line["prompt"].endswith(".")
    gen = [
        json.loads(x) for x in write_prompts(world, "gen", 4, tmp_path / "g", progress=False).read_text().splitlines()
    ]
    assert all(set(line) == {"id", "prompt"} for line in gen)


def test_cli_writes_shards_and_sheets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["shards", "--dimension", "instruction", "-n", "6", "--size", "32", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--histogram", "0,0,0,1,1"]) == 0
    scores = [
        from_wds(d).score
        for d in wds.WebDataset(str(tmp_path / "shapes-train-instruction-000000.tar"), shardshuffle=False)
    ]
    assert sorted(scores) == [4, 4, 4, 5, 5, 5]
    assert main(["sheet", "--task", "gen", "-n", "2", "--size", "32", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").width > 0
    assert "contact sheet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["shards", "--dimension", "execution", "-n", "5", "--size", "16", "--out", "x"],
            "image size must be in 32-512",
        ),
        (["shards", "--dimension", "beauty", "-n", "5", "--out", "x"], "invalid choice: 'beauty'"),
        (["shards", "--dimension", "execution", "-n", "0", "--out", "x"], "expected a number >= 1"),
        (["shards", "--dimension", "execution", "-n", "5", "--out", "x", "--histogram", "1,2"], "five non-negative"),
        (["shards", "--dimension", "quality", "--task", "edit", "-n", "5", "--out", "x"], "does not match"),
        (["bench", "-n", "5", "--out", "x", "--dimensions", "execution,style"], "unknown dimension 'style'"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_give_one_error_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and message in err[0]

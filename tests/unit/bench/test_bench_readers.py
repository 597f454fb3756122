"""Bench readers: ShapesWorld export, FIRM-Bench files as published, generic tables; bad records are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from firm.bench.fields import MissingField, lookup, to_score
from firm.bench.readers import ReadOptions, read_bench
from firm.critics.base import ScoreRange


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _shapes_line(i: int, dimension: str, score: int, **extra: object) -> dict:
    edit = dimension in ("execution", "consistency")
    return {
        "id": f"s{i}",
        "task": "edit" if edit else "gen",
        "dimension": dimension,
        "text": f"text {i}",
        "image": f"images/{i}.png",
        "source": f"images/{i}_src.png" if edit else None,
        "score": score,
        "difficulty": "easy" if i % 2 else "hard",
        **extra,
    }


def test_shapesworld_reads_samples_and_counts_bad_records(tmp_path: Path) -> None:
    for i in range(4):
        _png(tmp_path / f"images/{i}.png")
        _png(tmp_path / f"images/{i}_src.png")
    path = _jsonl(
        tmp_path / "bench.jsonl",
        [
            _shapes_line(0, "execution", 5),
            _shapes_line(1, "instruction", 2),
            "{not json",
            _shapes_line(2, "consistency", 9),  # off the scale
            _shapes_line(5, "execution", 3),  # its image is missing
            {k: v for k, v in _shapes_line(3, "execution", 1).items() if k != "text"},
        ],
    )
    bench = read_bench("shapesworld", [path])
    assert [(s.id, s.dimension, s.human) for s in bench.samples] == [
        ("s0", "execution", 5.0),
        ("s1", "instruction", 2.0),
    ]
    first = bench.samples[0]
    assert first.source == tmp_path / "images/0_src.png" and first.difficulty == "hard" and first.text == "text 0"
    assert bench.samples[1].source is None
    reasons = [s.reason for s in bench.skipped]
    assert len(reasons) == 4
    assert "not valid JSON" in reasons[0]
    assert "outside 1-5" in reasons[1]
    assert "image not found" in reasons[2]
    assert "no field 'text'" in reasons[3] and "--field text=" in reasons[3]
    assert bench.skipped[0].where == "bench.jsonl:3"


def test_strict_raises_at_the_first_bad_record(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bench.jsonl", ["{not json"])
    with pytest.raises(ValueError, match=r"bench.jsonl:1: not valid JSON"):
        read_bench("shapesworld", [path], ReadOptions(strict=True))


def test_no_usable_sample_is_an_error_that_says_why(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bench.jsonl", [{"id": "a", "dimension": "execution", "text": "t", "score": 3}])
    with pytest.raises(ValueError, match="no usable sample.*no field 'image'"):
        read_bench("shapesworld", [path])


def test_images_are_not_required_when_no_critic_will_look_at_them(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "bench.jsonl", [_shapes_line(0, "execution", 4)])
    bench = read_bench("shapesworld", [path], ReadOptions(check_images=False))
    assert bench.samples[0].image == tmp_path / "images/0.png"


def _firm_gen(tmp_path: Path) -> Path:
    """FIRM-Bench-Gen as published: inputs in bench_v1.jsonl, human scores in result/human_bench_v1.jsonl."""
    folder = tmp_path / "FIRM-Bench-Gen"
    rows = [("g1", "en/1.png", 4), ("g2", "en_long/2.png", 2), ("g3", "en/3.png", 5)]
    for _, image, _ in rows:
        _png(folder / image)
    _jsonl(folder / "bench_v1.jsonl", [{"id": i, "prompt": f"prompt {i}", "image": [img]} for i, img, _ in rows])
    human = [{"id": i, "instruction_following": {"score": [s]}, "image": [img]} for i, img, s in rows[:2]]
    _jsonl(folder / "result/human_bench_v1.jsonl", human)
    return folder / "bench_v1.jsonl"


def test_firm_bench_gen_joins_inputs_and_human_scores_and_buckets_difficulty_by_folder(tmp_path: Path) -> None:
    bench = read_bench("firm-bench-gen", [_firm_gen(tmp_path)])
    got = [(s.id, s.dimension, s.human, s.difficulty, s.text) for s in bench.samples]
    assert got == [("g1", "instruction", 4.0, "easy", "prompt g1"), ("g2", "instruction", 2.0, "hard", "prompt g2")]
    assert [s.reason for s in bench.skipped] == ["id 'g3' has no human scores in human_bench_v1.jsonl"]
    assert bench.fields["score.instruction"] == "instruction_following.score"


def test_firm_bench_field_names_are_settings(tmp_path: Path) -> None:
    path = _firm_gen(tmp_path)
    with pytest.raises(ValueError, match=r"no field 'caption'.*--field text=SPEC"):
        read_bench("firm-bench-gen", [path], ReadOptions(fields={"text": "caption"}, strict=True))


def test_firm_bench_edit_reads_both_dimensions_with_a_field_mapping(tmp_path: Path) -> None:
    folder = tmp_path / "FIRM-Bench-Edit"
    for name in ("gedit/1.png", "edited_images_flux/1.png", "edited_images_qwen/1.png"):
        _png(folder / name)
    inputs = [
        {"key": "e1", "instruction": "add a hat", "source": ["gedit/1.png"], "edited": ["edited_images_flux/1.png"]},
        {"key": "e2", "instruction": "add a hat", "source": ["gedit/1.png"], "edited": ["edited_images_qwen/1.png"]},
    ]
    human = [
        {"key": "e1", "execution": {"score": [5]}, "consistency": {"score": [3]}},
        {"key": "e2", "execution": {"score": [2]}},  # consistency not scored for this one
    ]
    _jsonl(folder / "bench_v1.jsonl", inputs)
    _jsonl(folder / "elsewhere.jsonl", human)
    fields = {"id": "key", "image": "edited", "source": "source", "model": "dir:edited"}
    bench = read_bench(
        "firm-bench-edit", [folder / "bench_v1.jsonl"], ReadOptions(human=folder / "elsewhere.jsonl", fields=fields)
    )
    got = [(s.id, s.dimension, s.human, s.model) for s in bench.samples]
    assert got == [
        ("e1", "execution", 5.0, "edited_images_flux"),
        ("e1", "consistency", 3.0, "edited_images_flux"),
        ("e2", "execution", 2.0, "edited_images_qwen"),
    ]
    # Both edits answer the same instruction on the same source: candidates that pairwise accuracy compares.
    assert bench.samples[0].group == bench.samples[2].group
    assert bench.samples[0].source == folder / "gedit/1.png"


def test_table_long_layout_averages_rater_columns_from_csv(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "scores.csv").write_text(
        "id,prompt,image,r1,r2,r3\nx,a cat,a.png,4,5,\ny,a dog,a.png,1,2,3\nz,a cow,a.png,,,\n", encoding="utf-8"
    )
    options = ReadOptions(fields={"score": "r1,r2,r3", "text": "prompt", "image": "image"}, dimension="instruction")
    bench = read_bench("table", [tmp_path / "scores.csv"], options)
    assert [(s.id, s.human, s.raters, s.text) for s in bench.samples] == [
        ("x", 4.5, (4.0, 5.0), "a cat"),
        ("y", 2.0, (1.0, 2.0, 3.0), "a dog"),
    ]
    assert [s.reason for s in bench.skipped] == ["no rater scored 'z'"]


def test_table_wide_layout_with_one_file_per_rater_and_list_cells(tmp_path: Path) -> None:
    # VIEScore's shape: TSV, CRLF, one column per model, cells "[SC, PQ]".
    (tmp_path / "r1.tsv").write_text("uid\tA\tB\r\nu1\t[1, 0]\t[0,1]\r\nu2\t[0.5, 1]\t[1, 1]", encoding="utf-8")
    (tmp_path / "r2.tsv").write_text("uid\tA\tB\r\nu1\t[0, 0]\t[0,1]\r\nu2\t[1, 1]\t[1, 0]", encoding="utf-8")
    options = ReadOptions(
        fields={"id": "uid"},
        layout="wide",
        element=0,
        dimension="semantic_consistency",
        score_range=ScoreRange(0, 10),
        human_range=(0, 1),
    )
    bench = read_bench("table", [tmp_path / "r1.tsv", tmp_path / "r2.tsv"], options)
    got = {s.id: (s.human, s.model, s.group) for s in bench.samples}
    assert got == {
        "u1/A": (5.0, "A", "u1"),
        "u1/B": (0.0, "B", "u1"),
        "u2/A": (7.5, "A", "u2"),
        "u2/B": (10.0, "B", "u2"),
    }


def test_table_needs_a_dimension(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,score\na,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="--dimension"):
        read_bench("table", [tmp_path / "t.csv"])


def test_unknown_format_and_field_key_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown bench format"):
        read_bench("nope", [Path("x")])
    with pytest.raises(ValueError, match="unknown field key"):
        ReadOptions(fields={"prompt": "x"})


def test_a_setting_that_does_not_apply_is_warned_about(tmp_path: Path) -> None:
    _png(tmp_path / "images/0.png")
    _png(tmp_path / "images/0_src.png")
    path = _jsonl(tmp_path / "bench.jsonl", [_shapes_line(0, "execution", 4)])
    with pytest.warns(UserWarning, match="layout setting does not apply"):
        read_bench("shapesworld", [path], ReadOptions(layout="wide"))


def test_field_specs() -> None:
    record = {"a": {"b": [7, 8]}, "img": ["en_long/3.png"], "x.y": 1, "empty": ""}
    assert lookup(record, "a.b") == 7  # a one-element-list convention: the first element
    assert lookup(record, "a.b.1") == 8
    assert lookup(record, "a.b", first=False) == [7, 8]
    assert lookup(record, "dir:img") == "en_long"
    assert lookup(record, "x.y") == 1
    for missing in ("a.c", "empty", "dir:x.y"):
        with pytest.raises(MissingField):
            lookup(record, missing)
    assert to_score("[0.5, 1]", element=1) == 1.0
    assert to_score(" 4 ") == 4.0
    with pytest.raises(ValueError):
        to_score(True)
    with pytest.raises(ValueError):
        to_score("nan")

"""``firm curate`` on ShapesWorld with the exact annotator: the shards equal ShapesWorld's own oracle samples,
sample for sample, and critic SFT reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from webdataset.tariterators import tarfile_samples

from firm.cli import main
from firm.data.critic_sft import CriticSFTDataModule
from firm.data.schema import CriticSample, from_wds
from firm.data.stream import count_samples
from firm.testing import build_tiny_critic
from firm.worlds.shapes.export import write_pairs
from firm.worlds.shapes.world import ShapesWorld

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORLD = ShapesWorld(size=64, split="train", seed=0)


def curated(out: Path) -> dict[str, CriticSample]:
    samples = [from_wds(s) for p in sorted(out.glob("curated-*.tar")) for s in tarfile_samples([{"url": str(p)}])]
    return {s.key: s for s in samples}


def same_pixels(a: object, b: object) -> bool:
    return a is b or (a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes())  # type: ignore[attr-defined]


def assert_matches_oracle(sample: CriticSample, oracle: CriticSample) -> None:
    assert (sample.score, sample.answer, sample.text) == (oracle.score, oracle.answer, oracle.text), sample.key
    assert sample.sub_scores == oracle.sub_scores and sample.evidence == oracle.evidence, sample.key
    assert same_pixels(sample.image, oracle.image) and same_pixels(sample.source, oracle.source), sample.key


@pytest.fixture(scope="module")
def edit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("curate-edit")
    pairs = write_pairs(WORLD, "edit", 80, root / "pairs", progress=False)
    code = main(["curate", "edit", "--input", str(pairs), "--output", str(root / "out"), "--annotator", "shapes",
                 "--rewrite-fraction", "0.25", "--shard-size", "64", "--no-progress"])  # fmt: skip
    assert code == 0
    return root / "out"


def test_curated_edits_equal_the_oracle_sample_for_sample(edit_run: Path) -> None:
    samples = curated(edit_run)
    originals = {k: s for k, s in samples.items() if "-rw-" not in k}
    assert len(originals) == 160
    for i in range(80):
        case = WORLD.edit_case(i)
        for dim in ("execution", "consistency"):
            assert_matches_oracle(originals[f"{WORLD.key('edit', i)}-{dim}"], WORLD.oracle_sample(case, dim, i))
    manifest = json.loads((edit_run / "manifest.json").read_text())
    assert manifest["counts"]["rejected"] == 0 and manifest["annotator"]["name"] == "shapes"
    truth = [WORLD.edit_case(i).execution for i in range(80)]
    natural = manifest["histograms"]["natural"]["execution"]
    assert natural == {str(s): truth.count(s) for s in range(1, 6)}


def test_rewritten_instructions_score_low_and_fill_the_histogram(edit_run: Path) -> None:
    samples = curated(edit_run)
    rewritten = [s for k, s in samples.items() if k.endswith("-rw-execution")]
    assert 10 <= len(rewritten) <= 30
    for sample in rewritten:
        assert sample.score <= 2 and sample.text != sample.provenance["rewritten_from"]
    manifest = json.loads((edit_run / "manifest.json").read_text())
    low = lambda h: h["1"] + h["2"]  # noqa: E731
    hist = manifest["histograms"]
    assert low(hist["labelled"]["execution"]) == low(hist["natural"]["execution"]) + len(rewritten)


def test_curated_generations_with_quality_equal_the_oracle(tmp_path: Path) -> None:
    pairs = write_pairs(WORLD, "gen", 40, tmp_path / "pairs", progress=False)
    code = main(["curate", "gen", "--input", str(pairs), "--output", str(tmp_path / "out"), "--annotator", "shapes",
                 "--quality", "--no-progress"])  # fmt: skip
    assert code == 0
    samples = curated(tmp_path / "out")
    assert len(samples) == 80
    for i in range(40):
        case = WORLD.gen_case(i)
        for dim in ("instruction", "quality"):
            assert_matches_oracle(samples[f"{WORLD.key('gen', i)}-{dim}"], WORLD.oracle_sample(case, dim, i))


def test_steered_pairs_reproduce_the_direct_export(tmp_path: Path) -> None:
    """Pairs drawn like `firm world shards --dimension quality` curate into the very samples that command writes."""
    pairs = write_pairs(WORLD, "gen", 20, tmp_path / "pairs", progress=False, dimension="quality")
    code = main(["curate", "gen", "--input", str(pairs), "--output", str(tmp_path / "out"), "--annotator", "shapes",
                 "--dimensions", "quality", "--no-progress"])  # fmt: skip
    assert code == 0
    samples = curated(tmp_path / "out")
    direct = list(WORLD.samples("quality", 20))
    assert [s.score for s in direct] == [samples[f"{d.key}-quality"].score for d in direct]
    for d in direct:
        assert_matches_oracle(samples[f"{d.key}-quality"], d)


def test_critic_sft_reads_the_curated_shards(edit_run: Path) -> None:
    _, processor = build_tiny_critic("qwen3_vl")
    shards = [str(edit_run / name) for name in json.loads((edit_run / "manifest.json").read_text())["shards"]]
    assert len(shards) == 4  # 206 samples, 64 per shard
    data = CriticSFTDataModule(train=shards, batch_size=4, num_workers=0, shuffle_buffer=1)
    data.use_processor(processor)  # type: ignore[arg-type]
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"]["input_ids"].shape[0] == 4
    assert count_samples(shards) == len(curated(edit_run)) == 206

"""The curation pipelines' mechanics with a deterministic annotator: labels, retries, rejections, resume,
duplicates, rewriting, rebalancing and the shards they write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from curation_support import PixelAnnotator, write_edit_inputs, write_gen_inputs
from webdataset.tariterators import tarfile_samples

from firm.curation.pipeline import CurateSettings, Curation, CurationError
from firm.data.schema import CriticSample, from_wds

LEVELS = [0, 60, 110, 160, 220, 220, 220, 160]  # brightness scores 1 2 3 4 5 5 5 4


def shard_samples(out: Path) -> list[CriticSample]:
    return [from_wds(s) for path in sorted(out.glob("curated-*.tar")) for s in tarfile_samples([{"url": str(path)}])]


def labels(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def test_edit_difference_first_labels_every_dimension_into_readable_shards(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path / "in", LEVELS)
    annotator = PixelAnnotator()
    manifest = Curation(CurateSettings("edit", batch_size=3, shard_size=5), annotator, progress=False).run(
        pairs, tmp_path / "out"
    )
    samples = shard_samples(tmp_path / "out")
    assert len(samples) == 16 and manifest["counts"]["samples"] == {"execution": 8, "consistency": 8}
    assert [p.name for p in sorted((tmp_path / "out").glob("*.tar"))] == [f"curated-edit-{i:06d}.tar" for i in range(4)]
    by_key = {s.key: s for s in samples}
    first = by_key["in0001-execution"]
    assert first.score == 2 and first.task == "edit" and first.text == "brighten 1"
    assert first.source is not None and first.source.getpixel((0, 0)) == (0, 0, 0)
    assert first.image.getpixel((0, 0)) == (60, 60, 60)
    # The report is evidence, not input: the target answer is the critic's format, the report sits beside it.
    assert first.evidence["differences"]["obvious"] == ["brightness 1 -> 2"]
    assert first.provenance["input"] == "in0001" and first.provenance["origin"].endswith("pairs.jsonl:2")
    assert manifest["histograms"]["written"]["execution"] == {"1": 1, "2": 1, "3": 1, "4": 2, "5": 3}
    # one describe call per batch of 3, and each dimension scored once per batch
    assert annotator.calls == {"describe": 3, "score_execution": 3, "score_consistency": 3}


def test_rejected_answers_are_retried_then_recorded_with_their_reason_never_labelled(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path / "in", LEVELS)
    annotator = PixelAnnotator(reject_first=["in0002"], reject_always=["in0005"])
    manifest = Curation(CurateSettings("edit", retries=2), annotator, progress=False).run(pairs, tmp_path / "out")
    keys = {s.key for s in shard_samples(tmp_path / "out")}
    assert "in0002-execution" in keys  # rejected once, accepted on the retry
    assert not any(k.startswith("in0005") for k in keys)
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["input"], r["stage"], r["tries"]) for r in rejected] == [("in0005", "describe", 3)] * 2
    assert rejected[0]["reason"] == "refused in0005 on try 3" and rejected[0]["raw"] == "garbled answer"
    assert manifest["counts"]["rejected"] == 1 and manifest["counts"]["labelled"] == 7
    record = next(r for r in labels(tmp_path / "out") if r["input"] == "in0005")
    assert record["status"] == "rejected" and record["samples"] == []


def test_rerun_skips_labelled_inputs_and_rewrites_identical_shards(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path / "in", LEVELS)
    out = tmp_path / "out"
    Curation(CurateSettings("edit", limit=5), PixelAnnotator(), progress=False).run(pairs, out)
    assert len(labels(out)) == 5
    again = PixelAnnotator()
    manifest = Curation(CurateSettings("edit", limit=None), again, progress=False).run(pairs, out)
    assert manifest["counts"]["this_run"] == {**manifest["counts"]["this_run"], "labelled": 3, "skipped": 5}
    assert again.calls["describe"] == 1  # only the three new inputs, one batch
    first_bytes = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    third = PixelAnnotator()
    Curation(CurateSettings("edit"), third, progress=False).run(pairs, out)
    assert third.calls == {}  # nothing left to label
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == first_bytes
    assert len(labels(out)) == 8


def test_a_changed_input_is_labelled_again_and_duplicates_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    pairs = write_edit_inputs(folder, [60, 60, 110])  # in0000 and in0001 show the same pixels
    lines = pairs.read_text().splitlines()
    lines[1] = lines[1].replace("brighten 1", "brighten 0")  # ...and now the same text too
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    manifest = Curation(CurateSettings("edit"), PixelAnnotator(), progress=False).run(pairs, out)
    assert manifest["counts"]["duplicates"] == 1
    assert {s.key.rsplit("-", 1)[0] for s in shard_samples(out)} == {"in0000", "in0002"}
    from curation_support import grey

    grey(220).save(folder / "images" / "e2.png")  # the user replaced an image: its labels are stale
    Curation(CurateSettings("edit"), PixelAnnotator(), progress=False).run(pairs, out)
    assert {s.key: s.score for s in shard_samples(out)}["in0002-execution"] == 5


def test_rewriting_adds_mismatched_instructions_scored_by_the_same_stage(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path / "in", [220] * 20)
    annotator = PixelAnnotator()
    settings = CurateSettings("edit", rewrite_fraction=0.5, seed=3)
    manifest = Curation(settings, annotator, progress=False).run(pairs, tmp_path / "out")
    rewritten = [s for s in shard_samples(tmp_path / "out") if "-rw-" in s.key]
    assert 4 <= len(rewritten) // 2 <= 16 and manifest["counts"]["rewritten"] == len(rewritten) // 2
    for sample in rewritten:
        assert sample.score == 1 and sample.text.endswith("backwards")
        assert sample.provenance["rewritten_from"] == sample.text.removesuffix(" backwards")
        assert sample.evidence["differences"]["obvious"] == ["brightness 1 -> 5"]  # the pair's own report
    hist = manifest["histograms"]
    assert hist["natural"]["execution"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 20}
    assert hist["labelled"]["execution"]["1"] == len(rewritten) // 2
    # the same seed picks the same inputs
    again = Curation(CurateSettings("edit", rewrite_fraction=0.5, seed=3), PixelAnnotator(), progress=False)
    assert again.run(pairs, tmp_path / "out2")["counts"]["rewritten"] == manifest["counts"]["rewritten"]


def test_target_histogram_rebalances_what_is_written(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path / "in", [0, 60, 60, 110, 110, 110, 220, 220, 220, 220])
    settings = CurateSettings("edit", dimensions=("execution",), target_histogram=(1, 1, 1, 0, 1))
    manifest = Curation(settings, PixelAnnotator(), progress=False).run(pairs, tmp_path / "out")
    assert manifest["histograms"]["written"]["execution"] == {"1": 1, "2": 1, "3": 1, "4": 0, "5": 1}
    assert manifest["histograms"]["labelled"]["execution"] == {"1": 1, "2": 2, "3": 3, "4": 0, "5": 4}
    assert len(shard_samples(tmp_path / "out")) == 4


def test_gen_plan_then_score_with_quality_pass(tmp_path: Path) -> None:
    gens = write_gen_inputs(tmp_path / "in", [0, 110, 220])
    planner = PixelAnnotator()
    annotator = PixelAnnotator(reject_always=["gen0001"])
    settings = CurateSettings("gen", quality=True)
    manifest = Curation(settings, annotator, planner=planner, progress=False).run(gens, tmp_path / "out")
    assert planner.calls == {"plan": 1} and "plan" not in annotator.calls
    samples = {s.key: s for s in shard_samples(tmp_path / "out")}
    assert set(samples) == {"gen0000-instruction", "gen0000-quality", "gen0002-instruction", "gen0002-quality"}
    inst = samples["gen0002-instruction"]
    assert inst.score == 5 and inst.source is None
    assert [p["question"] for p in inst.evidence["plan"]] == ["Is there a?", "Is there grey?", "Is there square?"]
    quality = samples["gen0000-quality"]
    assert quality.sub_scores == (5, 1, 5) and quality.evidence == {"plan": inst.evidence["plan"], "q": 1}
    assert manifest["counts"]["rejections_by_stage"] == {"quality/quality": 1, "score/instruction": 1}
    assert manifest["planner"] == {"name": "pixel", "reject_first": [], "reject_always": []}


def test_output_labelled_with_other_settings_is_refused(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path / "in", LEVELS[:2])
    Curation(CurateSettings("edit"), PixelAnnotator(), progress=False).run(pairs, tmp_path / "out")
    with pytest.raises(CurationError, match="other settings or annotators"):
        Curation(CurateSettings("edit", seed=1), PixelAnnotator(), progress=False).run(pairs, tmp_path / "out")


def test_bad_inputs_are_counted_and_strict_stops(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path / "in", LEVELS[:3])
    (tmp_path / "in" / "images" / "e1.png").write_bytes(b"not a png")
    manifest = Curation(CurateSettings("edit"), PixelAnnotator(), progress=False).run(pairs, tmp_path / "out")
    assert manifest["counts"]["bad_inputs"] == 1 and manifest["counts"]["labelled"] == 2
    assert "not a decodable image" in manifest["bad_inputs"][0]["reason"]
    with pytest.raises(CurationError, match=r"pairs.jsonl:2: .*not a decodable image"):
        Curation(CurateSettings("edit", strict=True), PixelAnnotator(), progress=False).run(pairs, tmp_path / "o2")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "gen", "rewrite_fraction": 0.2}, "does not apply to generations"),
        ({"task": "edit", "quality": True}, "belongs to generations"),
        ({"task": "edit", "dimensions": ("instruction",)}, "not judged on edit inputs"),
        ({"task": "edit", "rewrite_fraction": 1.5}, r"in \[0, 1\]"),
        ({"task": "paint"}, "choose edit or gen"),
    ],
)
def test_settings_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(CurationError, match=message):
        CurateSettings(**kwargs)


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    import fcntl

    pairs = write_edit_inputs(tmp_path / "in", LEVELS[:2])
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running firm curate holds it
        with pytest.raises(CurationError, match="another firm curate is writing"):
            Curation(CurateSettings("edit"), PixelAnnotator(), progress=False).run(pairs, out)
    assert Curation(CurateSettings("edit"), PixelAnnotator(), progress=False).run(pairs, out)["counts"]["labelled"] == 2

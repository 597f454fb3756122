"""The `shapes` annotator: every curation stage equals ShapesWorld's oracle, pixel fallback, rewrites, pairs export."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from firm import plugins
from firm.commands.world import main
from firm.curation.base import DifferenceReport, EditItem, GenItem, Label, Plan, Rejected
from firm.worlds.shapes import annotate
from firm.worlds.shapes.annotate import ShapesWorldAnnotator
from firm.worlds.shapes.compare import judge_edit
from firm.worlds.shapes.edit import EditCase, build_edit_case
from firm.worlds.shapes.export import write_pairs
from firm.worlds.shapes.gen import GenCase, build_gen_case
from firm.worlds.shapes.grammar import instruction_ops
from firm.worlds.shapes.oracle import difference_report
from firm.worlds.shapes.world import ShapesWorld

WORLD = ShapesWorld(size=64, split="train", seed=0)
N_META = 150
N_PIXELS = 40
N_REWRITE = 40
#: Edits the pixel route may judge otherwise than the truth: none since compare.readings (case 30, an added darker
#: diamond plus the removed original, used to read as one diamond moved and reshaded).
KNOWN_PIXEL_MISREADS: set[int] = set()


def _meta(index: int, stream: str) -> dict[str, dict[str, object]]:
    return {"shapesworld": {"split": "train", "seed": 0, "size": 64, "index": index, "stream": stream}}


@cache
def _edits(n: int) -> tuple[tuple[EditCase, EditItem], ...]:
    out = []
    for i in range(n):
        case = WORLD.edit_case(i)
        item = EditItem(
            WORLD.key("edit", i),
            case.instruction,
            WORLD.render(case.source),
            WORLD.render(case.edited),
            _meta(i, "edit"),
        )
        out.append((case, item))
    return tuple(out)


@cache
def _gens(n: int) -> tuple[tuple[GenCase, GenItem], ...]:
    out = []
    for i in range(n):
        case = WORLD.gen_case(i)
        out.append((case, GenItem(WORLD.key("gen", i), case.prompt, WORLD.gen_image(case), _meta(i, "gen"))))
    return tuple(out)


def _valid(results: list[Label | Rejected] | list[DifferenceReport | Rejected]) -> list[Label | DifferenceReport]:
    bad = [r for r in results if isinstance(r, Rejected)]
    assert bad == []
    return [r for r in results if not isinstance(r, Rejected)]


def _without_metadata(item: EditItem) -> EditItem:
    return EditItem(item.key, item.instruction, item.source, item.image)


def test_the_annotator_is_registered_and_describes_itself() -> None:
    annotator = plugins.load("firm.annotators", "shapes")(from_pixels=False, seed=3)
    assert isinstance(annotator, ShapesWorldAnnotator)
    assert annotator.describe_self() == {"name": "shapes", "from_pixels": False, "seed": 3}


def test_edit_stages_equal_the_oracle_on_the_metadata_route() -> None:
    cases, items = zip(*_edits(N_META), strict=True)
    annotator = ShapesWorldAnnotator(from_pixels=False)  # a refusal here would mean the metadata route failed
    reports = _valid(annotator.describe(items))
    for case, report in zip(cases, reports, strict=True):
        assert isinstance(report, DifferenceReport)
        assert report.to_json() == difference_report(case.source, case.edited)
    scores: Counter[tuple[str, int]] = Counter()
    for dimension in ("execution", "consistency"):
        labels = _valid(annotator.score_edit(items, dimension, reports))  # type: ignore[arg-type]
        for i, (case, label) in enumerate(zip(cases, labels, strict=True)):
            truth = WORLD.oracle_sample(case, dimension, i)
            assert isinstance(label, Label) and label.dimension == dimension
            assert (label.score, label.answer, label.raw) == (truth.score, truth.answer, truth.answer)
            scores[dimension, label.score] += 1
    assert len(scores) >= 8  # the natural mix covers most scores of both dimensions


def test_gen_stages_equal_the_oracle_on_the_metadata_route() -> None:
    cases, items = zip(*_gens(N_META), strict=True)
    annotator = ShapesWorldAnnotator(from_pixels=False)
    plans = annotator.plan(items)
    instruction = annotator.score_instruction(items, plans)  # type: ignore[arg-type]
    quality = annotator.score_quality(items)
    for i, (case, plan, label, q) in enumerate(zip(cases, plans, instruction, quality, strict=True)):
        truth, truth_q = WORLD.oracle_sample(case, "instruction", i), WORLD.oracle_sample(case, "quality", i)
        assert isinstance(plan, Plan) and isinstance(label, Label) and isinstance(q, Label)
        assert plan == Plan.from_json(truth.evidence["plan"])  # groups and questions, no answers
        assert (label.score, label.answer, dict(label.evidence)) == (truth.score, truth.answer, truth.evidence)
        assert (q.score, q.answer, q.sub_scores) == (truth_q.score, truth_q.answer, truth_q.sub_scores)
        assert q.evidence == truth_q.evidence  # the plan with its answers, and the degradation


def test_the_plan_reads_the_prompt_alone() -> None:
    _, item = _gens(1)[0]
    plain = GenItem("other", item.prompt, Image.new("RGB", (8, 8)))  # no metadata, no readable image
    assert ShapesWorldAnnotator(from_pixels=False).plan([plain]) == ShapesWorldAnnotator().plan([item])
    refused = ShapesWorldAnnotator().plan([GenItem("cat", "A cat on a sofa.", item.image)])[0]
    assert isinstance(refused, Rejected) and "cat" in refused.reason


def test_the_pixel_route_on_clean_renders_agrees_with_the_truth() -> None:
    cases, items = zip(*_edits(N_PIXELS), strict=True)
    plain = [_without_metadata(item) for item in items]
    annotator = ShapesWorldAnnotator()
    reports = annotator.describe(plain)
    refused: Counter[str] = Counter()
    misread: set[int] = set()
    for dimension in ("execution", "consistency"):
        labels = annotator.score_edit(plain, dimension, [])
        for i, (case, label) in enumerate(zip(cases, labels, strict=True)):
            if isinstance(label, Rejected):
                assert label.reason
                refused[dimension] += 1
                continue
            truth = WORLD.oracle_sample(case, dimension, i)
            if label.score != truth.score:
                misread.add(i)
            # the reasoning lists changes in the order the shapes were read, so only the score must match
            assert json.loads(label.answer)["score"] == [label.score]
    for i, (case, report) in enumerate(zip(cases, reports, strict=True)):
        if isinstance(report, Rejected) or i in misread:
            continue
        want = DifferenceReport.from_json(difference_report(case.source, case.edited))
        assert sorted(report.obvious) == sorted(want.obvious), i
        assert {k: sorted(v) for k, v in report.detailed.items()} == {k: sorted(v) for k, v in want.detailed.items()}
    print(f"pixel route: {dict(refused)} refused of {N_PIXELS}, misread {sorted(misread)}")
    assert misread <= KNOWN_PIXEL_MISREADS
    assert sum(refused.values()) <= 0.1 * N_PIXELS  # clean renders are read; a refusal would need a reason anyway
    # rewrites on the pixel route are judged on the scenes as read, the same way score_edit judges them
    for item, text in zip(plain[:8], annotator.rewrite(plain[:8]), strict=True):
        if isinstance(text, Rejected):
            continue
        label = annotator.score_edit([EditItem(item.key, text, item.source, item.image)], "execution", [])[0]
        assert isinstance(label, Label) and label.score <= 2


def test_the_pixel_route_reads_generations_and_refuses_text_outside_the_grammar() -> None:
    cases, items = zip(*_gens(12), strict=True)
    plain = [GenItem(item.key, item.prompt, item.image) for item in items]
    annotator = ShapesWorldAnnotator()
    labels = annotator.score_instruction(plain, annotator.plan(plain))  # type: ignore[arg-type]
    for i, (case, label) in enumerate(zip(cases, labels, strict=True)):
        if isinstance(label, Rejected):  # a degraded image may be refused, never a clean one
            assert case.degradation.active, label
            continue
        truth = WORLD.oracle_sample(case, "instruction", i)
        assert (label.score, label.answer, dict(label.evidence)) == (truth.score, truth.answer, truth.evidence)
    quality = annotator.score_quality(plain[:2])
    for case, q in zip(cases[:2], quality, strict=True):
        assert isinstance(q, Rejected) or q.sub_scores == case.sub_scores
    edit = _without_metadata(_edits(1)[0][1])
    odd = EditItem(edit.key, "Make the cat purple.", edit.source, edit.image)
    refused = annotator.score_edit([odd], "execution", [])[0]
    assert isinstance(refused, Rejected) and "cat" in refused.reason
    blank = EditItem("blank", edit.instruction, Image.new("RGB", (64, 48)), edit.image)
    assert isinstance(annotator.describe([blank])[0], Rejected)


def _jpeg(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _one_pixel(image: Image.Image) -> Image.Image:
    out = image.copy()
    r, g, b = out.getpixel((0, 0))  # type: ignore[misc]
    out.putpixel((0, 0), ((r + 40) % 256, g, b))
    return out


@pytest.mark.parametrize("change", [_one_pixel, _jpeg], ids=["one-pixel", "jpeg"])
def test_a_changed_image_is_not_answered_from_the_metadata(
    change: Callable[[Image.Image], Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, item = _edits(3)[2]
    changed = EditItem(item.key, item.instruction, item.source, change(item.image), item.metadata)
    refused = ShapesWorldAnnotator(from_pixels=False).describe([changed])[0]
    assert isinstance(refused, Rejected)
    assert "no ShapesWorld case" in refused.reason and "not the renders" in refused.reason
    reads: list[object] = []
    real = annotate.read_scene

    def spy(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(annotate, "read_scene", spy)
    annotator = ShapesWorldAnnotator()
    annotator.score_edit([item], "execution", [])
    assert reads == []  # the untouched item is answered from its case
    annotator.score_edit([changed], "execution", [])
    annotator.score_edit([changed], "consistency", [])
    assert len(reads) == 2  # the changed one is read from its pixels, once for both stages
    _, gen = _gens(1)[0]
    changed_gen = GenItem(gen.key, gen.prompt, change(gen.image), gen.metadata)
    refused_gen = ShapesWorldAnnotator(from_pixels=False).score_instruction([changed_gen], [])[0]
    assert isinstance(refused_gen, Rejected) and "not the render" in refused_gen.reason


def test_metadata_that_names_no_case_is_refused_or_read() -> None:
    _, item = _edits(1)[0]
    for meta in (
        {},
        {"shapesworld": {"stream": "gen"}},
        {"shapesworld": {**_meta(0, "edit")["shapesworld"], "size": 8}},
    ):
        odd = EditItem(item.key, item.instruction, item.source, item.image, meta)
        refused = ShapesWorldAnnotator(from_pixels=False).score_edit([odd], "execution", [])[0]
        assert isinstance(refused, Rejected) and "no ShapesWorld case" in refused.reason
    read = ShapesWorldAnnotator().score_edit([_without_metadata(item)], "execution", [])[0]
    assert isinstance(read, Label)


def test_rewrites_are_grammatical_instructions_the_edit_fails() -> None:
    cases, items = zip(*_edits(N_REWRITE), strict=True)
    annotator = ShapesWorldAnnotator(seed=0)
    rewrites = annotator.rewrite(items)
    rewritten: list[EditItem] = []
    for case, item, text in zip(cases, items, rewrites, strict=True):
        if isinstance(text, Rejected):
            assert text.reason
            continue
        assert text != item.instruction
        ops = instruction_ops(text, case.source)  # parses, and names shapes of the source scene
        score = judge_edit(case.source, case.edited, ops, text).case.execution
        assert score <= 2
        new = EditItem(item.key, text, item.source, item.image, item.metadata)
        label = annotator.score_edit([new], "execution", [])[0]
        assert isinstance(label, Label) and label.score == score
        rewritten.append(new)
    assert len(rewritten) >= 0.9 * N_REWRITE
    again = ShapesWorldAnnotator(seed=0).rewrite(items)
    assert again == rewrites
    assert ShapesWorldAnnotator(seed=1).rewrite(items) != rewrites
    assert annotator.rewrite(items, attempt=1) != rewrites
    # the rewritten item still shows the same two images, with the same differences
    by_key = {item.key: item for item in items}
    assert annotator.describe(rewritten[:3]) == annotator.describe([by_key[r.key] for r in rewritten[:3]])


def test_oracle_sample_is_what_sample_returns() -> None:
    for dimension, score in (("execution", 2), ("consistency", 3), ("instruction", 4), ("quality", 2)):
        sample = WORLD.sample(dimension, 2, score)
        rng = WORLD.rng(dimension, 2)
        case: EditCase | GenCase
        if dimension in ("execution", "consistency"):
            target = {dimension: score}
            case = build_edit_case(rng, target.get("execution"), target.get("consistency"))
        else:
            case = build_gen_case(rng, score, None) if dimension == "instruction" else build_gen_case(rng, None, score)
        rebuilt = WORLD.oracle_sample(case, dimension, 2)
        assert rebuilt.image.tobytes() == sample.image.tobytes()
        assert (rebuilt.key, rebuilt.text, rebuilt.score, rebuilt.answer, rebuilt.evidence, rebuilt.provenance) == (
            sample.key,
            sample.text,
            sample.score,
            sample.answer,
            sample.evidence,
            sample.provenance,
        )
    with pytest.raises(ValueError, match="not scored on an edit case"):
        WORLD.oracle_sample(_edits(1)[0][0], "quality", 0)


def test_write_pairs_writes_readable_lines_and_images(tmp_path: Path) -> None:
    world = ShapesWorld(size=32, split="val", seed=2)
    edits = [
        json.loads(x) for x in write_pairs(world, "edit", 3, tmp_path / "e", progress=False).read_text().splitlines()
    ]
    for index, line in enumerate(edits):
        assert set(line) == {"id", "instruction", "source", "image", "metadata"} and "." not in line["id"]
        assert line["metadata"] == {
            "shapesworld": {"split": "val", "seed": 2, "size": 32, "index": index, "stream": "edit"}
        }
        case = world.edit_case(index)
        assert line["instruction"] == case.instruction and line["source"] == f"images/{line['id']}_src.png"
        source, image = (Image.open(tmp_path / "e" / line[k]).convert("RGB") for k in ("source", "image"))
        assert source.tobytes() == world.render(case.source).tobytes()
        item = EditItem(line["id"], line["instruction"], source, image, line["metadata"])
        report = ShapesWorldAnnotator(from_pixels=False).describe([item])[0]
        assert isinstance(report, DifferenceReport)  # PNG round trip keeps the metadata route
    gens = [
        json.loads(x) for x in write_pairs(world, "gen", 3, tmp_path / "g", progress=False).read_text().splitlines()
    ]
    for index, line in enumerate(gens):
        assert set(line) == {"id", "prompt", "image", "metadata"} and line["metadata"]["shapesworld"]["stream"] == "gen"
        image = Image.open(tmp_path / "g" / line["image"]).convert("RGB")
        assert image.tobytes() == world.gen_image(world.gen_case(index)).tobytes()
    with pytest.raises(ValueError, match="unknown task"):
        write_pairs(world, "video", 1, tmp_path / "x", progress=False)


def test_cli_writes_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pairs", "--task", "gen", "-n", "2", "--size", "32", "--seed", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [line["metadata"]["shapesworld"]["seed"] for line in lines] == [1, 1]
    assert "wrote 2 gen pairs" in capsys.readouterr().out
    assert main(["pairs", "--task", "edit", "-n", "0", "--out", str(tmp_path)]) == 2
    assert "expected a number >= 1" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["pairs", "--task", "edit", "-n", "1", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err

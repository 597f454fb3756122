"""Reading ShapesWorld's degradations back: severities equal to the ones applied, and quality verdicts from them."""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import ANY

import numpy as np
import pytest
from PIL import Image

from firm.critics.base import JudgeRequest
from firm.critics.parsing import NO_SCORE
from firm.worlds.shapes import ShapesWorld
from firm.worlds.shapes.broken import BrokenReading, ShapeMatch, _decide
from firm.worlds.shapes.degrade import Degradation
from firm.worlds.shapes.flaws import read_flaws, read_quality
from firm.worlds.shapes.gen import GenCase
from firm.worlds.shapes.judge import ShapesWorldJudge
from firm.worlds.shapes.scene import Shape

WORLD = ShapesWorld(size=64, split="test")


def _case(index: int, **severities: int) -> GenCase:
    return replace(WORLD.gen_case(index, quality=5), degradation=Degradation(**severities, seed=100 + index))


@pytest.mark.parametrize("kind", ["washout", "blur", "noise", "blocks", "banding"])
def test_with_the_clean_render_each_pixel_kind_is_read_at_its_severity(kind: str) -> None:
    for severity in (1, 4):
        case = _case(severity, **{kind: severity})
        reading = read_flaws(WORLD.gen_image(case), WORLD.render(case.drawn))
        assert reading.severities == {**dict.fromkeys(reading.severities, 0), kind: severity}, severity


@pytest.mark.parametrize(("kind", "severity"), [("washout", 4), ("banding", 4), ("blur", 3)])
def test_the_scene_is_read_under_strong_degradations(kind: str, severity: int) -> None:
    # Washout and banding move every colour and blur smears them; the pixel flaws are still exact
    # (whether a shape is broken is not always certain under them, see the judge test below).
    case = _case(3, **{kind: severity})
    reading = read_quality(WORLD.gen_image(case))
    assert reading.severities == {**dict.fromkeys(reading.severities, 0), kind: severity}


@pytest.fixture(scope="module")
def judge() -> ShapesWorldJudge:
    return ShapesWorldJudge()


def test_quality_verdicts_equal_the_world_answers_when_valid(judge: ShapesWorldJudge) -> None:
    samples = [WORLD.sample("quality", index) for index in range(8)]
    verdicts = judge.judge([JudgeRequest("quality", s.text, s.image) for s in samples])
    valid = 0
    for index, (sample, verdict) in enumerate(zip(samples, verdicts, strict=True)):
        if verdict.valid:
            valid += 1
            assert verdict.score == sample.score, (index, verdict.reasoning, sample.answer)
            assert verdict.raw == sample.answer  # the oracle's answer word for word
        else:
            assert (verdict.invalid_reason or "").startswith(NO_SCORE)
    assert valid >= 3  # strict: refuses where the damage of some shape is not certain


@pytest.mark.parametrize("severity", [1, 2, 3, 4])
def test_broken_shapes_are_read_at_their_severity_by_template_search(severity: int) -> None:
    # The damage pattern is a function of (kind, shape id, damage), so the right template fits (nearly) exactly.
    case = _case(2 + severity, broken=severity)
    reading = read_quality(WORLD.gen_image(case))
    assert (reading.broken, reading.broken_exact) == (severity, True), reading.broken_reason


def test_the_broken_reading_is_exact_only_when_the_matches_agree_with_break_shapes() -> None:
    def match(damage: float, evidence: float = 100.0) -> ShapeMatch:
        return ShapeMatch(Shape(0, "square", "red", 0.5, 0.5, 0.1, broken=damage), 1.0, evidence)

    assert _decide((match(0.3), match(0.0), match(0.0))) == BrokenReading(1, True, ANY)
    assert _decide((match(0.8), match(0.8), match(0.0))).exact  # severity 3 breaks half the shapes, rounded up
    assert not _decide((match(0.8), match(0.0), match(0.0))).exact
    assert not _decide((match(1.0), match(0.0))).exact  # severity 4 breaks every shape
    assert not _decide((match(0.3), match(0.3))).exact  # severity 1 breaks one
    assert not _decide((match(0.55), match(0.0, evidence=5.0))).exact  # a damage not clearly better than another
    assert _decide((match(0.55), match(0.8))).reason == "shapes read with different damages"


def test_broken_shapes_and_unreadable_images_give_invalid_verdicts(judge: ShapesWorldJudge) -> None:
    broken = _case(1, broken=4)
    blurred = _case(1, broken=2, blur=4)  # the bite's detail is smoothed away
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    requests = [
        JudgeRequest("quality", blurred.prompt, WORLD.gen_image(blurred)),
        JudgeRequest("quality", "a photo", photo),
        JudgeRequest("quality", "a crop", WORLD.gen_image(broken).crop((0, 0, 64, 40))),
        JudgeRequest("quality", broken.prompt, WORLD.gen_image(broken)),
    ]
    verdicts = judge.judge(requests)
    assert [v.valid for v in verdicts] == [False, False, False, True]
    assert all((v.invalid_reason or "").startswith(NO_SCORE) for v in verdicts[:3])
    assert "broken" in (verdicts[0].invalid_reason or "") and "square" in (verdicts[2].invalid_reason or "")
    assert verdicts[3].score == broken.quality == 1
    # the lenient judge scores broken shapes with its best template rather than refusing
    (lenient,) = ShapesWorldJudge(strict=False).judge(requests[:1])
    assert lenient.valid and lenient.score is not None and lenient.score < 5


def test_a_fill_noise_moved_a_few_levels_off_its_palette_colour_is_still_read(judge: ShapesWorldJudge) -> None:
    # Light noise moves a fill's mean a few levels off its palette colour and the reader keeps the colour as seen;
    # within one pixel spread of the palette colour it is that colour, and the broken shape is read exactly.
    score = WORLD.targets("quality", 100)[19]
    sample = WORLD.sample("quality", 19, score)
    assert sample.evidence["degradation"] == {"noise": 1, "broken": 1}
    reading = read_quality(sample.image)
    assert (reading.broken, reading.broken_exact) == (1, True), reading.broken_reason
    (verdict,) = judge.judge([JudgeRequest("quality", sample.text, sample.image)])
    assert verdict.valid and verdict.score == sample.score == 4

"""Generation: requirement checks on scene graphs, cases scored as requested, degradations and their sub-scores."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firm.worlds.shapes.degrade import Degradation, apply_pixels, break_shapes, sample_degradation
from firm.worlds.shapes.gen import build_gen_case
from firm.worlds.shapes.render import render
from firm.worlds.shapes.rubric import Presence
from firm.worlds.shapes.scene import Background, Scene, Shape
from firm.worlds.shapes.spec import GenSpec, Group, Relation, check, presence, prompt_text, requirements, score_scene

SPEC = GenSpec(
    groups=(Group("circle", 2, "red"), Group("square", 1, "blue", "large")),
    relation=Relation(0, 1, "left of"),
    background="cream",
    no_kind="triangle",
)
RED = (Shape(0, "circle", "red", 0.2, 0.3, 0.075), Shape(1, "circle", "red", 0.2, 0.7, 0.075))
SQUARE = Shape(2, "square", "blue", 0.7, 0.5, 0.14)
GOOD = Scene(Background("cream"), (*RED, SQUARE))


def _answers(scene: Scene) -> dict[str, str]:
    return {f"{r.check}{r.group if r.group is not None else ''}": check(r, SPEC, scene) for r in requirements(SPEC)}


def test_plan_is_grouped_in_order() -> None:
    cats = [r.category for r in requirements(SPEC)]
    assert cats == ["main", "main", "attribute", "attribute", "attribute", "composition", "composition", "negative"]
    assert requirements(SPEC)[0].question == "Are there exactly two circles?"
    assert requirements(SPEC)[5].question == "Are the circles to the left of the square?"


def test_checks_on_hand_built_scenes() -> None:
    assert set(_answers(GOOD).values()) == {"yes"}
    assert score_scene(SPEC, GOOD)[0] == 5
    mixed = GOOD.with_shape(Shape(1, "circle", "green", 0.2, 0.7, 0.075))
    assert _answers(mixed)["colour0"] == "no" and score_scene(SPEC, mixed)[0] == 4
    flipped = (
        GOOD.with_shape(SQUARE.moved(0.2, 0.5)).with_shape(RED[0].moved(0.7, 0.3)).with_shape(RED[1].moved(0.7, 0.7))
    )
    assert _answers(flipped)["relation"] == "no"
    no_square = GOOD.without(2)
    answers = _answers(no_square)
    assert answers["count1"] == "no" and answers["colour1"] == "n/a" and answers["relation"] == "n/a"
    assert presence(no_square, SPEC.groups[1]) is Presence.MISSING and score_scene(SPEC, no_square)[0] == 3
    extra = GOOD.with_shape(Shape(3, "circle", "red", 0.2, 0.5, 0.05))
    assert presence(extra, SPEC.groups[0]) is Presence.COUNT_OFF and score_scene(SPEC, extra)[0] == 3
    forbidden = GOOD.with_shape(Shape(3, "triangle", "orange", 0.5, 0.85, 0.05))
    assert _answers(forbidden)["no_kind"] == "no"
    unrelated = Scene(Background("white"), (Shape(0, "star", "pink", 0.5, 0.5, 0.1),))
    assert score_scene(SPEC, unrelated)[0] == 1
    assert score_scene(SPEC, Scene(Background("cream"), unrelated.shapes))[0] == 2  # the background is still right


def test_prompt_names_every_requirement() -> None:
    text = prompt_text(SPEC, random.Random(0))
    for words in (
        "two red circles",
        "a large blue square",
        "cream background",
        "to the left of the square",
        "triangles",
    ):
        assert words in text


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), instruction=st.integers(1, 5))
def test_gen_cases_score_as_requested(seed: int, instruction: int) -> None:
    case = build_gen_case(random.Random(seed), instruction=instruction)
    score, answers = score_scene(case.spec, case.scene)
    assert score == case.instruction == instruction
    assert tuple(answers) == case.answers
    assert (instruction == 5) == all(a != "no" for _, a in answers)
    assert case.quality >= 4  # instruction images are clean or carry one mild flaw


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), quality=st.integers(1, 5))
def test_quality_cases_score_as_requested(seed: int, quality: int) -> None:
    case = build_gen_case(random.Random(seed), quality=quality)
    assert case.quality == min(case.sub_scores) == quality
    assert case.instruction == 5


def test_requested_scores_are_validated() -> None:
    with pytest.raises(ValueError, match="instruction score must be in 1-5"):
        build_gen_case(random.Random(0), instruction=0)


@pytest.mark.parametrize("kind", ["marks", "washout", "blur", "noise", "blocks", "banding"])
def test_each_pixel_degradation_grows_with_severity(kind: str) -> None:
    clean = render(GOOD, 64)
    base = np.asarray(clean, dtype=np.float32)
    errors = [
        np.abs(np.asarray(apply_pixels(clean, Degradation(**{kind: s}, seed=3)), dtype=np.float32) - base).mean()
        for s in range(5)
    ]
    assert errors[0] == 0
    assert all(b > a for a, b in itertools.pairwise(errors)), errors


def test_broken_shapes_and_exact_sub_scores() -> None:
    deg = Degradation(broken=4, blur=2, marks=1)
    assert deg.sub_scores == (4, 3, 1)
    assert all(s.broken == 1.0 for s in break_shapes(GOOD, deg).shapes)
    light = break_shapes(GOOD, Degradation(broken=1, seed=5))
    assert sum(s.broken > 0 for s in light.shapes) == 1
    with pytest.raises(ValueError, match="must be in 0-4"):
        Degradation(noise=5)


@pytest.mark.parametrize("quality", [1, 2, 3, 4, 5])
def test_sampled_degradations_hit_the_quality_exactly(quality: int) -> None:
    rng = random.Random(quality)
    for _ in range(50):
        deg = sample_degradation(rng, quality)
        assert min(deg.sub_scores) == quality

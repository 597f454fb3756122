"""Oracle answers: they parse back to the ground truth, and they name what is right and what is wrong."""

from __future__ import annotations

import json
import random

import pytest

from firm.critics.parsing import parse_verdict
from firm.worlds.shapes.diff import count_unintended
from firm.worlds.shapes.edit import EditCase, build_edit_case
from firm.worlds.shapes.gen import build_gen_case
from firm.worlds.shapes.ops import Op, Recolour, Remove
from firm.worlds.shapes.oracle import (
    CATEGORIES,
    consistency_answer,
    difference_report,
    execution_answer,
)
from firm.worlds.shapes.plan import DEGRADATION_NOUNS, analysis_plan, instruction_answer, plan_text, quality_answer
from firm.worlds.shapes.rubric import Fulfilment as F
from firm.worlds.shapes.rubric import consistency_score, execution_score
from firm.worlds.shapes.scene import Background, Scene, Shape

SCENE = Scene(
    Background("white"),
    (Shape(0, "circle", "red", 0.75, 0.75, 0.075), Shape(1, "square", "blue", 0.3, 0.3, 0.105)),
)


def _case(op: Op, how: F, edited: Scene | None = None) -> EditCase:
    out = edited if edited is not None else op.apply(SCENE, how, random.Random(0))
    assert out is not None
    count = count_unintended(SCENE, out, set(op.targets))
    consistency = consistency_score(count.significant, count.minor, count.different_image)
    return EditCase(SCENE, out, (op,), (how,), "An instruction.", count, execution_score((how,)), consistency)


PAIRS = [(1, 1), (1, 5), (2, 2), (2, 4), (3, 3), (3, 5), (4, 2), (4, 4), (5, 3), (5, 5)]


@pytest.mark.parametrize(("execution", "consistency"), PAIRS)
def test_edit_answers_parse_back_to_the_ground_truth(execution: int, consistency: int) -> None:
    case = build_edit_case(random.Random(execution * 10 + consistency), execution, consistency)
    for dimension, answer, score in (
        ("execution", execution_answer(case), case.execution),
        ("consistency", consistency_answer(case), case.consistency),
    ):
        verdict = parse_verdict(answer, dimension)
        assert verdict.score == score, answer
        assert verdict.reasoning


def test_execution_reasoning_names_what_went_wrong() -> None:
    op = Recolour(0, "the red circle", "purple")
    wrong = SCENE.with_shape(Shape(0, "circle", "green", 0.75, 0.75, 0.075))
    text = json.loads(execution_answer(_case(op, F.WRONG, wrong)))["reasoning"]
    assert "the red circle changed colour, but to green instead of purple" in text.lower()
    assert "significant requested element is missing or wrong" in text
    text = json.loads(execution_answer(_case(op, F.FULL)))["reasoning"]
    assert "is now purple, as asked" in text
    text = json.loads(execution_answer(_case(Remove(0, "the red circle"), F.NONE)))["reasoning"]
    assert "still there; it was not removed" in text


def test_consistency_reasoning_lists_each_counted_change_and_the_excused_ones() -> None:
    op = Remove(0, "the red circle")
    removed = SCENE.without(0)
    moved = removed.with_shape(Shape(1, "square", "blue", 0.7, 0.7, 0.105))
    case = _case(op, F.FULL, moved)
    text = json.loads(consistency_answer(case))["reasoning"]
    assert "Unintended significant change: the blue square at the top left moved to the bottom right." in text
    assert "background uncovered by the requested change" in text
    assert json.loads(consistency_answer(case))["score"] == [4]
    clean = json.loads(consistency_answer(_case(op, F.FULL, removed)))
    assert clean["score"] == [5] and "unchanged" in clean["reasoning"]


def test_difference_report_describes_every_change_and_nothing_else() -> None:
    assert difference_report(SCENE, SCENE) == {"obvious": [], "detailed": {k: [] for k in CATEGORIES}}
    out = SCENE.with_shape(Shape(0, "circle", "purple", 0.75, 0.75, 0.075)).with_shape(
        Shape(1, "square", "blue", 0.33, 0.3, 0.105)
    )
    report = difference_report(SCENE, out)
    assert report["obvious"] == [
        "The red circle at the bottom right: in the first image, a small red circle at the bottom right; "
        "in the second image, a small purple circle at the bottom right."
    ]
    detailed = report["detailed"]
    assert isinstance(detailed, dict)
    assert detailed["colour"] == ["the red circle at the bottom right changed from red to purple"]
    assert detailed["position and layout"] == ["the blue square at the top left shifted slightly"]  # minor: detail only
    assert detailed["quantity"] == [] and detailed["overall tone"] == []


@pytest.mark.parametrize("instruction", [1, 2, 3, 4, 5])
def test_instruction_answers_parse_back_and_follow_the_plan(instruction: int) -> None:
    case = build_gen_case(random.Random(instruction), instruction=instruction)
    answer = instruction_answer(case)
    verdict = parse_verdict(answer, "instruction")
    assert verdict.score == instruction
    plan = analysis_plan(case.answers)
    assert [item["id"] for item in plan] == list(range(1, len(plan) + 1))
    lines = answer.splitlines()
    for item in plan:
        word = {"yes": "Yes", "no": "No", "n/a": "Cannot check"}[item["answer"]]
        assert f"{item['id']}. {item['question']} {word}:" in lines[item["id"] - 1]
    assert plan_text(plan).startswith("Main subjects/elements:\n1. ")


@pytest.mark.parametrize("quality", [1, 3, 5])
def test_quality_answers_carry_the_three_sub_scores(quality: int) -> None:
    case = build_gen_case(random.Random(quality), quality=quality)
    verdict = parse_verdict(quality_answer(case), "quality")
    assert verdict.score == quality and verdict.sub_scores == case.sub_scores
    reasoning = json.loads(quality_answer(case))["reasoning"]
    for kind in case.degradation.active:
        assert DEGRADATION_NOUNS[kind] in reasoning
    assert reasoning.startswith(f"Aesthetics {case.sub_scores[0]}:")

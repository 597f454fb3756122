"""Edit operations carried out to every fulfilment, and edit cases whose scores follow the rubric exactly."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firm.worlds.shapes.compare import judge_edit
from firm.worlds.shapes.diff import count_unintended, diff
from firm.worlds.shapes.edit import add_unintended, build_edit_case
from firm.worlds.shapes.ops import Add, Move, Op, Recolour, Remove, Resize, Swap, join_clauses
from firm.worlds.shapes.refer import in_region
from firm.worlds.shapes.rubric import Fulfilment as F
from firm.worlds.shapes.rubric import consistency_score, execution_score
from firm.worlds.shapes.scene import COLOURS, Background, Scene, Shape

SCENE = Scene(
    Background("white"),
    (
        Shape(0, "circle", "red", 0.75, 0.75, 0.075),
        Shape(1, "square", "blue", 0.45, 0.45, 0.105),
        Shape(2, "triangle", "green", 0.6, 0.15, 0.075),
    ),
)
OPS: list[Op] = [
    Add(Shape(3, "star", "orange", 0.2, 0.8, 0.075), "in the bottom left corner", True, (0.8, 0.2)),
    Remove(0, "the red circle"),
    Recolour(0, "the red circle", "purple"),
    Move(2, "the green triangle", "left", (0.2, 0.15)),
    Resize(0, "the red circle", 2.0),
    Swap(0, 2, "the red circle", "the green triangle"),
]
CASES = [(op, how) for op in OPS for how in op.fulfilments]


def _apply(op: Op, how: F) -> Scene:
    for seed in range(20):  # a few variants draw a random spot; some seeds find none free
        out = op.apply(SCENE, how, random.Random(seed))
        if out is not None:
            return out
    raise AssertionError(f"{op.name} {how.value} never fits the test scene")


def _dist(a: Shape, b: Shape | tuple[float, float]) -> float:
    bx, by = (b.x, b.y) if isinstance(b, Shape) else b
    return math.hypot(a.x - bx, a.y - by)


@pytest.mark.parametrize(("op", "how"), CASES, ids=[f"{op.name}-{how.value}" for op, how in CASES])
def test_only_the_targets_change(op: Op, how: F) -> None:
    out = _apply(op, how)
    assert out.background == SCENE.background
    assert {c.subject for c in diff(SCENE, out)} <= set(op.targets)
    assert (out == SCENE) == (how is F.NONE)


@pytest.mark.parametrize("how", Add.fulfilments)
def test_add(how: F) -> None:
    op = OPS[0]
    assert isinstance(op, Add)
    got = {s.id: s for s in _apply(op, how).shapes}.get(3)
    want = op.shape
    if how is F.NONE:
        assert got is None
        return
    assert got is not None
    if how is F.FULL:
        assert got == want
    elif how is F.SUBTLE:  # the same colour name, a near shade: one very subtle detail
        assert got.colour == want.colour and got.rgb != COLOURS[want.colour] and got.kind == want.kind
    elif how is F.WRONG:  # exactly one significant attribute wrong; a wrong place is outside the requested corner
        wrong = [got.colour != want.colour, got.kind != want.kind, not in_region("bottom left", got.x, got.y)]
        assert sum(wrong) == 1
    else:
        assert how is F.VAGUE and got.r < want.r / 2 and got.alpha < 0.5


def test_remove() -> None:
    op = OPS[1]
    assert 0 not in _apply(op, F.FULL).ids()
    assert _apply(op, F.SUBTLE).get(0).alpha <= 0.15
    assert _apply(op, F.WRONG).get(0).erase == 0.5
    assert 0.5 <= _apply(op, F.VAGUE).get(0).alpha < 1


def test_recolour() -> None:
    full, subtle = _apply(OPS[2], F.FULL).get(0), _apply(OPS[2], F.SUBTLE).get(0)
    assert full.colour == "purple" and full.rgb == COLOURS["purple"]
    assert subtle.colour == "purple" and subtle.rgb != COLOURS["purple"]
    assert _apply(OPS[2], F.WRONG).get(0).colour not in ("red", "purple")
    vague = _apply(OPS[2], F.VAGUE).get(0)
    assert vague.colour == "red" and vague.rgb != COLOURS["red"]


def test_move() -> None:
    op = OPS[3]
    assert isinstance(op, Move)
    start = SCENE.get(2)
    assert (_apply(op, F.FULL).get(2).x, _apply(op, F.FULL).get(2).y) == op.dest
    subtle = _apply(op, F.SUBTLE).get(2)
    assert 0 < _dist(subtle, op.dest) <= 0.1 and subtle.x < 1 / 3
    wrong = _apply(op, F.WRONG).get(2)
    assert not in_region("left", wrong.x, wrong.y) and _dist(wrong, start) >= 0.25
    vague = _apply(op, F.VAGUE).get(2)
    assert _dist(vague, start) < 0.1 and _dist(vague, op.dest) < _dist(start, op.dest)
    assert _dist(_apply(op, F.OPPOSITE).get(2), op.dest) > _dist(start, op.dest)


def test_resize() -> None:
    r = SCENE.get(0).r
    op = OPS[4]
    assert _apply(op, F.FULL).get(0).r == pytest.approx(2 * r)
    assert 1.5 * r < _apply(op, F.SUBTLE).get(0).r < 2 * r
    wrong = _apply(op, F.WRONG).get(0)
    assert wrong.r == r and wrong.aspect == 2.0
    assert r < _apply(op, F.VAGUE).get(0).r < 1.2 * r
    assert _apply(op, F.OPPOSITE).get(0).r < r


def test_swap() -> None:
    a, b = SCENE.get(0), SCENE.get(2)
    op = OPS[5]
    full = _apply(op, F.FULL)
    assert (full.get(0).x, full.get(0).y, full.get(2).x, full.get(2).y) == (b.x, b.y, a.x, a.y)
    subtle = _apply(op, F.SUBTLE)
    assert 0 < _dist(subtle.get(0), b) <= 0.1 and _dist(subtle.get(2), a) == 0
    wrong = _apply(op, F.WRONG)
    assert _dist(wrong.get(0), b) == 0 and _dist(wrong.get(2), a) >= 0.25
    vague = _apply(op, F.VAGUE)
    assert 0 < _dist(vague.get(0), a) < 0.1 and 0 < _dist(vague.get(2), b) < 0.1


def test_unintended_changes_are_counted_as_planned() -> None:
    rng = random.Random(0)
    for significant, minor in [(0, 0), (1, 0), (0, 2), (2, 1), (4, 0), (0, 5)]:
        for _ in range(50):
            out = add_unintended(SCENE, set(), significant, minor, rng)
            if out is not None:
                break
        assert out is not None
        count = count_unintended(SCENE, out, set())
        assert (count.significant, count.minor) == (significant, minor)


def test_protected_shapes_never_change_and_removal_reveals_nothing_countable() -> None:
    rng = random.Random(1)
    removed = SCENE.without(1)
    out = add_unintended(removed, {0}, 1, 1, rng)
    assert out is not None and out.get(0) == SCENE.get(0)
    # the requested removal itself is not an unintended change, and what it uncovers is not in the scene graph
    assert count_unintended(SCENE, removed, {1}).counted == ()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), execution=st.integers(1, 5), consistency=st.integers(1, 5))
def test_edit_cases_score_as_requested(seed: int, execution: int, consistency: int) -> None:
    if consistency == 1 and execution != 1:
        with pytest.raises(ValueError, match="different image"):
            build_edit_case(random.Random(seed), execution, consistency)
        return
    case = build_edit_case(random.Random(seed), execution, consistency)
    assert (case.execution, case.consistency) == (execution, consistency)
    # scores are functions of the recorded outcomes and of a fresh diff of the two scene graphs
    assert execution_score(case.outcomes) == execution
    count = count_unintended(case.source, case.edited, case.requested)
    assert consistency_score(count.significant, count.minor, count.different_image) == consistency
    assert case.instruction[0].isupper() and case.instruction.endswith(".")
    assert case.difficulty == ("easy" if len(case.ops) == 1 else "hard")
    # and the two scene graphs, compared without ids the way the judge compares readings, say the same
    seen = judge_edit(case.source, case.edited, case.ops, case.instruction)
    assert (seen.execution, seen.consistency) == (execution, consistency)


def test_no_label_contradicts_what_the_two_scenes_show() -> None:
    # Two look-alikes swapped leave the picture unchanged; an unintended new shape in the colour and place of a
    # requested one that was not added looks like that add done wrongly. Such draws are redrawn, never labelled
    # (seed 1091 once swapped two identical orange squares and scored it 5; seed 1987 removed two shapes and added
    # look-alikes beside them, which reads as two shapes moved).
    for seed in range(2000):
        case = build_edit_case(random.Random(seed))
        seen = judge_edit(case.source, case.edited, case.ops, case.instruction)
        assert (seen.execution, seen.consistency) == (case.execution, case.consistency), seed


def test_same_seed_same_case() -> None:
    a, b = build_edit_case(random.Random(7), 3, 4), build_edit_case(random.Random(7), 3, 4)
    assert (a.source, a.edited, a.instruction) == (b.source, b.edited, b.instruction)


def test_compound_instructions_join_clauses() -> None:
    rng = random.Random(0)
    text = join_clauses(["make the red circle blue", "remove the square", "move the star to the top"], rng)
    assert text.startswith("Make the red circle blue, remove the square") and text.endswith("move the star to the top.")

"""The rubric functions against PAPER.md section 2, case by case and over exhaustive small grids."""

from __future__ import annotations

import itertools

import pytest

from firm.worlds.shapes.rubric import (
    Fulfilment,
    Presence,
    aspect_score,
    change_plans,
    consistency_score,
    execution_score,
    instruction_score,
    outcome_plans,
    quality_score,
)

F = Fulfilment
FULL, SUBTLE, WRONG, VAGUE, NONE, OPP = F.FULL, F.SUBTLE, F.WRONG, F.VAGUE, F.NONE, F.OPPOSITE
RANK = {FULL: 0, SUBTLE: 1, WRONG: 2, VAGUE: 3, NONE: 4, OPP: 4}


@pytest.mark.parametrize(
    ("outcomes", "score"),
    [
        ((FULL,), 5),
        ((SUBTLE,), 4),
        ((WRONG,), 3),
        ((VAGUE,), 2),
        ((NONE,), 1),
        ((OPP,), 1),
        ((FULL, FULL, FULL), 5),
        ((FULL, SUBTLE), 4),
        ((SUBTLE, SUBTLE), 3),  # two subtle misses are more than "one very subtle detail"
        ((FULL, NONE), 3),  # one requested element missing, main intent there
        ((FULL, VAGUE, FULL), 3),
        ((SUBTLE, WRONG), 3),
        ((FULL, NONE, NONE), 2),  # most of a compound missing
        ((WRONG, VAGUE), 2),
        ((NONE, OPP), 1),
        ((NONE, NONE, NONE), 1),
    ],
)
def test_execution_cases(outcomes: tuple[Fulfilment, ...], score: int) -> None:
    assert execution_score(outcomes) == score


def test_execution_grid_is_monotone_and_banded() -> None:
    """Over every instruction of 1-3 operations: making one operation better never lowers the score, and the
    bands hold: 5 only when all FULL, 1 only when nothing was done."""
    for n in (1, 2, 3):
        for plan in itertools.product(list(F), repeat=n):
            s = execution_score(plan)
            assert (s == 5) == all(o is FULL for o in plan)
            assert (s == 1) == all(o in (NONE, OPP) for o in plan)
            assert (s == 4) == (sorted(plan, key=RANK.get) == [FULL] * (n - 1) + [SUBTLE])
            for i, better in itertools.product(range(n), list(F)):
                if RANK[better] < RANK[plan[i]]:
                    improved = (*plan[:i], better, *plan[i + 1 :])
                    assert execution_score(improved) >= s, (plan, improved)


def test_execution_needs_an_operation() -> None:
    with pytest.raises(ValueError, match="at least one operation"):
        execution_score(())


@pytest.mark.parametrize(
    ("significant", "minor", "score"),
    [
        (0, 0, 5),
        (1, 0, 4),
        (0, 1, 4),
        (0, 2, 4),
        (1, 2, 4),
        (2, 0, 3),
        (3, 0, 3),
        (0, 3, 3),
        (1, 3, 3),  # three minor changes alone make it a 3
        (3, 4, 3),
        (4, 0, 2),
        (0, 5, 2),
        (2, 5, 2),
        (9, 9, 2),
    ],
)
def test_consistency_thresholds(significant: int, minor: int, score: int) -> None:
    assert consistency_score(significant, minor) == score


def test_consistency_grid_is_monotone() -> None:
    for s, m in itertools.product(range(8), range(10)):
        assert consistency_score(s + 1, m) <= consistency_score(s, m)
        assert consistency_score(s, m + 1) <= consistency_score(s, m)
        assert consistency_score(s, m, different_image=True) == 1


def test_consistency_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        consistency_score(-1, 0)


E, C, M = Presence.EXACT, Presence.COUNT_OFF, Presence.MISSING


@pytest.mark.parametrize(
    ("main", "missed", "style", "score"),
    [
        ((E,), 0, 0, 5),
        ((E, E), 1, 0, 4),
        ((E, E), 2, 3, 4),
        ((E,), 3, 0, 3),
        ((C, E), 0, 0, 3),  # a subject with the wrong count
        ((E, M), 0, 0, 3),  # half of the subjects missing is not "most"
        ((E, M, E), 0, 1, 3),
        ((M, M, E), 0, 0, 2),
        ((M,), 0, 1, 2),  # subject missing, but the requested background is there
        ((M, M), 0, 0, 1),  # nothing of the prompt
        ((M,), 4, 0, 1),
    ],
)
def test_instruction_cases(main: tuple[Presence, ...], missed: int, style: int, score: int) -> None:
    assert instruction_score(main, missed, style) == score


def test_instruction_grid_is_monotone_in_missed_details() -> None:
    for main in itertools.product(list(Presence), repeat=3):
        for missed, style in itertools.product(range(6), range(3)):
            assert instruction_score(main, missed + 1, style) <= instruction_score(main, missed, style)


def test_quality_is_the_min_of_aspects_scored_from_worst_severity() -> None:
    assert aspect_score([]) == 5
    assert aspect_score([0, 3, 1]) == 2
    assert quality_score((aspect_score([1]), aspect_score([0, 0]), aspect_score([4]))) == 1
    with pytest.raises(ValueError, match="severities"):
        aspect_score([5])
    with pytest.raises(ValueError, match="three sub-scores"):
        quality_score((3, 3))


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_plans_are_exactly_the_inputs_that_score(score: int) -> None:
    allowed = [set(F), {FULL, SUBTLE, WRONG, VAGUE, NONE}]
    plans = outcome_plans(2, score, allowed)
    assert plans and all(execution_score(p) == score for p in plans)
    expected = sum(execution_score(p) == score for p in itertools.product(list(F), [FULL, SUBTLE, WRONG, VAGUE, NONE]))
    assert len(plans) == expected
    if score > 1:
        pairs = change_plans(score)
        assert pairs and all(consistency_score(s, m) == score for s, m in pairs)

"""FIRM's 1-5 rubrics (PAPER.md section 2) as plain functions of what ShapesWorld knows exactly.

Every ShapesWorld score comes from one of these four functions; the generators only *choose* inputs that give a
wanted score, they never set a score themselves.

- execution: from the fulfilment of each requested operation;
- consistency: from the numbers of significant and minor unintended changes;
- instruction following: from the status of each main subject and the number of missed details;
- quality: the min of three sub-scores, each 5 minus the worst degradation severity of its aspect.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from enum import Enum
from functools import lru_cache


class Fulfilment(str, Enum):
    """How far one requested operation was carried out.

    FULL: exactly as asked. SUBTLE: all of it, but one very subtle detail off (a near shade, a little short).
    WRONG: the intent shows, but a significant requested element is missing or wrong.
    VAGUE: a token attempt (a faint tint, a nudge). NONE: not done. OPPOSITE: the reverse was done.
    """

    FULL = "full"
    SUBTLE = "subtle"
    WRONG = "wrong"
    VAGUE = "vague"
    NONE = "none"
    OPPOSITE = "opposite"


_NOT_DONE = (Fulfilment.NONE, Fulfilment.OPPOSITE)
_BAD = (Fulfilment.WRONG, Fulfilment.VAGUE, Fulfilment.NONE, Fulfilment.OPPOSITE)


def execution_score(outcomes: Sequence[Fulfilment]) -> int:
    """Execution (edit), from the fulfilment of each operation of the instruction.

    - 5: every operation done exactly;
    - 4: all done, exactly one with a very subtle detail off;
    - 3: the main intent is there, but one significant element is missing or wrong: a single operation done WRONG,
      or, in a compound instruction, one operation not properly done while the others are (also: two or more subtle
      misses, which is more than "one very subtle detail");
    - 2: barely: a single operation only vaguely attempted, or most operations of a compound missing or wrong;
    - 1: nothing requested happened (every operation NONE), or the opposite was done.

    Raises:
        ValueError: for an empty instruction.
    """
    if not outcomes:
        raise ValueError("an instruction has at least one operation")
    if all(o in _NOT_DONE for o in outcomes):
        return 1
    bad = sum(o in _BAD for o in outcomes)
    subtle = sum(o is Fulfilment.SUBTLE for o in outcomes)
    if bad == 0:
        return 5 if subtle == 0 else 4 if subtle == 1 else 3
    if bad == 1 and (len(outcomes) > 1 or outcomes[0] is Fulfilment.WRONG):
        return 3
    return 2


def consistency_score(significant: int, minor: int, different_image: bool = False) -> int:
    """Consistency (edit), from the counts of unintended changes (excused effects are not counted at all).

    - 5: only the requested changes;
    - 4: one significant and/or one or two minor;
    - 3: two or three significant and/or three or four minor;
    - 2: four or more significant and/or five or more minor;
    - 1: almost a different image (the background and every object the instruction did not touch changed).

    The significant and the minor count each give a level and the worse one wins: one significant plus three minor
    is a 3, because three minor changes alone are.

    Raises:
        ValueError: for negative counts.
    """
    if significant < 0 or minor < 0:
        raise ValueError(f"change counts cannot be negative, got {significant} significant and {minor} minor")
    if different_image:
        return 1
    by_significant = 5 if significant == 0 else 4 if significant == 1 else 3 if significant <= 3 else 2
    by_minor = 5 if minor == 0 else 4 if minor <= 2 else 3 if minor <= 4 else 2
    return min(by_significant, by_minor)


class Presence(str, Enum):
    """How a main subject of a prompt ("two red circles") shows in an image: its kind and count."""

    EXACT = "exact"  # the right kind, the right number
    COUNT_OFF = "count_off"  # the right kind, the wrong number
    MISSING = "missing"  # absent, or drawn as another kind


def instruction_score(main: Sequence[Presence], details_missed: int, style_met: int) -> int:
    """Instruction following (gen), from the main subjects and the details (attributes, layout, style, negatives).

    - 5: every requirement met;
    - 4: every main subject exact, one or two details missed;
    - 3: the main subjects are present but several requirements are missed: three or more details, a subject with
      the wrong count, or a minority of the subjects missing;
    - 2: most main subjects (more than half, or all) missing or wrong;
    - 1: unrelated to the prompt: no main subject and none of the requested style either.

    Details of a missing subject (its colour, its place) cannot be checked and are not counted as missed.

    Args:
        main: the presence of each main subject.
        details_missed: how many checkable non-main requirements the image fails.
        style_met: how many style/composition requirements (background, texture, rendering style) the image meets.

    Raises:
        ValueError: for a prompt without a main subject, or negative counts.
    """
    if not main:
        raise ValueError("a prompt has at least one main subject")
    if details_missed < 0 or style_met < 0:
        raise ValueError("requirement counts cannot be negative")
    missing = sum(p is Presence.MISSING for p in main)
    if missing == len(main) and style_met == 0:
        return 1
    if 2 * missing > len(main):
        return 2
    if missing or any(p is Presence.COUNT_OFF for p in main) or details_missed >= 3:
        return 3
    return 4 if details_missed else 5


#: Highest degradation severity; an aspect's sub-score is 5 minus its worst severity.
MAX_SEVERITY = 4


def aspect_score(severities: Iterable[int]) -> int:
    """A quality sub-score: 5 minus the worst severity (0 none ... 4 severe) among the aspect's degradations.

    Raises:
        ValueError: for a severity outside 0-4.
    """
    values = list(severities)
    worst = max(values, default=0)
    if not 0 <= worst <= MAX_SEVERITY or min(values, default=0) < 0:
        raise ValueError(f"severities must be in 0-{MAX_SEVERITY}")
    return 5 - worst


def quality_score(sub_scores: Sequence[int]) -> int:
    """Quality (gen): the min of the aesthetics, technical and structure sub-scores."""
    if len(sub_scores) != 3:
        raise ValueError(f"quality has three sub-scores, got {len(sub_scores)}")
    return min(sub_scores)


def outcome_plans(n_ops: int, score: int, allowed: Sequence[Iterable[Fulfilment]]) -> list[tuple[Fulfilment, ...]]:
    """Every assignment of fulfilments to ``n_ops`` operations (op i from ``allowed[i]``) that scores ``score``.

    Derived from :func:`execution_score` itself, so what generators aim for cannot drift from the rubric.
    """
    order = list(Fulfilment)
    return list(_plans(score, tuple(tuple(sorted(a, key=order.index)) for a in allowed[:n_ops])))


@lru_cache(maxsize=512)
def _plans(score: int, choices: tuple[tuple[Fulfilment, ...], ...]) -> tuple[tuple[Fulfilment, ...], ...]:
    return tuple(plan for plan in itertools.product(*choices) if execution_score(plan) == score)


def change_plans(score: int, max_significant: int = 5, max_minor: int = 6) -> list[tuple[int, int]]:
    """Every (significant, minor) count pair within the given bounds that scores ``score`` (2-5; 1 is a new image)."""
    return [
        (s, m) for s in range(max_significant + 1) for m in range(max_minor + 1) if consistency_score(s, m) == score
    ]

"""Score histograms: how many samples of each score (1-5) a data set gets, and in which order."""

from __future__ import annotations

import random
from collections.abc import Sequence

from firm.curation.balance import SCORES, check_histogram, parse_histogram

__all__ = ["SCORES", "UNIFORM", "allocate", "check_histogram", "parse_histogram", "schedule"]

UNIFORM = (1.0, 1.0, 1.0, 1.0, 1.0)


def allocate(n: int, weights: Sequence[float] = UNIFORM) -> dict[int, int]:
    """How many of ``n`` samples get each score: ``n * w / sum(w)``, rounded by largest remainder.

    The counts always sum to ``n`` and each is within one of its exact share; when the shares are whole numbers
    (``n=2000`` with a uniform histogram: 400 each) they are met exactly. Ties go to the lower score.

    Raises:
        ValueError: for a negative ``n`` or bad weights.
    """
    if n < 0:
        raise ValueError(f"sample count must be >= 0, got {n}")
    check_histogram(weights)
    total = sum(weights)
    shares = [n * w / total for w in weights]
    counts = [int(s) for s in shares]
    by_remainder = sorted(range(len(SCORES)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return dict(zip(SCORES, counts, strict=True))


def schedule(n: int, weights: Sequence[float], seed: int) -> list[int]:
    """The target score of each of ``n`` samples: exactly :func:`allocate`'s counts, in a seeded random order."""
    targets = [score for score, count in allocate(n, weights).items() for _ in range(count)]
    random.Random(seed).shuffle(targets)
    return targets

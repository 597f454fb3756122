"""Score histograms and rebalancing: how many samples of each score a curated set has, and which to keep.

Natural data is short of low scores (PAPER.md section 1); rewriting instructions adds them, and rebalancing then
drops samples of over-represented scores so each dimension follows a target histogram as closely as its counts allow.
Which samples are dropped is decided by a seeded hash of their keys, so the same labels always give the same set.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from firm.critics.base import FIRM_RANGE

__all__ = ["SCORES", "check_histogram", "histogram", "parse_histogram", "rebalance", "selected_fraction"]

log = logging.getLogger(__name__)

SCORES = tuple(range(FIRM_RANGE.low, FIRM_RANGE.high + 1))


def parse_histogram(text: str) -> tuple[float, ...]:
    """Weights for scores 1..5 from ``"1,1,1,1,1"`` (uniform) or ``"2,2,1,1,1"``.

    Raises:
        ValueError: unless there are five non-negative numbers with a positive sum.
    """
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"a histogram is five comma-separated weights for scores 1-5, got {text!r}") from None
    check_histogram(weights)
    return weights


def check_histogram(weights: Sequence[float]) -> None:
    """Raise ``ValueError`` unless ``weights`` are five non-negative numbers with a positive sum."""
    if len(weights) != len(SCORES) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"a histogram needs five non-negative weights (scores 1-5) with a positive sum, got {list(weights)}"
        )


def histogram(scores: Iterable[int]) -> dict[str, int]:
    """Counts of each score 1-5 (JSON-ready: string keys, every score present)."""
    counts = Counter(scores)
    return {str(s): counts.get(s, 0) for s in SCORES}


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()


def rebalance(samples: Mapping[str, int], weights: Sequence[float], seed: int = 0) -> set[str]:
    """The samples to keep so that their scores follow ``weights`` as closely as possible, keeping the most.

    Scores with a positive weight but no samples at all cannot be met and are left out of the target (with a
    warning), so that one missing score does not empty the set. Over the others, the kept total ``N`` is the largest
    for which every score ``s`` has ``N * w_s / sum(w)`` samples available; each score then keeps
    ``floor(N * w_s / sum(w))`` of its samples (a score with weight 0 keeps none), chosen by a seeded hash of their
    keys.

    Args:
        samples: sample key -> score.
        weights: target weights of scores 1-5 (see :func:`parse_histogram`).
        seed: decides which samples of a score are kept.

    Returns:
        The keys kept.
    """
    by_score: dict[int, list[str]] = {s: [] for s in SCORES}
    for key, score in samples.items():
        by_score[score].append(key)
    missing = [s for s, w in zip(SCORES, weights, strict=True) if w > 0 and not by_score[s]]
    if missing and samples:
        log.warning("no samples of score %s to rebalance to; the target leaves them out", missing)
    usable = {s: (0.0 if s in missing else w) for s, w in zip(SCORES, weights, strict=True)}
    total = sum(usable.values())
    if total <= 0:
        return set()
    shares = {s: w / total for s, w in usable.items()}
    kept_total = min((len(by_score[s]) / share for s, share in shares.items() if share > 0), default=0.0)
    keep: set[str] = set()
    for s, share in shares.items():
        n = min(int(kept_total * share + 1e-9), len(by_score[s]))
        keep.update(sorted(by_score[s], key=lambda k: _rank(seed, k))[:n])
    return keep


def selected_fraction(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``key`` falls in a seeded ``fraction`` of all keys (the same answer on every run)."""
    if fraction <= 0:
        return False
    value = int.from_bytes(_rank(seed, f"select/{key}"), "big") / 2**64
    return value < fraction

"""Reward formulas as plain functions on score tensors (PAPER.md section 4).

Inputs are raw critic scores on their scale (FIRM's 1-5 by default) with NaN marking an invalid verdict; outputs
are rewards in [0, 1] with NaN wherever an input was invalid, so that an unreadable critic answer can never pass for
a low (or high) score. Shapes: ``[B]`` everywhere (any shape works, elementwise).
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalise(scores: Tensor, low: float = 1.0, high: float = 5.0) -> Tensor:
    """Map raw scores from ``[low, high]`` to ``[0, 1]``; NaN stays NaN.

    Raises:
        ValueError: if a non-NaN score lies outside ``[low, high]`` (a caller passed scores on another scale).
    """
    scores = scores.to(torch.float32)
    finite = scores[~torch.isnan(scores)]
    if finite.numel() and (finite.min() < low or finite.max() > high):
        raise ValueError(
            f"scores must lie in [{low:g}, {high:g}] or be NaN (invalid); got values from {finite.min().item():g} "
            f"to {finite.max().item():g}. Pass the critic's score range if it is not 1-5."
        )
    return (scores - low) / (high - low)


def base_and_bonus(base: Tensor, bonus: Tensor, w1: float, w2: float) -> Tensor:
    """``base * (w1 + w2 * bonus) / (w1 + w2)`` on normalised scores, clamped to [0, 1].

    The base objective is a precondition (no base, no reward); the bonus scales the reward between
    ``w1 / (w1 + w2)`` and 1. Dividing by ``w1 + w2`` keeps any weights in [0, 1] (a no-op for FIRM's defaults).

    Raises:
        ValueError: for negative weights or weights summing to zero.
    """
    if w1 < 0 or w2 < 0 or w1 + w2 <= 0:
        raise ValueError(f"base-and-bonus weights must be >= 0 with a positive sum, got w1={w1} w2={w2}")
    return (base * (w1 + w2 * bonus) / (w1 + w2)).clamp(0.0, 1.0)


def cme(execution: Tensor, consistency: Tensor, w1: float = 0.6, w2: float = 0.4) -> Tensor:
    """Consistency-Modulated Execution, ``R = E * (0.6 + 0.4 * C)`` on normalised 1-5 scores.

    Example:
        >>> cme(torch.tensor([5.0, 1.0, 5.0, float("nan")]), torch.tensor([1.0, 5.0, 5.0, 3.0]))
        tensor([0.6000, 0.0000, 1.0000,    nan])
    """
    return base_and_bonus(normalise(execution), normalise(consistency), w1, w2)


def qma(instruction: Tensor, quality: Tensor, w1: float = 0.4, w2: float = 0.6) -> Tensor:
    """Quality-Modulated Alignment, ``R = I * (0.4 + 0.6 * Q)`` on normalised 1-5 scores."""
    return base_and_bonus(normalise(instruction), normalise(quality), w1, w2)


def weighted_sum(normalised: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``sum_k w_k * s_k / sum_k w_k`` over normalised scores; NaN if any used score is NaN.

    Raises:
        ValueError: for an empty or non-positive weight set, or a weight for a missing dimension.
    """
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"weighted sum needs non-negative weights with a positive sum, got {weights}")
    missing = sorted(set(weights) - set(normalised))
    if missing:
        raise ValueError(f"weighted sum has weights for {missing} but no scores for them")
    total = sum(weights[k] * normalised[k] for k in weights)
    assert isinstance(total, Tensor)
    return total / sum(weights.values())

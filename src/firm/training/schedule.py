"""Learning-rate schedules as plain functions of the optimizer step, for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine", "warmup_steps"]


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length in optimizer steps: ``ceil(warmup_ratio * total_steps)``.

    Raises:
        ValueError: for a ratio outside [0, 1) or a negative total.
    """
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if total_steps < 0:
        raise ValueError(f"total_steps must be 0 or more, got {total_steps}")
    return math.ceil(warmup_ratio * total_steps)


def warmup_cosine(step: int, *, total_steps: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warmup from ``1 / (warmup + 1)`` to 1 over the first ``warmup`` steps (so the first step already learns),
    then half a cosine from 1 down to ``min_ratio`` at ``total_steps``; ``min_ratio`` after that.

    Example:
        >>> [round(warmup_cosine(s, total_steps=10, warmup=1), 3) for s in (0, 1, 10)]
        [0.5, 1.0, 0.0]
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    decay_steps = max(total_steps - warmup, 1)
    progress = min((step - warmup) / decay_steps, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

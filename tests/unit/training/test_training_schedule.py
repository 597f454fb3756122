"""Warmup + cosine learning-rate multipliers."""

from __future__ import annotations

import itertools
import math

import pytest

from firm.training.schedule import warmup_cosine, warmup_steps


def test_warmup_rises_linearly_then_cosine_falls_to_the_floor() -> None:
    values = [warmup_cosine(s, total_steps=12, warmup=3, min_ratio=0.1) for s in range(13)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # Halfway through the decay (step 3 + 9 / 2) the cosine is at the midpoint between 1 and the floor.
    assert warmup_cosine(7.5, total_steps=12, warmup=3, min_ratio=0.1) == pytest.approx(0.55)
    assert values[12] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[3:]))
    assert warmup_cosine(50, total_steps=12, warmup=3, min_ratio=0.1) == pytest.approx(0.1)


def test_no_warmup_starts_at_the_peak() -> None:
    assert warmup_cosine(0, total_steps=10, warmup=0) == 1.0
    assert warmup_cosine(5, total_steps=10, warmup=0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_warmup_steps_is_the_ceiling_of_the_ratio() -> None:
    assert warmup_steps(2337, 0.1) == 234  # FIRM-Edit: 370K samples / 160 per step, warmup ratio 0.1
    assert warmup_steps(10, 0.0) == 0
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_steps(10, 1.0)

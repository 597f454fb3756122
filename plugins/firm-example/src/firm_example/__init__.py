"""An example firm plugin: a reward strategy that lives outside firm and registers through an entry point."""

from __future__ import annotations

import torch

from firm.critics import task_of
from firm.rewards import RewardInput, RewardOutput, RewardStrategy


class GeometricMean(RewardStrategy):
    """``R = sqrt(a * b)`` of two normalised dimensions; NaN where either verdict was invalid.

    Args:
        first: the first dimension (default execution).
        second: the second dimension (default consistency).
    """

    def __init__(self, first: str = "execution", second: str = "consistency") -> None:
        task_of(first)
        task_of(second)
        self.first, self.second = first, second

    @property
    def dimensions(self) -> tuple[str, ...]:
        return (self.first, self.second)

    def __call__(self, inputs: RewardInput) -> RewardOutput:
        a, b = inputs.normalised(self.first), inputs.normalised(self.second)
        return RewardOutput.from_total(torch.sqrt(a * b), {self.first: a, self.second: b})

"""Built-in reward strategies (PAPER.md section 4). Each is registered under ``firm.rewards`` in pyproject.toml."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from firm.critics.base import task_of
from firm.rewards.base import RewardInput, RewardOutput, RewardStrategy
from firm.rewards.functional import base_and_bonus, weighted_sum


class BaseAndBonus(RewardStrategy):
    """``R = base * (w1 + w2 * bonus) / (w1 + w2)``: the base dimension is a precondition, the bonus scales it.

    Args:
        base: the dimension that must be achieved (execution for edits, instruction for generations).
        bonus: the dimension that modulates it (consistency, quality).
        w1: the share of the reward that the base alone earns.
        w2: the share that the bonus adds on top.
    """

    def __init__(self, base: str, bonus: str, w1: float, w2: float) -> None:
        for dim in (base, bonus):
            task_of(dim)
        if base == bonus:
            raise ValueError(f"base and bonus must be different dimensions, got {base!r} twice")
        base_and_bonus(torch.zeros(1), torch.zeros(1), w1, w2)  # validates the weights now, not at the first batch
        self.base, self.bonus, self.w1, self.w2 = base, bonus, w1, w2

    @property
    def dimensions(self) -> tuple[str, ...]:
        return (self.base, self.bonus)

    def __call__(self, inputs: RewardInput) -> RewardOutput:
        base, bonus = inputs.normalised(self.base), inputs.normalised(self.bonus)
        total = base_and_bonus(base, bonus, self.w1, self.w2)
        return RewardOutput.from_total(total, {self.base: base, self.bonus: bonus})


class ConsistencyModulatedExecution(BaseAndBonus):
    """CME for edits: ``R = E * (0.6 + 0.4 * C)``. Copying the input (E = 1) earns nothing, however consistent.

    Args:
        w1: execution's base share.
        w2: consistency's bonus share.
    """

    def __init__(self, w1: float = 0.6, w2: float = 0.4) -> None:
        super().__init__("execution", "consistency", w1, w2)


class QualityModulatedAlignment(BaseAndBonus):
    """QMA for generations: ``R = I * (0.4 + 0.6 * Q)``. Stops the policy hacking prompts with poor images.

    Args:
        w1: instruction following's base share.
        w2: quality's bonus share.
    """

    def __init__(self, w1: float = 0.4, w2: float = 0.6) -> None:
        super().__init__("instruction", "quality", w1, w2)


class WeightedSum(RewardStrategy):
    """``R = sum_k w_k * s_k / sum_k w_k`` over normalised scores (the baseline FIRM compares CME against).

    Args:
        weights: dimension -> weight, e.g. ``{"execution": 0.6, "consistency": 0.4}``.
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {"execution": 0.5, "consistency": 0.5})
        for dim in self.weights:
            task_of(dim)
        weighted_sum({k: torch.zeros(1) for k in self.weights}, self.weights)  # validates now

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def __call__(self, inputs: RewardInput) -> RewardOutput:
        parts = {dim: inputs.normalised(dim) for dim in self.weights}
        return RewardOutput.from_total(weighted_sum(parts, self.weights), parts)


class SingleDimension(RewardStrategy):
    """``R = s``: one normalised dimension alone.

    Args:
        dimension: the dimension to reward.
    """

    def __init__(self, dimension: str = "execution") -> None:
        task_of(dimension)
        self.dimension = dimension

    @property
    def dimensions(self) -> tuple[str, ...]:
        return (self.dimension,)

    def __call__(self, inputs: RewardInput) -> RewardOutput:
        score = inputs.normalised(self.dimension)
        return RewardOutput.from_total(score, {self.dimension: score})


class LogitExpectation(RewardStrategy):
    """The Edit-R1-style reward: the normalised *expected* score of a score-token judge, averaged over dimensions.

    Continuous and cheap (one forward pass), but FIRM found it a noisy reward; offered for comparison.

    Args:
        weights: dimension -> weight of its expected score.
    """

    uses_expected = True

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {"execution": 1.0})
        for dim in self.weights:
            task_of(dim)
        weighted_sum({k: torch.zeros(1) for k in self.weights}, self.weights)

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def __call__(self, inputs: RewardInput) -> RewardOutput:
        parts = {dim: inputs.normalised(dim, expected=True) for dim in self.weights}
        return RewardOutput.from_total(weighted_sum(parts, self.weights), parts)

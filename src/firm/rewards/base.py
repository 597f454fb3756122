"""The reward contract: critic scores in, one reward per sample out.

A :class:`RewardStrategy` reads raw per-dimension critic scores (:class:`RewardInput`) and returns a
:class:`RewardOutput` whose ``total`` is what RL optimises. A sample whose needed verdicts were invalid gets NaN and
``valid = False``: RL excludes it from the advantage (or retries it) instead of learning from a made-up score.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from firm.critics.base import FIRM_RANGE, ScoreRange, Verdict


@dataclass(frozen=True)
class RewardInput:
    """Critic scores for a batch of B samples.

    Attributes:
        scores: dimension -> raw scores ``[B]`` (float, NaN where the verdict was invalid).
        expected: dimension -> expected scores ``[B]`` from a score-token judge (NaN where none).
        score_range: the scale of ``scores`` and ``expected``.
    """

    scores: Mapping[str, Tensor]
    expected: Mapping[str, Tensor] = field(default_factory=dict)
    score_range: ScoreRange = FIRM_RANGE

    def __post_init__(self) -> None:
        sizes = {k: v.shape for k, v in {**self.scores, **self.expected}.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"all score tensors must have the same shape [B], got {sizes}")

    @classmethod
    def from_verdicts(
        cls, verdicts: Mapping[str, Sequence[Verdict]], score_range: ScoreRange = FIRM_RANGE
    ) -> RewardInput:
        """Collect verdicts per dimension (each list in sample order) into score tensors."""
        scores = {
            dim: torch.tensor([math.nan if v.score is None else float(v.score) for v in vs], dtype=torch.float32)
            for dim, vs in verdicts.items()
        }
        expected = {
            dim: torch.tensor([math.nan if v.expected is None else v.expected for v in vs], dtype=torch.float32)
            for dim, vs in verdicts.items()
            if any(v.expected is not None for v in vs)
        }
        return cls(scores=scores, expected=expected, score_range=score_range)

    def raw(self, dimension: str, expected: bool = False) -> Tensor:
        """The raw scores (or expected scores) of one dimension.

        Raises:
            KeyError: naming the dimension and the ones that were scored.
        """
        source = self.expected if expected else self.scores
        if dimension not in source:
            kind = "expected scores (a score-token judge)" if expected else "scores"
            raise KeyError(f"this reward needs {kind} for {dimension!r}; the input has {sorted(source) or 'none'}")
        return source[dimension]

    def normalised(self, dimension: str, expected: bool = False) -> Tensor:
        """Scores of one dimension mapped to [0, 1]; NaN stays NaN."""
        from firm.rewards.functional import normalise

        return normalise(self.raw(dimension, expected), self.score_range.low, self.score_range.high)


@dataclass(frozen=True)
class RewardOutput:
    """Rewards for a batch.

    Attributes:
        total: ``[B]`` rewards in [0, 1]; NaN where invalid.
        components: name -> ``[B]`` normalised sub-scores, for logging.
        valid: ``[B]`` bool, False where the reward could not be computed.
    """

    total: Tensor
    components: Mapping[str, Tensor]
    valid: Tensor

    @classmethod
    def from_total(cls, total: Tensor, components: Mapping[str, Tensor]) -> RewardOutput:
        return cls(total=total, components=dict(components), valid=~torch.isnan(total))


class RewardStrategy(ABC):
    """Turns critic scores into rewards. Subclasses take their weights as typed ``__init__`` arguments."""

    @property
    @abstractmethod
    def dimensions(self) -> tuple[str, ...]:
        """The critic dimensions this reward reads; callers score exactly these."""

    #: True when the reward reads expected scores (a score-token judge) rather than discrete ones.
    uses_expected: bool = False

    @abstractmethod
    def __call__(self, inputs: RewardInput) -> RewardOutput:
        """Compute rewards for a batch."""

"""Critic verdicts to rewards: :class:`CriticReward` pairs a critic with a reward strategy.

Give it images with their instruction or prompt (and, for edits, the source images); it asks the critic for exactly
the dimensions the strategy reads, in one ``judge`` call, and returns the strategy's :class:`RewardOutput` together
with the verdicts behind it. Whether the critic runs in this process, behind ``firm serve`` or on a vLLM server is
the critic's business. ``firm score``, ``firm serve``'s ``/v1/reward``, RL tasks and curation all go through it, and
:func:`reward_dict` is the one JSON view of a reward they print or send.

Example:
    >>> reward = CriticReward(critic, strategy_for("cme"))  # doctest: +SKIP
    >>> scored = reward.score(["add a red hat"], [edited], sources=[source])  # doctest: +SKIP
    >>> scored.output.total, scored.verdicts[0]["execution"].score  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from firm.critics.base import Critic, JudgeRequest, Verdict, task_of
from firm.errors import InputError
from firm.rewards.base import RewardInput, RewardOutput, RewardStrategy

__all__ = [
    "DEFAULT_REWARDS",
    "CriticReward",
    "RewardSample",
    "RewardSpecError",
    "ScoredBatch",
    "reward_dict",
    "strategy_for",
]

#: The reward each task gets when none is named: FIRM's CME for edits, QMA for generations.
DEFAULT_REWARDS = {"edit": "cme", "gen": "qma"}


class RewardSpecError(InputError):
    """A reward that cannot be used as asked: unknown name, settings it needs, dimensions not judged."""


def strategy_for(name: str) -> RewardStrategy:
    """The reward strategy registered as ``name`` (or at a class path), built with its default settings.

    Raises:
        RewardSpecError: for an unknown name, or a strategy that needs settings.
    """
    from firm import plugins

    try:
        strategy = plugins.resolve_class("firm.rewards", name)()
    except (plugins.PluginError, ValueError) as exc:
        raise RewardSpecError(str(exc)) from exc
    except TypeError as exc:
        raise RewardSpecError(f"reward {name!r} cannot be built without settings: {exc}") from exc
    if not isinstance(strategy, RewardStrategy):
        raise RewardSpecError(f"{name} is not a firm reward strategy (a subclass of firm.rewards.RewardStrategy)")
    return strategy


@dataclass(frozen=True)
class RewardSample:
    """One image to reward: the edited image with its instruction and source, or a generation with its prompt."""

    text: str
    image: Image.Image
    source: Image.Image | None = None
    requirement: str = ""

    def request(self, dimension: str) -> JudgeRequest:
        """The request that judges this sample on ``dimension``."""
        return JudgeRequest(dimension, self.text, self.image, self.source, self.requirement)


@dataclass(frozen=True)
class ScoredBatch:
    """Rewards of a batch and the verdicts behind them.

    Attributes:
        name: the reward's name (echoed in JSON answers).
        output: the strategy's output; ``total[i]`` is NaN and ``valid[i]`` False where a needed verdict was invalid.
        verdicts: per sample, dimension -> verdict.
    """

    name: str
    output: RewardOutput
    verdicts: list[dict[str, Verdict]]

    def __len__(self) -> int:
        return len(self.verdicts)

    def reward_json(self, index: int) -> dict[str, Any]:
        """Sample ``index``'s reward as JSON data (see :func:`reward_dict`)."""
        return reward_dict(self.output, index)

    def to_json(self) -> list[dict[str, Any]]:
        """Per sample: ``{"reward": {...}, "verdicts": {dimension: verdict}}``."""
        return [
            {"reward": self.reward_json(i), "verdicts": {d: v.to_dict() for d, v in by_dim.items()}}
            for i, by_dim in enumerate(self.verdicts)
        ]


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def reward_dict(output: RewardOutput, index: int) -> dict[str, Any]:
    """Sample ``index`` of ``output`` as JSON data: ``{"total", "valid", "components"}``, NaN written as null."""
    return {
        "total": _finite_or_none(float(output.total[index])),
        "valid": bool(output.valid[index]),
        "components": {name: _finite_or_none(float(v[index])) for name, v in output.components.items()},
    }


class CriticReward:
    """A critic and a reward strategy over it: images in, rewards and verdicts out.

    Args:
        critic: judges the dimensions the strategy reads.
        strategy: turns the verdicts into rewards (CME, QMA, a plugin's...).
        name: the reward's name in JSON answers and logs; the strategy's class name when empty.

    Raises:
        ValueError: for a strategy whose dimensions mix edits and generations, or that reads none.
    """

    def __init__(self, critic: Critic, strategy: RewardStrategy, name: str = "") -> None:
        tasks = {task_of(d) for d in strategy.dimensions}
        if len(tasks) != 1:
            raise ValueError(
                f"reward {name or type(strategy).__name__!r} mixes edit and generation dimensions "
                f"{strategy.dimensions}; a reward reads the dimensions of one task"
            )
        self.critic = critic
        self.strategy = strategy
        self.name = name or type(strategy).__name__
        self.task = tasks.pop()

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The dimensions judged for every sample."""
        return tuple(self.strategy.dimensions)

    def __call__(self, samples: Sequence[RewardSample]) -> ScoredBatch:
        """Judge every sample on :attr:`dimensions` (one critic call for the batch) and compute the rewards.

        Raises:
            ValueError: for a sample of the other task (an edit without a source, or a generation with one).
            RuntimeError: when the critic breaks its contract (verdict count or dimension).
        """
        requests = [sample.request(dim) for sample in samples for dim in self.dimensions]
        verdicts = self.critic.judge(requests)
        if len(verdicts) != len(requests):
            raise RuntimeError(f"{type(self.critic).__name__} returned {len(verdicts)} verdicts for {len(requests)}")
        per_sample: list[dict[str, Verdict]] = []
        step = len(self.dimensions)
        for start in range(0, len(verdicts), step):
            by_dim = dict(zip(self.dimensions, verdicts[start : start + step], strict=True))
            for dim, verdict in by_dim.items():
                if verdict.dimension != dim:
                    raise RuntimeError(f"{type(self.critic).__name__} answered {verdict.dimension} for {dim}")
            per_sample.append(by_dim)
        return self.combine(per_sample)

    def score(
        self,
        texts: Sequence[str],
        images: Sequence[Image.Image],
        sources: Sequence[Image.Image] | None = None,
        requirements: Sequence[str] | None = None,
    ) -> ScoredBatch:
        """:meth:`__call__` on parallel lists: instructions or prompts, images, source images (edits).

        Raises:
            ValueError: for lists of different lengths, or sources given (or missing) for the other task.
        """
        count = len(texts)
        sizes = [len(images)]
        sizes += [count if sources is None else len(sources), count if requirements is None else len(requirements)]
        if any(size != count for size in sizes):
            raise ValueError(f"texts, images, sources and requirements differ in length: {[count, *sizes]}")
        samples = [
            RewardSample(
                text,
                image,
                None if sources is None else sources[i],
                "" if requirements is None else requirements[i],
            )
            for i, (text, image) in enumerate(zip(texts, images, strict=True))
        ]
        return self(samples)

    def combine(self, verdicts: Sequence[Mapping[str, Verdict]]) -> ScoredBatch:
        """The rewards for verdicts judged elsewhere (per sample, dimension -> verdict; extra dimensions ignored).

        Raises:
            KeyError: for a sample without a verdict on one of :attr:`dimensions`.
        """
        by_dim = {dim: [sample[dim] for sample in verdicts] for dim in self.dimensions}
        output = self.strategy(RewardInput.from_verdicts(by_dim, self.critic.score_range))
        return ScoredBatch(self.name, output, [dict(sample) for sample in verdicts])

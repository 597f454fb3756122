"""Rewards as RL sees them: anything called on :class:`~firm.rewards.RewardSample` objects that answers a
:class:`~firm.rewards.ScoredBatch`.

Two kinds fit: a critic with a reward strategy (:class:`CriticReward`, built from a recipe by :class:`FromCritic`),
and rewards computed from the images themselves (:class:`~firm.rewards.image.ImageReward` subclasses, or any class of
your own with the same call). A sample whose reward is invalid keeps NaN and ``valid = False``; :class:`FromCritic`
can ask the critic again for those first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from firm.rewards.base import RewardOutput
from firm.rewards.critic_reward import DEFAULT_REWARDS, CriticReward, RewardSample, ScoredBatch, strategy_for

__all__ = ["FromCritic", "RLReward"]

log = logging.getLogger(__name__)


@runtime_checkable
class RLReward(Protocol):
    """What an RL task calls to reward its images."""

    def __call__(self, samples: Sequence[RewardSample]) -> ScoredBatch: ...


class FromCritic:
    """A critic and a reward strategy, described in a recipe and built on first use (so each rank builds its own,
    on its own device, after the trainer has started).

    Args:
        critic: a registered critic name (``generative``, ``score_token``, ``openai``, ``remote``, ``shapes``, a
            plugin's) or a class path.
        settings: the critic's settings, as ``firm score`` takes them (``model``, ``url``, ``max_new_tokens``...).
        strategy: the reward strategy's name (``qma`` for generations, ``cme`` for edits); the task's default when
            empty.
        task: ``gen`` or ``edit``, for the default strategy.
        retries: how many more times samples with an invalid verdict are sent to the critic before their reward is
            left invalid (NaN, advantage 0). Useful with sampling critics; a greedy critic answers the same again.
        tiny: build a tiny random critic of this family (``qwen3_vl``, ``qwen2_5_vl``) in process instead of loading
            ``settings["model"]``: a real generative judge for debug recipes and tests, whose verdicts mean nothing.

    Raises:
        ValueError: for negative retries or an unknown task.
        CriticSpecError: for an unknown critic, or a setting it does not take (checked here, before any training).
    """

    def __init__(
        self,
        critic: str = "generative",
        settings: Mapping[str, Any] | None = None,
        strategy: str = "",
        task: str = "gen",
        retries: int = 0,
        tiny: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if task not in DEFAULT_REWARDS:
            raise ValueError(f"task must be one of {', '.join(DEFAULT_REWARDS)}, got {task!r}")
        self.critic_name = critic
        self.settings = dict(settings or {})
        _check_settings(critic, self.settings, tiny)
        self.strategy_name = strategy or DEFAULT_REWARDS[task]
        self.retries = retries
        self.tiny = tiny
        self._reward: CriticReward | None = None
        self.retried = 0

    @property
    def reward(self) -> CriticReward:
        """The critic reward (built on first use).

        Raises:
            CriticSpecError, RewardSpecError: for a critic or strategy that cannot be built as described.
        """
        if self._reward is None:
            from firm.critics.base import Critic
            from firm.critics.factory import CriticSpec, build_critic

            critic: Critic
            if self.tiny is not None:
                from firm.critics.tiny import build_tiny_critic
                from firm.critics.transformers import GenerativeJudge

                model, processor = build_tiny_critic(self.tiny)
                critic = GenerativeJudge.from_model(model, processor, **self.settings)
            else:
                critic = build_critic(CriticSpec(self.critic_name, self.settings))
            self._reward = CriticReward(critic, strategy_for(self.strategy_name), name=self.strategy_name)
        return self._reward

    def __call__(self, samples: Sequence[RewardSample]) -> ScoredBatch:
        scored = self.reward(samples)
        for _ in range(self.retries):
            invalid = [i for i, ok in enumerate(scored.output.valid.tolist()) if not ok]
            if not invalid:
                break
            self.retried += len(invalid)
            again = self.reward([samples[i] for i in invalid])
            scored = _merge(scored, again, invalid)
        return scored


def _check_settings(critic: str, settings: Mapping[str, Any], tiny: str | None) -> None:
    import inspect

    from firm.critics.factory import CriticSpec, CriticSpecError

    if tiny is not None:
        from firm.critics.transformers import GenerativeJudge

        cls: type = GenerativeJudge
        critic = f"tiny {tiny} generative judge"
    else:
        cls = CriticSpec(critic, settings).critic_class()
    accepted = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        return
    refused = sorted(set(settings) - set(accepted))
    if refused:
        raise CriticSpecError(
            f"critic {critic!r} does not take {', '.join(refused)}; its settings are {', '.join(accepted)}"
        )


def _merge(first: ScoredBatch, again: ScoredBatch, index: Sequence[int]) -> ScoredBatch:
    """``first`` with the samples at ``index`` replaced by ``again``'s answers."""
    idx = torch.tensor(list(index), dtype=torch.long)
    total = first.output.total.clone()
    total[idx] = again.output.total
    valid = first.output.valid.clone()
    valid[idx] = again.output.valid
    components = {}
    for name, values in first.output.components.items():
        merged = values.clone()
        merged[idx] = again.output.components[name]
        components[name] = merged
    verdicts = list(first.verdicts)
    for i, by_dim in zip(index, again.verdicts, strict=True):
        verdicts[i] = by_dim
    return ScoredBatch(first.name, RewardOutput(total=total, components=components, valid=valid), verdicts)

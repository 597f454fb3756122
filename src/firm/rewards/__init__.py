"""Reward strategies: critic scores to RL rewards (CME, QMA, weighted sum, single dimension, logit expectation);
:class:`CriticReward`, a critic and a strategy together: images in, rewards and verdicts out; rewards computed from
the images themselves (:class:`ImageReward`); and :class:`FromCritic`, a critic reward described in an RL recipe."""

from firm.rewards import functional
from firm.rewards.base import RewardInput, RewardOutput, RewardStrategy
from firm.rewards.critic_reward import CriticReward, RewardSample, ScoredBatch, reward_dict, strategy_for
from firm.rewards.image import ColourFraction, ImageReward, MeanColour
from firm.rewards.rl import FromCritic, RLReward
from firm.rewards.strategies import (
    BaseAndBonus,
    ConsistencyModulatedExecution,
    LogitExpectation,
    QualityModulatedAlignment,
    SingleDimension,
    WeightedSum,
)

__all__ = [
    "BaseAndBonus",
    "ColourFraction",
    "ConsistencyModulatedExecution",
    "CriticReward",
    "FromCritic",
    "ImageReward",
    "LogitExpectation",
    "MeanColour",
    "QualityModulatedAlignment",
    "RLReward",
    "RewardInput",
    "RewardOutput",
    "RewardSample",
    "RewardStrategy",
    "ScoredBatch",
    "SingleDimension",
    "WeightedSum",
    "functional",
    "reward_dict",
    "strategy_for",
]

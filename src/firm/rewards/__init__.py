"""Reward strategies: critic scores to RL rewards (CME, QMA, weighted sum, single dimension, logit expectation), and
:class:`CriticReward`, a critic and a strategy together: images in, rewards and verdicts out."""

from firm.rewards import functional
from firm.rewards.base import RewardInput, RewardOutput, RewardStrategy
from firm.rewards.critic_reward import CriticReward, RewardSample, ScoredBatch, reward_dict, strategy_for
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
    "ConsistencyModulatedExecution",
    "CriticReward",
    "LogitExpectation",
    "QualityModulatedAlignment",
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

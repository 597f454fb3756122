"""Reward strategies: critic scores to RL rewards (CME, QMA, weighted sum, single dimension, logit expectation)."""

from firm.rewards import functional
from firm.rewards.base import RewardInput, RewardOutput, RewardStrategy
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
    "LogitExpectation",
    "QualityModulatedAlignment",
    "RewardInput",
    "RewardOutput",
    "RewardStrategy",
    "SingleDimension",
    "WeightedSum",
    "functional",
]

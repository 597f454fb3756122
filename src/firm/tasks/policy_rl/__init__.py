"""RL fine-tuning of flow policies (generators now, editors next) with DiffusionNFT or Flow-GRPO: the task, the
algorithm objects it is given, and its settings."""

from firm.tasks.policy_rl.algorithm import NFT, FlowGRPO, RLAlgorithm, TrainBatch
from firm.tasks.policy_rl.settings import AdvantageSettings, EvalSettings, RolloutSettings
from firm.tasks.policy_rl.task import PolicyRLTask, sample_seed

__all__ = [
    "NFT",
    "AdvantageSettings",
    "EvalSettings",
    "FlowGRPO",
    "PolicyRLTask",
    "RLAlgorithm",
    "RolloutSettings",
    "TrainBatch",
    "sample_seed",
]

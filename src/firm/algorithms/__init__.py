"""RL math as plain functions on tensors (PAPER.md section 5): group advantages, the DiffusionNFT loss and its
old-policy EMA, Flow-GRPO's SDE step with its log-prob and the PPO-clipped loss, and the choice of training timesteps.

Nothing here knows a model, a trainer or a critic; ``docs/algorithms.md`` gives each formula with an example.
"""

from firm.algorithms.advantages import GroupAdvantages, group_advantages
from firm.algorithms.grpo import GRPOLoss, SDEStep, gaussian_mean_kl, grpo_loss, sde_step_logprob
from firm.algorithms.nft import NFTLoss, ema_update_, nft_loss, nft_optimality, old_ema_decay
from firm.algorithms.timesteps import broadcast_per_sample, num_train_steps, subsample_timesteps

__all__ = [
    "GRPOLoss",
    "GroupAdvantages",
    "NFTLoss",
    "SDEStep",
    "broadcast_per_sample",
    "ema_update_",
    "gaussian_mean_kl",
    "group_advantages",
    "grpo_loss",
    "nft_loss",
    "nft_optimality",
    "num_train_steps",
    "old_ema_decay",
    "sde_step_logprob",
    "subsample_timesteps",
]

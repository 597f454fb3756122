"""Deprecated: moved to :mod:`firm.tasks.critic_sft.settings` (LoRA and optimizer settings to :mod:`firm.training`).

Kept for one release, for code and checkpoints that name ``firm.tasks.settings.LoraSettings`` and the like.
"""

import warnings

from firm.tasks.critic_sft.settings import EvalSettings, LoraSettings, OptimizerSettings

__all__ = ["EvalSettings", "LoraSettings", "OptimizerSettings"]

warnings.warn(
    "firm.tasks.settings moved to firm.tasks.critic_sft.settings (LoraSettings to firm.training.lora, "
    "OptimizerSettings to firm.training.optim); the old path goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

"""Hyperparameter groups of :class:`~firm.tasks.policy_rl.PolicyRLTask`, one dataclass each, a docstring per field.

Rollout settings live with the policies (:class:`~firm.policies.RolloutSettings`); optimizer and LoRA settings are
shared by every task (:mod:`firm.training`).
"""

from __future__ import annotations

from dataclasses import dataclass

from firm.policies.base import RolloutSettings
from firm.policies.samplers import SAMPLERS
from firm.training.lora import LoraSettings
from firm.training.optim import OptimizerSettings

__all__ = ["AdvantageSettings", "EvalSettings", "LoraSettings", "OptimizerSettings", "RolloutSettings"]


@dataclass(frozen=True)
class AdvantageSettings:
    """Group-relative advantages (PAPER.md section 5).

    Raises:
        ValueError: for a non-positive clip or eps.
    """

    global_std: bool = False
    """Divide by the std of the whole gathered batch instead of each group's (FIRM's SD3.5 setting)."""
    clip: float = 5.0
    """Advantages are clipped to [-clip, clip]."""
    eps: float = 1e-4
    """Added to the std before dividing."""
    skip_uninformative: bool = False
    """Learn nothing from groups whose rewards are all high and alike (std < min_std and mean > max_mean)."""
    min_std: float = 0.05
    """The group std below which a group can be uninformative."""
    max_mean: float = 0.9
    """The group mean above which a group can be uninformative."""

    def __post_init__(self) -> None:
        if self.clip <= 0 or self.eps <= 0:
            raise ValueError(f"advantages.clip and advantages.eps must be positive, got {self.clip} and {self.eps}")


@dataclass(frozen=True)
class EvalSettings:
    """How the evaluation prompts are sampled at each validation run (``trainer.val_check_interval`` steps apart).

    Raises:
        ValueError: for a stochastic or unknown sampler, or fewer than one image per prompt.
    """

    sampler: str = "dpm2"
    """A deterministic sampler (``dpm2`` or ``euler``), so that evaluation rewards move only with the policy."""
    images_per_prompt: int = 1
    """Images per evaluation prompt."""
    seed: int = 1234
    """Seed of the evaluation noise (fixed per prompt, the same at every evaluation)."""
    at_start: bool = True
    """Also evaluate before the first step of a fresh run (step 0 of the reward curve), the baseline every later
    evaluation is compared with."""

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS or self.sampler == "sde":
            raise ValueError(f"evaluation.sampler must be dpm2 or euler, got {self.sampler!r}")
        if self.images_per_prompt < 1:
            raise ValueError(f"evaluation.images_per_prompt must be at least 1, got {self.images_per_prompt}")

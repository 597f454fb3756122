"""Low-rank adapters (peft LoRA) for any transformers or diffusers model: the settings and their application.

Critic SFT wraps a vision-language model with them; RL policies wrap a diffusion transformer the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LoraSettings", "apply_lora"]


@dataclass(frozen=True)
class LoraSettings:
    """Low-rank adapters (peft LoRA) instead of full fine-tuning; only the adapters train.

    Raises:
        ValueError: for a rank below 1, a dropout outside [0, 1) or no target modules.
    """

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator: adapters are scaled by ``alpha / r``."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names (suffixes) that get adapters; the defaults are a language model's attention and MLP."""
    exclude_vision: bool = True
    """Keep adapters out of the vision tower, whose modules can share names with the language model's."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be at least 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty; name at least one module, e.g. q_proj")


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> Any:
    """Wrap ``model`` with peft LoRA adapters; only the adapters stay trainable."""
    from peft import LoraConfig, get_peft_model

    targets: list[str] | str = list(settings.target_modules)
    if settings.exclude_vision:
        # A regex over full module names: peft then matches only modules outside the vision tower.
        names = "|".join(settings.target_modules)
        targets = rf"^(?!.*visual).*\.({names})$"
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets)
    return get_peft_model(model, config)

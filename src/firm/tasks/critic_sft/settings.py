"""Hyperparameter groups of :class:`~firm.tasks.critic_sft.CriticSFTTask`, one dataclass each, a docstring per field.

The optimizer and LoRA groups are shared by every task and live in :mod:`firm.training`; they are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from firm.training.lora import LoraSettings
from firm.training.optim import OptimizerSettings

__all__ = ["EvalSettings", "LoraSettings", "OptimizerSettings"]


@dataclass(frozen=True)
class EvalSettings:
    """Critic quality during validation: generate verdicts on the validation batches and score them.

    Raises:
        ValueError: for a token budget below 1 or max_batches below 0.
    """

    generate: bool = True
    """Generate a verdict per validation sample and log ``val/mae`` and ``val/invalid_rate``; off logs loss only."""
    max_new_tokens: int = 256
    """Token budget of a generated answer (FIRM's edit answers need about 256; instruction answers more)."""
    max_batches: int | None = None
    """Generate on at most this many validation batches per validation run (per rank); None for all."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"evaluation.max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.max_batches is not None and self.max_batches < 0:
            raise ValueError(f"evaluation.max_batches must be 0 or more, got {self.max_batches}")

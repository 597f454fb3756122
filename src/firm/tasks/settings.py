"""Hyperparameter groups of :class:`~firm.tasks.critic_sft.CriticSFTTask`, one dataclass each, a docstring per field."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EvalSettings", "LoraSettings", "OptimizerSettings"]


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW with linear warmup and a cosine decay, stepped every optimizer step (FIRM: lr 1e-5, warmup 0.1).

    Raises:
        ValueError: for a non-positive lr, a warmup_ratio outside [0, 1), a min_lr_ratio outside [0, 1], or a
            negative weight_decay.
    """

    lr: float = 1e-5
    """Peak learning rate, reached at the end of warmup."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay, applied to matrices only (not to biases and norms)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's moment decay rates."""
    eps: float = 1e-8
    """AdamW's denominator epsilon."""
    warmup_ratio: float = 0.1
    """Share of all optimizer steps spent warming up linearly to ``lr``."""
    min_lr_ratio: float = 0.0
    """The cosine decays to ``min_lr_ratio * lr`` at the last step."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be positive, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"optimizer.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optimizer.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay must be 0 or more, got {self.weight_decay}")


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
    """Module names (suffixes) that get adapters; the defaults are the language model's attention and MLP."""
    exclude_vision: bool = True
    """Keep adapters out of the vision tower, whose modules can share names with the language model's."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be at least 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty; name at least one module, e.g. q_proj")


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

"""AdamW with warmup and cosine decay, as every firm task optimises: settings and the optimizer they build."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.optim.lr_scheduler import LambdaLR

from firm.training.schedule import warmup_cosine, warmup_steps

__all__ = ["OptimizerSettings", "adamw_with_schedule", "decay_groups"]


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


def decay_groups(params: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups: matrices with ``weight_decay``, biases and norms (1-D) without.

    Empty groups are left out (LoRA trains 2-D adapters only): ZeRO-3 drops them from its optimizer, and a scheduler
    built over the torch optimizer's groups would then have one learning rate too many.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in params:
        if param.requires_grad:
            # ZeRO-3 partitions parameters; ds_shape keeps the true shape.
            shape = getattr(param, "ds_shape", param.shape)
            (decay if len(shape) >= 2 else no_decay).append(param)
    groups = ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
    return [group for group in groups if group["params"]]


def adamw_with_schedule(
    params: Iterable[torch.nn.Parameter],
    settings: OptimizerSettings,
    total_steps: int,
    adamw: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
) -> OptimizerLRSchedulerConfig:
    """What ``configure_optimizers`` returns: AdamW over :func:`decay_groups` and its warmup-cosine schedule,
    stepped every optimizer step.

    Args:
        params: the module's parameters (frozen ones are skipped).
        settings: learning rate, betas, decay and schedule.
        total_steps: optimizer steps of the whole run (the cosine reaches its floor there).
        adamw: the AdamW class (DeepSpeed's CPU Adam under optimizer offload).
    """
    optimizer = adamw(
        decay_groups(params, settings.weight_decay), lr=settings.lr, betas=settings.betas, eps=settings.eps
    )
    schedule = partial(
        warmup_cosine,
        total_steps=total_steps,
        warmup=warmup_steps(total_steps, settings.warmup_ratio),
        min_ratio=settings.min_lr_ratio,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"}}

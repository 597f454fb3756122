"""Callbacks for training runs of any firm task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from firm.training.export import Exportable
from firm.training.zero import deepspeed_config, zero_stage

__all__ = ["HFExport", "full_state_dict"]


def full_state_dict(trainer: pl.Trainer) -> dict[str, torch.Tensor] | None:
    """A copy of the trained module's complete state dict, on the CPU of global rank 0 (None on the other ranks).

    Under ZeRO-3 the parameters are partitioned: they are gathered layer by layer onto rank 0, a collective that
    every rank must enter. Under any other strategy each rank holds full parameters already.
    """
    if zero_stage(deepspeed_config(trainer)) == 3:
        engine: Any = trainer.strategy.model
        gathered: dict[str, torch.Tensor] | None = engine._zero3_consolidated_16bit_state_dict()
        if gathered is not None:
            # On CPU processes the gathered tensors can alias buffers ZeRO reuses; own them (one at a time).
            for name in list(gathered):
                gathered[name] = gathered[name].clone()
        return gathered
    if not trainer.is_global_zero:
        return None
    module = trainer.lightning_module
    # Copies, also on CPU: an export merges LoRA into these tensors in place, which must not touch the live model.
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class HFExport(pl.Callback):
    """At the end of ``fit``, write the trained model as the task exports it (critics: a Hugging Face folder), what
    ``firm export`` writes from a checkpoint.

    Args:
        dirpath: the folder to write.
        adapter: with LoRA, write the adapter instead of merging it into the weights.
        dtype: ``float32``, ``bfloat16`` or ``float16``; the training weights' dtype when None.
    """

    def __init__(self, dirpath: str | Path, adapter: bool = False, dtype: str | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.adapter = adapter
        self.dtype = dtype

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Checked when the run starts, not after hours of training.
        if not isinstance(pl_module, Exportable):
            raise TypeError(f"HFExport needs a task that exports its model; {type(pl_module).__name__} does not")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or not isinstance(pl_module, Exportable):
            return
        state = full_state_dict(trainer)
        if state is not None:
            pl_module.export_model(state, pl_module.export_meta(), self.dirpath, adapter=self.adapter, dtype=self.dtype)
            print(f"exported the model to {self.dirpath}")
        trainer.strategy.barrier("firm_hf_export")

"""What critic SFT tests hand to ``firm fit`` subprocesses by class path, and the rank variables of a distributed run.

Training subprocesses find this module with tests/ on PYTHONPATH. The shard helpers live in :mod:`firm.testing`.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

#: Variables through which a launcher tells a process its place in a distributed run.
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")


class DumpLogits(pl.Callback):
    """At the end of fit, every rank runs the trained model on the first validation batch (ZeRO-3 needs all ranks in
    a forward pass) and rank 0 saves the logits: the outputs of the model before any conversion.

    Training subprocesses load it by class path (``critic_sft_support.DumpLogits``) with tests/ on PYTHONPATH.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batch = next(iter(trainer.datamodule.val_dataloader()))  # type: ignore[attr-defined]
        model: Any = pl_module.model
        model.eval()
        with torch.no_grad():
            logits = model(**batch["inputs"]).logits
        if trainer.is_global_zero:
            torch.save({"inputs": batch["inputs"], "logits": logits, "step": trainer.global_step}, self.path)

"""Supervised fine-tuning of a generative critic (FIRM-Edit-8B / FIRM-Gen-8B are full SFT of Qwen3-VL-8B-Instruct).

:class:`CriticSFTTask` trains a transformers vision-language model on :class:`~firm.data.CriticSFTDataModule` batches:
full fine-tuning or LoRA, optional gradient checkpointing, AdamW with warmup and cosine decay. Validation logs the
token loss of the answers and the critic's quality: it generates a verdict for every validation sample with the same
judge that serves critics (:class:`~firm.critics.transformers.GenerativeJudge`, on the model being trained) and logs
the mean absolute error against the labels (``val/mae``, valid verdicts only) and the share of invalid verdicts
(``val/invalid_rate``).

It runs under any Lightning strategy; for 8B models use DeepSpeed ZeRO-2/3 (see ``recipes/critic``). Under ZeRO-3 the
model is built inside DeepSpeed's partitioning context, so no rank ever holds all the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torchmetrics import SumMetric

from firm.critics.base import DIMENSIONS, JudgeRequest, Verdict
from firm.data.critic_sft import SKIP_KINDS
from firm.tasks.critic_sft.settings import EvalSettings
from firm.tasks.critic_sft.source import VLMSource
from firm.training.export import EXPORT_KEY, export_entry
from firm.training.lora import LoraSettings, apply_lora
from firm.training.optim import OptimizerSettings, adamw_with_schedule
from firm.training.zero import deepspeed_config, offloads_optimizer

__all__ = ["CriticSFTTask", "verdict_totals"]


def verdict_totals(verdicts: Sequence[Verdict], labels: Sequence[int], keep: Sequence[bool]) -> tuple[int, int, int]:
    """(judged, valid, summed absolute error of the valid verdicts) over the kept samples.

    MAE is ``abs_error / valid`` and the invalid rate ``1 - valid / judged``; an invalid verdict never gets a score.

    Example:
        >>> verdict_totals([Verdict("execution", 3), Verdict.invalid("execution", "no score")], [5, 1], [True, True])
        (2, 1, 2)
    """
    judged = valid = abs_error = 0
    for verdict, label, kept in zip(verdicts, labels, keep, strict=True):
        if kept:
            judged += 1
            if verdict.score is not None:
                valid += 1
                abs_error += abs(verdict.score - label)
    return judged, valid, abs_error


class CriticSFTTask(pl.LightningModule):
    """SFT of a generative critic.

    Args:
        critic: where the model and processor come from (``PretrainedVLM`` for a hub id or folder, ``TinyVLM``
            for tests).
        lora: LoRA settings for adapter training; None for full fine-tuning (what FIRM did).
        optimizer: AdamW and schedule settings.
        gradient_checkpointing: recompute activations in the backward pass (less memory, about 30% more compute).
        freeze_vision: keep the vision tower's weights fixed (full fine-tuning only).
        evaluation: what validation measures besides the token loss.

    Raises:
        ValueError: for ``freeze_vision`` together with ``lora`` (LoRA already freezes everything but the adapters).
    """

    def __init__(
        self,
        critic: VLMSource,
        lora: LoraSettings | None = None,
        optimizer: OptimizerSettings = OptimizerSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        gradient_checkpointing: bool = False,
        freeze_vision: bool = False,
        evaluation: EvalSettings = EvalSettings(),  # noqa: B008 - frozen dataclass, safe as a default
    ) -> None:
        super().__init__()
        if freeze_vision and lora is not None:
            raise ValueError("freeze_vision applies to full fine-tuning; with lora only the adapters train anyway")
        self.save_hyperparameters()
        self.critic = critic
        self.lora = lora
        self.optimizer_settings = optimizer
        self.gradient_checkpointing = gradient_checkpointing
        self.freeze_vision = freeze_vision
        self.evaluation = evaluation
        self.processor = critic.build_processor()
        self.model: Any = None
        # Sums rather than means: MAE and invalid rate are ratios of totals over all batches and ranks. The test loop
        # uses the same three (the two loops never run at once).
        self.val_abs_error = SumMetric()
        self.val_valid = SumMetric()
        self.val_judged = SumMetric()
        self._judge: Any = None

    # -- model ----------------------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Build the model (once), apply freezing, checkpointing and LoRA."""
        if self.model is not None:
            return
        model = self.critic.build_model(deepspeed_config(self._trainer) if self._trainer is not None else None)
        if self.freeze_vision:
            model.model.visual.requires_grad_(False)
        if self.gradient_checkpointing:
            # Non-reentrant checkpointing works with frozen inputs (LoRA) and with ZeRO-3's parameter hooks.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        model.train()  # from_pretrained and the tiny builder return eval-mode models
        self.model = apply_lora(model, self.lora) if self.lora is not None else model

    def forward(self, **inputs: torch.Tensor) -> Any:
        return self.model(**inputs)

    # -- steps ----------------------------------------------------------------------------------------------------

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss: torch.Tensor = self.model(**batch["inputs"]).loss
        size = len(batch["scores"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self._log_skipped(batch, "train")
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Like validation, on the datamodule's test shards: ``firm test -c recipe.yaml --ckpt_path ...`` logs
        ``test/loss``, ``test/mae``, ``test/invalid_rate`` and ``test/judged``."""
        self._evaluation_step(batch, batch_idx, "test")

    def _evaluation_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> None:
        inputs = batch["inputs"]
        loss = self.model(**inputs).loss
        # Weighted by answer tokens, so the epoch value is the mean loss per answer token.
        tokens = int((inputs["labels"][:, 1:] != -100).sum())
        self.log(f"{stage}/loss", loss, batch_size=tokens, sync_dist=True, prog_bar=True)
        self._log_skipped(batch, stage)
        if self.evaluation.generate and (
            self.evaluation.max_batches is None or batch_idx < self.evaluation.max_batches
        ):
            judge = batch["judge"]
            verdicts = self.judge_batch(judge.requests, judge.prompts)
            self._update_quality(verdicts, batch["scores"], batch["real"])

    def on_validation_epoch_start(self) -> None:
        self._reset_quality()

    def on_test_epoch_start(self) -> None:
        self._reset_quality()

    def on_validation_epoch_end(self) -> None:
        self._log_quality("val")

    def on_test_epoch_end(self) -> None:
        self._log_quality("test")

    def _reset_quality(self) -> None:
        # Fresh totals, made in the current loop's grad mode: `validate` runs under inference_mode, the validation
        # inside `fit` does not, and tensors made under inference_mode cannot be updated in place outside it.
        for metric in (self.val_judged, self.val_valid, self.val_abs_error):
            metric.reset()

    def _log_quality(self, stage: str) -> None:
        if self.val_judged.update_count == 0:
            return
        judged, valid, abs_error = (m.compute() for m in (self.val_judged, self.val_valid, self.val_abs_error))
        # Already summed over ranks by the metrics; sync_dist only averages identical values (and quiets a warning).
        nan = torch.tensor(float("nan"))
        self.log(f"{stage}/mae", abs_error / valid if valid > 0 else nan, sync_dist=True)
        self.log(f"{stage}/invalid_rate", 1.0 - valid / judged if judged > 0 else nan, sync_dist=True)
        self.log(f"{stage}/judged", judged, sync_dist=True)

    def _log_skipped(self, batch: Mapping[str, Any], stage: str) -> None:
        # Every kind, zeros included: ranks must log the same names to sum them over ranks at the epoch's end.
        for kind in SKIP_KINDS:
            count = batch["skipped"].get(kind, 0)
            self.log(
                f"data/{stage}_skipped_{kind}", float(count), reduce_fx="sum", on_step=False, on_epoch=True,
                sync_dist=True, batch_size=1,
            )  # fmt: skip

    def _update_quality(self, verdicts: Sequence[Verdict], scores: torch.Tensor, real: torch.Tensor) -> None:
        judged, valid, abs_error = verdict_totals(verdicts, scores.tolist(), real.tolist())
        # Updated on every batch, also with zeros, so every rank takes part in the metrics' sync.
        self.val_judged.update(judged)
        self.val_valid.update(valid)
        self.val_abs_error.update(abs_error)

    # -- critic quality -------------------------------------------------------------------------------------------

    @property
    def judge(self) -> Any:
        """The generative judge over the model being trained (built on first use)."""
        if self._judge is None:
            from firm.critics.transformers import GenerativeJudge

            world = self.trainer.world_size if self._trainer is not None else 1
            # With several ranks, ZeRO-3 gathers weights collectively in every forward pass: ranks must keep
            # generating until the longest answer anywhere is done.
            kwargs = {"synced_gpus": True} if world > 1 else {}
            self._judge = GenerativeJudge.from_model(
                self.model,
                self.processor,
                max_new_tokens=self.evaluation.max_new_tokens,
                max_new_tokens_per_dimension={},
                generation_kwargs=kwargs,
                batch_size=1 << 30,
            )
        return self._judge

    def judge_batch(self, requests: Sequence[JudgeRequest], prompts: Sequence[str]) -> list[Verdict]:
        """Verdicts of the model being trained on ``requests``, whose chat prompts are ``prompts``.

        One ``generate`` call per dimension. With several ranks, every rank makes the same calls in the same order
        (a rank without a sample of some dimension generates for a stand-in and discards it), because ZeRO-3 and
        ``synced_gpus`` need every rank in every forward pass.
        """
        by_dimension: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            by_dimension.setdefault(request.dimension, []).append(i)
        verdicts: list[Verdict | None] = [None] * len(requests)
        for dimension in self._dimensions_on_all_ranks(by_dimension):
            index = by_dimension.get(dimension)
            if index is None:
                # The stand-in's dimension only sets the token budget and the parsing; its verdict is discarded.
                self.judge.judge_batch(dimension, [requests[0]], [prompts[0]])
                continue
            batch = [requests[i] for i in index]
            for i, verdict in zip(
                index, self.judge.judge_batch(dimension, batch, [prompts[i] for i in index]), strict=True
            ):
                verdicts[i] = verdict
        assert all(v is not None for v in verdicts), "every request gets a verdict"
        return [v for v in verdicts if v is not None]

    def _dimensions_on_all_ranks(self, by_dimension: Mapping[str, list[int]]) -> list[str]:
        order = list(DIMENSIONS)
        present = torch.tensor([d in by_dimension for d in order], dtype=torch.int32, device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            present = self.trainer.strategy.reduce(present, reduce_op="max")
        return [d for d, flag in zip(order, present.tolist(), strict=True) if flag]

    # -- optimisation ---------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return adamw_with_schedule(self.parameters(), self.optimizer_settings, self.total_steps(), self._adamw_class())

    def total_steps(self) -> int:
        """Optimizer steps of the whole run: epochs x batches per epoch / accumulation, capped by ``max_steps``.

        Computed from the length of the datamodule's training loader rather than with Lightning's
        ``estimated_stepping_batches``, which starts iterating the loader: under DeepSpeed that happens before a
        checkpoint is restored, and the data position of a resumed run would be lost.

        Raises:
            ValueError: when the run length is unknown (no sized training loader and no ``max_steps``).
        """
        trainer = self.trainer
        # Set by Lightning's data connector at fit time (not declared on the Trainer class).
        datamodule: pl.LightningDataModule | None = trainer.datamodule  # type: ignore[attr-defined]
        if trainer.max_epochs in (None, -1) or datamodule is None:
            estimated = trainer.estimated_stepping_batches
            if math.isinf(estimated):
                raise ValueError("the run length is unknown: set trainer.max_steps or give the data a length")
            return int(estimated)
        batches = len(datamodule.train_dataloader())
        limit = trainer.limit_train_batches
        if limit is not None:
            batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        steps = math.ceil(batches / trainer.accumulate_grad_batches) * max(trainer.max_epochs, 1)
        return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps

    def _adamw_class(self) -> Any:
        if offloads_optimizer(deepspeed_config(self.trainer)):
            # DeepSpeed refuses torch's AdamW with optimizer offload; its CPU Adam runs the step on the host.
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return partial(DeepSpeedCPUAdam, adamw_mode=True)
        return torch.optim.AdamW

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def export_meta(self) -> dict[str, Any]:
        """What an export needs besides the weights: the model config, generation config and the processor's image
        size (which the datamodule may have changed)."""
        base = self.model.get_base_model() if self.lora is not None else self.model
        size = {k: v for k, v in dict(self.processor.image_processor.size).items() if v is not None}
        return {
            "config": base.config.to_dict(),
            "generation_config": base.generation_config.to_dict(),
            "image_size": size,
        }

    def export_model(
        self,
        state: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any],
        out: Path,
        *,
        adapter: bool = False,
        dtype: str | None = None,
    ) -> Path:
        """Write the critic whose weights are ``state`` as a Hugging Face folder (see
        :func:`~firm.tasks.critic_sft.export.write_critic_folder`)."""
        from firm.tasks.critic_sft.export import write_critic_folder

        return write_critic_folder(state, self, meta, out, adapter=adapter, dtype=dtype)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the task's class path and :meth:`export_meta`, so that ``firm export`` can turn the checkpoint into
        a Hugging Face folder."""
        checkpoint[EXPORT_KEY] = export_entry(self)

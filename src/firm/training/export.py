"""From a training checkpoint to a folder that inference loads: the part every task shares.

A task that can be exported implements :class:`Exportable`: :meth:`~Exportable.export_meta` says what a checkpoint
must keep besides the weights (model config, generation config, processor sizes...) and
:meth:`~Exportable.export_model` writes the folder from a state dict and that metadata. Each checkpoint then records
which task wrote it (:func:`export_entry`, stored by the task's ``on_save_checkpoint``), so :func:`export_checkpoint`
rebuilds that task from the checkpoint's hyperparameters and lets it write itself; this module knows no task.

Sources: a Lightning checkpoint file, or a DeepSpeed ZeRO-2/3 checkpoint folder (its partitions are merged into
fp32 weights with DeepSpeed's own ``zero_to_fp32``). Checkpoints are read with ``torch.load(weights_only=False)``,
as Lightning itself resumes them: they hold pickled training state, so export only checkpoints you trust.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["EXPORT_KEY", "Exportable", "export_checkpoint", "export_entry", "read_checkpoint", "task_from_hparams"]

#: The checkpoint entry naming the task that wrote it and its export metadata: ``{"task": path, "meta": {...}}``.
EXPORT_KEY = "firm_export"
#: The entry checkpoints written before EXPORT_KEY existed carry (critic SFT only); read for one more release.
_LEGACY_KEYS = {"firm_critic": "firm.tasks.critic_sft.CriticSFTTask"}


@runtime_checkable
class Exportable(Protocol):
    """A task that writes its trained model as a folder inference loads (a Hugging Face folder for critics)."""

    def export_meta(self) -> dict[str, Any]:
        """What an export needs besides the weights; stored in every checkpoint."""
        ...

    def export_model(
        self,
        state: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any],
        out: Path,
        *,
        adapter: bool = False,
        dtype: str | None = None,
    ) -> Path:
        """Write the model whose weights are ``state`` (this task's state dict) to ``out``; returns ``out``."""
        ...


def export_entry(task: Exportable) -> dict[str, Any]:
    """The checkpoint entry (under :data:`EXPORT_KEY`) that lets :func:`export_checkpoint` find ``task`` again."""
    cls = type(task)
    return {"task": f"{cls.__module__}.{cls.__qualname__}", "meta": task.export_meta()}


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The LightningModule state dict and the rest of a checkpoint (hyperparameters, loops, firm's metadata).

    Args:
        path: a Lightning checkpoint file, or the folder DeepSpeed writes for one (``last.ckpt/``).

    Raises:
        FileNotFoundError: when nothing is at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        return _read_zero_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.pop("state_dict")
    return state, checkpoint


def _read_zero_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint, get_model_state_file
    from lightning.pytorch.utilities.deepspeed import ds_checkpoint_dir

    state = get_fp32_state_dict_from_zero_checkpoint(str(folder))
    tag_dir = ds_checkpoint_dir(str(folder))
    # The module-states file of rank 0 holds Lightning's client state (hyperparameters, loops, datamodule...).
    stage = 3 if any(p.name.startswith("zero_pp_rank_0_mp_rank_00_model") for p in Path(tag_dir).iterdir()) else 2
    client = torch.load(get_model_state_file(tag_dir, stage), map_location="cpu", weights_only=False)
    client.pop("module", None)
    return {key.removeprefix("_forward_module."): value for key, value in state.items()}, client


def task_from_hparams(task_class: type, hparams: Mapping[str, Any]) -> Any:
    """Rebuild the task a checkpoint was trained with from its hyperparameters (tasks build their models lazily, in
    ``configure_model``, so this builds settings and processors, not weights).

    Works for checkpoints written by ``firm fit`` (the hyperparameters are the YAML config) and for tasks built in
    Python (the hyperparameters are the objects themselves).
    """
    hparams = dict(hparams)
    if hparams.pop("_instantiator", None) is not None:
        from lightning.pytorch.cli import instantiate_module

        return instantiate_module(task_class, hparams)
    return task_class(**hparams)


def _task_class(path: str, checkpoint: str | Path) -> type:
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{checkpoint} was written by task {path}, which cannot be imported here: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Exportable)):
        raise ValueError(f"{checkpoint} names {path} as its task, which cannot export a model")
    return cls


def export_checkpoint(checkpoint: str | Path, out: str | Path, adapter: bool = False, dtype: str | None = None) -> Path:
    """Write the model trained in ``checkpoint`` as the folder its task exports (a Hugging Face folder for critics).

    Args:
        checkpoint: a Lightning checkpoint file or DeepSpeed checkpoint folder written by a firm task.
        out: the folder to write.
        adapter: with LoRA, write the adapter instead of merging it.
        dtype: ``float32``, ``bfloat16`` or ``float16``; the checkpoint's own dtype when None.

    Raises:
        ValueError: for a checkpoint no exportable firm task wrote.
    """
    state, rest = read_checkpoint(checkpoint)
    entry = rest.get(EXPORT_KEY)
    if entry is None:
        legacy = next((key for key in _LEGACY_KEYS if key in rest), None)
        if legacy is None:
            raise ValueError(f"{checkpoint} was not written by a firm task that exports a model (no {EXPORT_KEY!r})")
        entry = {"task": _LEGACY_KEYS[legacy], "meta": rest[legacy]}
    task = task_from_hparams(_task_class(str(entry["task"]), checkpoint), rest.get("hyper_parameters", {}))
    exported: Path = task.export_model(state, entry["meta"], Path(out), adapter=adapter, dtype=dtype)
    return exported

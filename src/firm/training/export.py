"""From a training checkpoint to a folder that inference loads: the part every task shares.

A task that can be exported implements :class:`Exportable`: :meth:`~Exportable.export_meta` says what a checkpoint
must keep besides the weights (model config, generation config, processor sizes...) and
:meth:`~Exportable.export_model` writes the folder from a state dict and that metadata. Each checkpoint then records
which task wrote it (:func:`export_entry`, stored by the task's ``on_save_checkpoint``), so :func:`export_checkpoint`
rebuilds that task from the checkpoint's hyperparameters and lets it write itself; this module knows no task.

Sources: a Lightning checkpoint file, or a DeepSpeed ZeRO-2/3 checkpoint folder (its partitions are merged into
fp32 weights with DeepSpeed's own ``zero_to_fp32``).

Nothing is unpickled unless you say so. A checkpoint file is read with ``torch.load(weights_only=True)``: tensors,
plain data and the settings classes firm registers as safe globals load; anything else (a class that would run code
when unpickled) is refused. DeepSpeed's converter has no safe loader, so a ZeRO checkpoint folder is converted only
with ``trust=True`` (``firm export --trust-checkpoint``): do that only for folders you or your cluster wrote. The
task a checkpoint names must be one of firm's own (``firm.*``) unless the checkpoint is trusted.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from firm.errors import InputError

__all__ = [
    "EXPORT_KEY",
    "CheckpointError",
    "Exportable",
    "export_checkpoint",
    "export_entry",
    "read_checkpoint",
    "task_from_hparams",
]

#: The checkpoint entry naming the task that wrote it and its export metadata: ``{"task": path, "meta": {...}}``.
EXPORT_KEY = "firm_export"
#: The entry checkpoints written before EXPORT_KEY existed carry (critic SFT only); read for one more release.
_LEGACY_KEYS = {"firm_critic": "firm.tasks.critic_sft.CriticSFTTask"}


class CheckpointError(InputError):
    """A file or folder that cannot be exported as given: not a checkpoint, not a firm task's, or not trusted."""


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
        """Write the model whose weights are ``state`` (this task's state dict) to ``out``; returns ``out``.

        A task may make this a classmethod when the weights and ``meta`` are all it needs (RL adapters): then
        :func:`export_checkpoint` calls it on the class instead of rebuilding the task from its hyperparameters.
        """
        ...


def export_entry(task: Exportable) -> dict[str, Any]:
    """The checkpoint entry (under :data:`EXPORT_KEY`) that lets :func:`export_checkpoint` find ``task`` again."""
    cls = type(task)
    return {"task": f"{cls.__module__}.{cls.__qualname__}", "meta": task.export_meta()}


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The LightningModule state dict and the rest of a checkpoint (hyperparameters, loops, firm's metadata).

    Args:
        path: a Lightning checkpoint file, or the folder DeepSpeed writes for one (``last.ckpt/``).
        trust: allow unpickling, which a DeepSpeed folder needs (its converter has no safe loader). A file is read
            with ``weights_only=True`` either way.

    Raises:
        FileNotFoundError: when nothing is at ``path``.
        CheckpointError: for a DeepSpeed folder without ``trust``, a file that is not a checkpoint, or one holding
            objects that only unpickling could build.
    """
    path = Path(path)
    if path.is_dir():
        if not trust:
            raise CheckpointError(
                f"{path} is a DeepSpeed checkpoint folder; converting it unpickles its files, which runs any code "
                "they hold. If you trust where it came from, pass --trust-checkpoint (trust=True)"
            )
        return _read_zero_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names a class it refused as an "Unsupported global"; anything else is bytes that are no checkpoint.
        refused = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), None)
        if refused is not None:
            raise CheckpointError(
                f"{path} holds objects that only unpickling could build, and firm does not unpickle checkpoints: "
                f"{refused}"
            ) from None
        raise CheckpointError(f"{path} is not a checkpoint (torch.load cannot read it)") from None
    except Exception as exc:  # arbitrary bytes make torch's loader raise almost anything (KeyError, struct.error...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a checkpoint (torch.load: {first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    state = checkpoint.pop("state_dict")
    return state, checkpoint


def _read_zero_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint, get_model_state_file
    from lightning.pytorch.utilities.deepspeed import ds_checkpoint_dir

    state = get_fp32_state_dict_from_zero_checkpoint(str(folder))
    tag_dir = ds_checkpoint_dir(str(folder))
    # The module-states file of rank 0 holds Lightning's client state (hyperparameters, loops, datamodule...).
    stage = 3 if any(p.name.startswith("zero_pp_rank_0_mp_rank_00_model") for p in Path(tag_dir).iterdir()) else 2
    # Trusted by the caller (see read_checkpoint): DeepSpeed's own files hold pickled optimizer and engine state.
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


def _task_class(path: str, checkpoint: str | Path, trust: bool) -> type:
    if not (trust or path.startswith("firm.")):
        raise CheckpointError(
            f"{checkpoint} names {path} as its task, which is not one of firm's; importing it runs its module's "
            "code. If you trust the checkpoint, pass --trust-checkpoint (trust=True)"
        )
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint} was written by task {path}, which cannot be imported here: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Exportable)):
        raise CheckpointError(f"{checkpoint} names {path} as its task, which cannot export a model")
    return cls


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, adapter: bool = False, dtype: str | None = None, trust: bool = False
) -> Path:
    """Write the model trained in ``checkpoint`` as the folder its task exports (a Hugging Face folder for critics).

    Args:
        checkpoint: a Lightning checkpoint file or DeepSpeed checkpoint folder written by a firm task.
        out: the folder to write.
        adapter: with LoRA, write the adapter instead of merging it.
        dtype: ``float32``, ``bfloat16`` or ``float16``; the checkpoint's own dtype when None.
        trust: allow what only a trusted checkpoint may do: unpickling (DeepSpeed folders) and a task class outside
            firm.

    Raises:
        CheckpointError: for a checkpoint no exportable firm task wrote, or one that needs ``trust``.
    """
    state, rest = read_checkpoint(checkpoint, trust=trust)
    entry = rest.get(EXPORT_KEY)
    if entry is None:
        legacy = next((key for key in _LEGACY_KEYS if key in rest), None)
        if legacy is None:
            raise CheckpointError(
                f"{checkpoint} was not written by a firm task that exports a model (no {EXPORT_KEY!r})"
            )
        entry = {"task": _LEGACY_KEYS[legacy], "meta": rest[legacy]}
    task_class = _task_class(str(entry["task"]), checkpoint, trust)
    if isinstance(inspect.getattr_static(task_class, "export_model"), classmethod):
        exporter: Any = task_class  # needs only the weights and the metadata: no task (and no model) is rebuilt
    else:
        exporter = task_from_hparams(task_class, rest.get("hyper_parameters", {}))
    exported: Path = exporter.export_model(state, entry["meta"], Path(out), adapter=adapter, dtype=dtype)
    return exported

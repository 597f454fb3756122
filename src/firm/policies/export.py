"""A trained policy adapter as diffusers loads it: ``pipeline.load_lora_weights(folder)``.

The RL checkpoint holds the adapters under the task's module names (``policy.transformer.<module>.lora_A.trained
.weight``); :func:`write_lora` keeps the ``trained`` adapter, renames it to peft's layout and writes it with the
pipeline class's own ``save_lora_weights`` (safetensors), together with the adapter's rank, alpha and targets, so
that it loads with the scale it was trained with.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from firm.critics.hf import resolve_dtype
from firm.errors import InputError

__all__ = ["LORA_FILE", "policy_meta", "write_lora", "write_merged"]

#: The file diffusers' ``load_lora_weights`` looks for in a folder.
LORA_FILE = "pytorch_lora_weights.safetensors"
_PREFIX = "policy.transformer."


def policy_meta(pipeline: Any, lora: Any, source: Mapping[str, Any], family: str) -> dict[str, Any]:
    """What a checkpoint keeps to export a policy's adapter: the pipeline class, the LoRA settings, and where the
    base model came from (:attr:`~firm.policies.Policy.source`, for merging)."""
    cls = type(pipeline)
    return {
        "pipeline": f"{cls.__module__}.{cls.__qualname__}",
        "family": family,
        "source": dict(source),
        "lora": {"r": lora.r, "alpha": lora.alpha, "target_modules": list(lora.target_modules)},
    }


def _pipeline_class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    if not module.startswith("diffusers"):
        raise InputError(f"the checkpoint names {path} as its pipeline; only diffusers pipelines are exported")
    return getattr(importlib.import_module(module), name)


def write_lora(state: Mapping[str, torch.Tensor], meta: Mapping[str, Any], out: Path, dtype: str | None = None) -> Path:
    """Write the ``trained`` adapter found in ``state`` to ``out/pytorch_lora_weights.safetensors``.

    Raises:
        InputError: when ``state`` holds no trained adapter, or names a pipeline outside diffusers.
    """
    marker = ".trained."
    weights = {
        key.removeprefix(_PREFIX).replace(marker, "."): value.detach().cpu()
        for key, value in state.items()
        if key.startswith(_PREFIX) and "lora_" in key and marker in key
    }
    if not weights:
        raise InputError("the checkpoint holds no trained policy adapter (no policy.transformer.*.lora_*.trained.*)")
    if dtype is not None:
        torch_dtype = resolve_dtype(dtype, torch.device("cpu"))
        weights = {k: v.to(torch_dtype) for k, v in weights.items()}
    lora = meta["lora"]
    config = {
        "r": int(lora["r"]),
        "lora_alpha": int(lora["alpha"]),
        "target_modules": list(lora["target_modules"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    _pipeline_class(str(meta["pipeline"])).save_lora_weights(
        out, transformer_lora_layers=weights, transformer_lora_adapter_metadata=config, safe_serialization=True
    )
    return out


def write_merged(
    state: Mapping[str, torch.Tensor], meta: Mapping[str, Any], out: Path, dtype: str | None = None
) -> Path:
    """Write the base pipeline with the ``trained`` adapter fused into its transformer, as a diffusers folder that
    ``from_pretrained`` (and the policy's ``model`` setting) loads.

    The base pipeline is rebuilt from what the checkpoint recorded (:attr:`~firm.policies.Policy.source`: the hub
    id or folder, or the tiny model's settings), so it must be reachable from here.

    Raises:
        InputError: for a checkpoint without that record (a policy built from a pipeline object in Python), or a
            family outside ``firm.policies``.
    """
    source = meta.get("source") or {}
    if not source.get("model") and not source.get("tiny"):
        raise InputError(
            "the checkpoint does not say where its base model came from (a policy built from a pipeline object): "
            "export the adapter with --adapter and fuse it with diffusers' load_lora_weights + fuse_lora"
        )
    family = str(meta.get("family", ""))
    if not family.startswith("firm.policies."):
        raise InputError(f"the checkpoint names {family!r} as its policy; only firm's families are rebuilt for merging")
    module, _, name = family.rpartition(".")
    policy = getattr(importlib.import_module(module), name).from_source(source, dtype or "float32")
    pipeline = policy.pipeline
    with tempfile.TemporaryDirectory() as folder:
        write_lora(state, meta, Path(folder))
        pipeline.load_lora_weights(folder)
    pipeline.fuse_lora()
    pipeline.unload_lora_weights()
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out, safe_serialization=True)
    return out

"""From a trained critic to a Hugging Face folder that ``firm score``, transformers and vLLM load directly.

Sources: the live task at the end of a run (:class:`~firm.training.callbacks.HFExport`), a Lightning checkpoint file,
or a DeepSpeed ZeRO-2/3 checkpoint folder (its partitions are merged into fp32 weights with DeepSpeed's own
``zero_to_fp32``). LoRA adapters are merged into the weights by default, or written as a peft adapter folder whose
``base_model_name_or_path`` names the base model (transformers and vLLM's ``--lora-modules`` load that; ``firm score``
needs a merged folder).

Checkpoints are read with ``torch.load(weights_only=False)``, as Lightning itself resumes them: they hold pickled
training state, so export only checkpoints you trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, GenerationConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from firm.critics.hf import resolve_dtype

__all__ = ["export_checkpoint", "export_critic", "read_checkpoint", "task_from_hparams"]

#: The key under which CriticSFTTask stores the model config, generation config and image size in a checkpoint.
META_KEY = "firm_critic"
_MODEL_PREFIX = "model."


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


def task_from_hparams(hparams: Mapping[str, Any]) -> Any:
    """Rebuild the task a checkpoint was trained with (its processor and settings; the model is not built).

    Works for checkpoints written by ``firm fit`` (the hyperparameters are the YAML config) and for tasks built in
    Python (the hyperparameters are the objects themselves).
    """
    from firm.tasks.critic_sft import CriticSFTTask

    hparams = dict(hparams)
    if hparams.pop("_instantiator", None) is not None:
        from lightning.pytorch.cli import instantiate_module

        return instantiate_module(CriticSFTTask, hparams)
    return CriticSFTTask(**hparams)


def export_checkpoint(checkpoint: str | Path, out: str | Path, adapter: bool = False, dtype: str | None = None) -> Path:
    """Write the critic trained in ``checkpoint`` as a Hugging Face folder at ``out``.

    Args:
        checkpoint: a Lightning checkpoint file or DeepSpeed checkpoint folder written by a CriticSFTTask run.
        out: the folder to write.
        adapter: with LoRA, write the adapter instead of merging it.
        dtype: ``float32``, ``bfloat16`` or ``float16``; the checkpoint's own dtype when None.

    Raises:
        ValueError: for a checkpoint without the critic metadata CriticSFTTask stores.
    """
    state, rest = read_checkpoint(checkpoint)
    if META_KEY not in rest:
        raise ValueError(f"{checkpoint} was not written by a CriticSFTTask run (no {META_KEY!r} entry)")
    task = task_from_hparams(rest.get("hyper_parameters", {}))
    return export_critic(state, task, rest[META_KEY], out, adapter=adapter, dtype=dtype)


def export_critic(
    state: Mapping[str, torch.Tensor],
    task: Any,
    meta: Mapping[str, Any],
    out: str | Path,
    adapter: bool = False,
    dtype: str | None = None,
) -> Path:
    """Write a critic as a Hugging Face folder from the task's state dict.

    The model is rebuilt from its config on the meta device and takes the given tensors as they are, so no second
    copy of the weights is ever allocated.

    Args:
        state: the task's state dict (keys ``model.…``; with LoRA, peft's names).
        task: the CriticSFTTask (for its processor and LoRA settings).
        meta: what ``CriticSFTTask.export_meta()`` returns: model config, generation config, image size.
        out: the folder to write.
        adapter: with LoRA, write the adapter (and the processor) instead of merging it.
        dtype: ``float32``, ``bfloat16`` or ``float16``; the state's own dtype when None.

    Raises:
        ValueError: for ``adapter`` without LoRA, or an adapter whose base model exists only in memory.
    """
    out = Path(out)
    if adapter and task.lora is None:
        raise ValueError("adapter=True exports a LoRA adapter, but this critic was fully fine-tuned")
    model_state = {k.removeprefix(_MODEL_PREFIX): v for k, v in state.items() if k.startswith(_MODEL_PREFIX)}
    config = _config_from_dict(meta["config"])
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    if task.lora is not None:
        from firm.tasks.critic_sft import apply_lora

        model = apply_lora(model, task.lora)
    model.load_state_dict(model_state, strict=True, assign=True)
    if dtype is not None:
        model.to(resolve_dtype(dtype, torch.device("cpu")))
    processor = task.processor
    for name, value in meta.get("image_size", {}).items():
        processor.image_processor.size[name] = value
    out.mkdir(parents=True, exist_ok=True)
    if adapter:
        base = task.critic.base_path
        if base is None:
            raise ValueError(
                "this critic's base model exists only in memory (TinyVLM); an adapter needs a base on disk or the "
                "hub, so export it merged (adapter=False)"
            )
        model.peft_config["default"].base_model_name_or_path = base
        model.save_pretrained(out)
    else:
        if task.lora is not None:
            model = model.merge_and_unload()
        model.tie_weights()
        model.generation_config = GenerationConfig.from_dict(dict(meta["generation_config"]))
        model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _config_from_dict(data: Mapping[str, Any]) -> PretrainedConfig:
    data = dict(data)
    config_class = CONFIG_MAPPING[data["model_type"]]
    config: PretrainedConfig = config_class.from_dict(data)
    return config

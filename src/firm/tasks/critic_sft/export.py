"""A trained critic as a Hugging Face folder that ``firm score``, transformers and vLLM load directly.

LoRA adapters are merged into the weights by default, or written as a peft adapter folder whose
``base_model_name_or_path`` names the base model (transformers and vLLM's ``--lora-modules`` load that; ``firm score``
needs a merged folder). :meth:`CriticSFTTask.export_model` calls this; ``firm export`` and the ``HFExport`` callback
reach it through that hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import AutoModelForImageTextToText, GenerationConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from firm.critics.hf import resolve_dtype
from firm.data.shards import atomic_directory
from firm.tasks.critic_sft.source import VLMSource
from firm.training.lora import LoraSettings, apply_lora

__all__ = ["write_critic_folder"]

_MODEL_PREFIX = "model."


class CriticTask(Protocol):
    """What an export reads of :class:`~firm.tasks.critic_sft.CriticSFTTask` (its settings and processor)."""

    critic: VLMSource
    lora: LoraSettings | None
    processor: Any


def write_critic_folder(
    state: Mapping[str, torch.Tensor],
    task: CriticTask,
    meta: Mapping[str, Any],
    out: str | Path,
    adapter: bool = False,
    dtype: str | None = None,
) -> Path:
    """Write a critic as a Hugging Face folder from the task's state dict.

    The model is rebuilt from its config on the meta device and takes the given tensors as they are, so no second
    copy of the weights is ever allocated. The folder is written aside and moved into place when complete, so a
    killed export never leaves a folder that looks whole but is not.

    Args:
        state: the task's state dict (keys ``model.…``; with LoRA, peft's names).
        task: the task (for its processor and LoRA settings).
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
    if adapter and task.critic.base_path is None:
        raise ValueError(
            "this critic's base model exists only in memory (TinyVLM); an adapter needs a base on disk or the "
            "hub, so export it merged (adapter=False)"
        )
    model_state = {k.removeprefix(_MODEL_PREFIX): v for k, v in state.items() if k.startswith(_MODEL_PREFIX)}
    config = _config_from_dict(meta["config"])
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    if task.lora is not None:
        model = apply_lora(model, task.lora)
    model.load_state_dict(model_state, strict=True, assign=True)
    if dtype is not None:
        model.to(resolve_dtype(dtype, torch.device("cpu")))
    processor = task.processor
    for name, value in meta.get("image_size", {}).items():
        processor.image_processor.size[name] = value
    with atomic_directory(out) as folder:
        if adapter:
            model.peft_config["default"].base_model_name_or_path = task.critic.base_path
        else:
            if task.lora is not None:
                model = model.merge_and_unload()
            model.tie_weights()
            model.generation_config = GenerationConfig.from_dict(dict(meta["generation_config"]))
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return out


def _config_from_dict(data: Mapping[str, Any]) -> PretrainedConfig:
    data = dict(data)
    config_class = CONFIG_MAPPING[data["model_type"]]
    config: PretrainedConfig = config_class.from_dict(data)
    return config

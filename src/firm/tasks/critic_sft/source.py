"""Where a trained critic's vision-language model comes from: a hub id or folder, or a tiny one built from a config.

A task receives one of these (YAML picks the ``class_path``) and calls :meth:`VLMSource.build_model` when the
trainer asks it to build the model (inside DeepSpeed's ZeRO-3 partitioning context when that is on).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from transformers import AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin

from firm.critics.hf import load_processor, model_type_of, resolve_dtype
from firm.critics.tiny import CRITIC_FAMILIES, TinySize, build_tiny_critic

__all__ = ["PretrainedVLM", "TinyVLM", "VLMSource"]


class VLMSource(ABC):
    """Builds a critic's model and processor."""

    @abstractmethod
    def build_model(self, deepspeed_config: dict[str, Any] | None = None) -> PreTrainedModel:
        """The model with its starting weights, on the CPU.

        Args:
            deepspeed_config: the DeepSpeed config of the running strategy (None for other strategies). The task
                builds the model inside DeepSpeed's ZeRO-3 partitioning context when the config asks for stage 3.
        """

    @abstractmethod
    def build_processor(self) -> ProcessorMixin:
        """The model's processor (tokenizer, image processor, chat template)."""

    @property
    def base_path(self) -> str | None:
        """Hub id or folder the weights come from, recorded as the base of an exported LoRA adapter; None when the
        model exists only in memory."""
        return None


class PretrainedVLM(VLMSource):
    """A vision-language model from the hub or a local Hugging Face folder (Qwen3-VL, Qwen2.5-VL...).

    Args:
        path: hub id (``Qwen/Qwen3-VL-8B-Instruct``) or local folder.
        dtype: dtype the weights load in: ``float32``, ``bfloat16`` or ``float16``. With mixed precision the
            optimizer keeps fp32 master weights either way; ``bfloat16`` halves the memory of the loaded copy.
        attn_implementation: ``sdpa``, ``flash_attention_2``, ``eager``; transformers' default when None.
        trust_remote_code: run code shipped with the model; off unless you trust its source.
    """

    def __init__(
        self,
        path: str,
        dtype: str = "float32",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        import torch

        self.path = path
        self.dtype = resolve_dtype(dtype, torch.device("cpu"))
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code

    @property
    def base_path(self) -> str | None:
        return self.path

    def build_model(self, deepspeed_config: dict[str, Any] | None = None) -> PreTrainedModel:
        from firm.training.zero import zero3_model_loading

        kwargs: dict[str, object] = {"dtype": self.dtype, "trust_remote_code": self.trust_remote_code}
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        with zero3_model_loading(deepspeed_config):
            model: PreTrainedModel = AutoModelForImageTextToText.from_pretrained(self.path, **kwargs)
        return model

    def build_processor(self) -> ProcessorMixin:
        model_type = model_type_of(self.path, self.trust_remote_code)
        return load_processor(self.path, model_type, trust_remote_code=self.trust_remote_code)


class TinyVLM(VLMSource):
    """A tiny random-weight Qwen-VL critic built from a config (see :mod:`firm.critics.tiny`): CPU tests and the
    debug recipes, no download.

    Args:
        family: ``qwen3_vl`` or ``qwen2_5_vl``.
        seed: seeds the weights.
        max_pixels: the processor's cap on an image's pixel count.
        hidden_size: width of the language model (a multiple of 32).
        layers: language-model layers.
        vision_hidden_size: width of the vision tower (a multiple of 16).
        vision_depth: vision-tower blocks.
        patch_size: pixels per vision patch side (the family's own when None: 16 for Qwen3-VL, 14 for Qwen2.5-VL);
            smaller patches give more visual tokens per image.
    """

    def __init__(
        self,
        family: str = "qwen3_vl",
        seed: int = 0,
        max_pixels: int = 64 * 64,
        hidden_size: int = 64,
        layers: int = 2,
        vision_hidden_size: int = 32,
        vision_depth: int = 2,
        patch_size: int | None = None,
    ) -> None:
        if family not in CRITIC_FAMILIES:
            raise ValueError(f"unknown tiny critic family {family!r}; choose one of {', '.join(CRITIC_FAMILIES)}")
        self.family = family
        self.seed = seed
        self.max_pixels = max_pixels
        TinySize(hidden_size, layers, vision_hidden_size, vision_depth, patch_size)  # checks the sizes now
        # Plain values: checkpoints keep the task's hyperparameters, and torch.load(weights_only=True) reads those.
        self.hidden_size = hidden_size
        self.layers = layers
        self.vision_hidden_size = vision_hidden_size
        self.vision_depth = vision_depth
        self.patch_size = patch_size

    @property
    def size(self) -> TinySize:
        """The :class:`~firm.critics.tiny.TinySize` these settings describe."""
        return TinySize(self.hidden_size, self.layers, self.vision_hidden_size, self.vision_depth, self.patch_size)

    def build_model(self, deepspeed_config: dict[str, Any] | None = None) -> PreTrainedModel:
        from firm.training.zero import outside_zero3_init

        # Built whole (DeepSpeed partitions it when its engine starts), so the weights are the same under every
        # strategy: the same seed gives the same critic with or without ZeRO-3.
        with outside_zero3_init():
            model, _ = build_tiny_critic(self.family, self.seed, self.max_pixels, size=self.size)
        return model

    def build_processor(self) -> ProcessorMixin:
        # Building the tiny model as well costs milliseconds; the processor is made alongside it.
        _, processor = build_tiny_critic(self.family, self.seed, self.max_pixels, size=self.size)
        return processor

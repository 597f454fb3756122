"""Critic SFT examples: a critic sample becomes the chat the critic reads at inference plus its target answer.

:func:`chat_prompt` builds the prompt exactly as the in-process judges do (:mod:`firm.critics.messages`, the dimension's
template, the processor's chat template with the generation prompt), so a trained critic is asked at inference what it
was taught on. :func:`build_sft_example` tokenizes prompt and images with the processor, appends the answer and the
end-of-turn token, and masks the labels so that the loss falls on the answer and end-of-turn tokens only.
:func:`collate_sft` right-pads examples into a batch.

Shapes: T tokens of one example, B examples, L the longest example of a batch, P image patches, D patch features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import ProcessorMixin

from firm.critics.base import JudgeRequest
from firm.critics.messages import build_messages
from firm.data.schema import CriticSample, SampleError
from firm.prompts import PromptTemplate

__all__ = [
    "IGNORE_INDEX",
    "SampleTooLongError",
    "build_sft_example",
    "chat_prompt",
    "collate_sft",
    "request_of",
]

#: Label of a token that carries no loss (PyTorch's cross-entropy ``ignore_index``).
IGNORE_INDEX = -100


class SampleTooLongError(SampleError):
    """A sample whose prompt and answer together exceed ``max_length`` tokens (``kind`` ``too_long``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem, kind="too_long")


def request_of(sample: CriticSample) -> JudgeRequest:
    """The judge request a critic receives for ``sample`` at inference."""
    return JudgeRequest(sample.dimension, sample.text, sample.image, sample.source)


def chat_prompt(processor: ProcessorMixin, request: JudgeRequest, template: PromptTemplate) -> str:
    """The prompt text the in-process judges give the model: chat template with the generation prompt.

    Identical to :meth:`firm.critics.inprocess.InProcessCritic.chat_text` for a judge using ``template``.
    """
    messages = build_messages(request, template.render(request.text, request.requirement))
    text: str = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text


def build_sft_example(
    processor: ProcessorMixin,
    sample: CriticSample,
    template: PromptTemplate,
    max_length: int | None = None,
    prompt: str | None = None,
) -> dict[str, torch.Tensor]:
    """One training example: the prompt's tokens and pixels, then the answer and end-of-turn tokens.

    The prompt is tokenized by the processor with the images (so image placeholders expand as at inference); the
    answer is tokenized on its own and followed by the tokenizer's end-of-sequence token, the end-of-turn token of
    Qwen chat models (``<|im_end|>``), so the critic learns to stop.

    Args:
        processor: the critic's processor (tokenizer, image processor, chat template).
        sample: the critic sample; its ``answer`` is the target.
        template: the prompt template of the sample's dimension.
        max_length: longest allowed example in tokens; None for no limit.
        prompt: the sample's :func:`chat_prompt`, when the caller already has it.

    Returns:
        ``input_ids``, ``attention_mask``, ``labels`` (``IGNORE_INDEX`` except on the answer and end-of-turn tokens)
        and the processor's other per-token tensors (``mm_token_type_ids``) as 1-D [T] tensors; the per-image tensors
        (``pixel_values`` [P, D], ``image_grid_thw``) as the processor returns them.

    Raises:
        SampleTooLongError: when the example is longer than ``max_length`` (images cannot be cut).
        ValueError: when the tokenizer has no end-of-sequence token.
    """
    tokenizer = processor.tokenizer
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; SFT targets end with it so that the critic learns to stop")
    request = request_of(sample)
    text = chat_prompt(processor, request, template) if prompt is None else prompt
    encoded = processor(text=[text], images=[request.images], return_tensors="pt")
    prompt_ids_T = encoded["input_ids"][0]
    answer_ids = [*tokenizer(sample.answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    answer_ids_T = torch.tensor(answer_ids, dtype=prompt_ids_T.dtype)
    length = prompt_ids_T.numel() + answer_ids_T.numel()
    if max_length is not None and length > max_length:
        raise SampleTooLongError(sample.key, f"{length} tokens, more than max_length={max_length}")
    example: dict[str, torch.Tensor] = {
        "input_ids": torch.cat([prompt_ids_T, answer_ids_T]),
        "labels": torch.cat([torch.full_like(prompt_ids_T, IGNORE_INDEX), answer_ids_T]),
    }
    seq_shape = encoded["input_ids"].shape
    for name, value in encoded.items():
        if name == "input_ids" or not isinstance(value, torch.Tensor):
            continue
        if value.shape == seq_shape:
            # Per-token tensors (attention mask, multimodal token types) continue over the answer: text, attended.
            fill = 1 if name == "attention_mask" else 0
            example[name] = torch.cat([value[0], torch.full_like(answer_ids_T, fill, dtype=value.dtype)])
        else:
            example[name] = value
    return example


def collate_sft(examples: Sequence[Mapping[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad 1-D per-token tensors to [B, L] and concatenate per-image tensors along their first dimension.

    Padding is ``pad_token_id`` for ``input_ids``, ``IGNORE_INDEX`` for ``labels`` and 0 for everything else (so the
    attention mask is 0 on padding).

    Raises:
        ValueError: for an empty batch or examples with different tensor names.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    names = list(examples[0])
    for example in examples[1:]:
        if list(example) != names:
            raise ValueError(f"examples hold different tensors: {names} and {list(example)}")
    longest = max(int(example["input_ids"].numel()) for example in examples)
    batch: dict[str, torch.Tensor] = {}
    for name in names:
        if examples[0][name].dim() == 1:
            fill = pad_token_id if name == "input_ids" else IGNORE_INDEX if name == "labels" else 0
            padded_BL = torch.full((len(examples), longest), fill, dtype=examples[0][name].dtype)
            for i, example in enumerate(examples):
                padded_BL[i, : example[name].numel()] = example[name]
            batch[name] = padded_BL
        else:
            batch[name] = torch.cat([example[name] for example in examples])
    return batch

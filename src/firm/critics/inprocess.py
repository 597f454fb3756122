"""What the in-process critics share: a Hugging Face VLM held in this process, templates, batching and inputs.

:class:`InProcessCritic` loads a vision-language model (Qwen2.5-VL, Qwen3-VL, through their real classes and chat
templates) from a hub id or a local folder, or wraps one already built (:meth:`InProcessCritic.from_model`). It
groups requests by dimension, cuts each group into batches and turns a batch into model inputs: the shared chat
messages (images first, source before edited), the model's chat template with the generation prompt, and the
processor's tensors, *left* padded so that every row's last position is its last prompt token. Subclasses say what
one batch becomes: :class:`~firm.critics.transformers.GenerativeJudge` generates and parses an answer,
:class:`~firm.critics.score_token.ScoreTokenJudge` reads the score-token probabilities of one forward pass.

Shapes: B requests in a batch, T prompt tokens, N new tokens, V vocabulary, S scores in the range.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm
from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

from firm.critics.base import DIMENSIONS, FIRM_RANGE, Critic, JudgeRequest, ScoreRange, Verdict, task_of
from firm.critics.hf import load_vlm
from firm.critics.messages import build_messages
from firm.prompts import PromptTemplate, default_template, load_template

_C = TypeVar("_C", bound="InProcessCritic")

#: The loading settings and their defaults; they cannot apply to a model that :meth:`from_model` wraps.
LOAD_DEFAULTS: dict[str, object] = {
    "max_pixels": None,
    "device": "auto",
    "dtype": "auto",
    "attn_implementation": None,
    "trust_remote_code": False,
}


class InProcessCritic(Critic):
    """Base of the critics that run a transformers VLM in this process.

    Args:
        model: a hub id (``Qwen/Qwen3-VL-8B-Instruct``, ``VisionXLab/FIRM-Edit-8B``) or a local Hugging Face folder.
            Subclasses also pass the ``(model, processor)`` pair of :meth:`from_model` through here.
        templates: dimension -> built-in template name or template file; dimensions not listed use firm's default.
        batch_size: requests per forward pass (or per ``generate`` call).
        max_pixels: cap on an image's pixel count after the processor's resize (fewer visual tokens); the
            processor's own setting when None.
        device: ``auto`` (first CUDA device, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        attn_implementation: ``sdpa``, ``flash_attention_2``, ``eager``; transformers' default when None.
        trust_remote_code: run code shipped with the model; off unless you trust its source.
        score_range: the integer scale the critic answers on; FIRM's 1-5 by default.
        progress: show a progress bar over the requests of a :meth:`judge` call.

    Raises:
        ValueError: for ``batch_size < 1``, a template for an unknown dimension, or a loading setting given with a
            model that is already built.
    """

    transport_settings = frozenset({"progress"})

    def __init__(
        self,
        model: str | tuple[PreTrainedModel, ProcessorMixin],
        *,
        templates: dict[str, str] | None = None,
        batch_size: int = 16,
        max_pixels: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        score_range: ScoreRange = FIRM_RANGE,
        progress: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        # Every template is read before the model loads, so a wrong name or a broken file fails in a second.
        chosen = templates or {}
        for dimension in chosen:
            task_of(dimension)
        self.templates: dict[str, PromptTemplate] = {
            dim: load_template(chosen[dim]) if dim in chosen else default_template(dim) for dim in DIMENSIONS
        }
        loading: dict[str, Any] = {
            "max_pixels": max_pixels,
            "device": device,
            "dtype": dtype,
            "attn_implementation": attn_implementation,
            "trust_remote_code": trust_remote_code,
        }
        if isinstance(model, str):
            self.model, self.processor = load_vlm(model, **loading)
        else:
            changed = sorted(name for name, value in loading.items() if value != LOAD_DEFAULTS[name])
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} configure loading and cannot apply to a model passed to from_model; "
                    "set them on the model and processor you pass"
                )
            self.model, self.processor = model
        self.batch_size = batch_size
        self.score_range = score_range
        self.progress = progress

    @classmethod
    def from_model(cls: type[_C], model: PreTrainedModel, processor: ProcessorMixin, **settings: Any) -> _C:
        """Wrap a model and processor that are already built (a tiny test critic, a critic being trained).

        The model is used as it is: its device, dtype and mode are the caller's (call ``model.eval()`` first).

        Args:
            model: a transformers vision-language model with ``generate``.
            processor: its processor (tokenizer, image processor and chat template).
            **settings: the class's other ``__init__`` arguments, except the loading ones (``device``, ``dtype``,
                ``max_pixels``, ``attn_implementation``, ``trust_remote_code``).

        Example:
            >>> model, processor = build_tiny_critic("qwen3_vl")
            >>> judge = GenerativeJudge.from_model(model, processor, max_new_tokens=16)
        """
        return cls(model=(model, processor), **settings)

    @property
    def device(self) -> torch.device:
        """Where the model's inputs go."""
        device: torch.device = self.model.device
        return device

    def template(self, dimension: str) -> PromptTemplate:
        """The template used for ``dimension``.

        Raises:
            ValueError: for an unknown dimension.
        """
        task_of(dimension)
        return self.templates[dimension]

    def question(self, request: JudgeRequest) -> str:
        """The text of the user turn: the dimension's template rendered for ``request``."""
        return self.template(request.dimension).render(request.text, request.requirement)

    def answer_prefix_for(self, request: JudgeRequest) -> str:
        """Text placed after the generation prompt, as if the critic had already written it; none by default."""
        return ""

    def chat_text(self, request: JudgeRequest) -> str:
        """The full prompt string the model reads: chat template with the generation prompt, plus the prefix."""
        messages = build_messages(request, self.question(request))
        text: str = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + self.answer_prefix_for(request)

    def encode(self, requests: Sequence[JudgeRequest], texts: Sequence[str] | None = None) -> BatchFeature:
        """Model inputs for a batch, left padded, on the model's device, floats in the model's dtype.

        Everything the processor returns is kept (``input_ids``, ``attention_mask``, ``pixel_values``,
        ``image_grid_thw``, ``mm_token_type_ids``...): the model's forward needs all of it.

        Args:
            requests: the batch.
            texts: their :meth:`chat_text`, when the caller already has it.
        """
        texts = [self.chat_text(r) for r in requests] if texts is None else list(texts)
        # padding_side per call rather than on the tokenizer: a processor shared with a training loop keeps its own.
        inputs = self.processor(
            text=texts, images=[r.images for r in requests], padding=True, padding_side="left", return_tensors="pt"
        )
        batch: BatchFeature = inputs.to(device=self.device, dtype=self.model.dtype)
        return batch

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """Judge every request, ``batch_size`` at a time within each dimension; verdicts come back in input order."""
        texts = [self.chat_text(r) for r in requests]
        verdicts: list[Verdict | None] = [None] * len(requests)
        with torch.inference_mode(), tqdm(total=len(requests), disable=not self.progress, desc="judging") as bar:
            for dimension, index in self._batches(requests, texts):
                batch = [requests[i] for i in index]
                for i, verdict in zip(
                    index, self.judge_batch(dimension, batch, [texts[i] for i in index]), strict=True
                ):
                    verdicts[i] = verdict
                bar.update(len(index))
        assert all(v is not None for v in verdicts), "every request gets a verdict"
        return [v for v in verdicts if v is not None]

    @abstractmethod
    def judge_batch(self, dimension: str, requests: Sequence[JudgeRequest], texts: Sequence[str]) -> list[Verdict]:
        """Judge one batch of requests of one dimension, whose chat texts are ``texts``; verdicts in batch order."""

    def _batches(self, requests: Sequence[JudgeRequest], texts: Sequence[str]) -> list[tuple[str, list[int]]]:
        """Indices of ``requests`` cut into batches of one dimension each.

        Within a dimension requests are sorted longest first (image pixels, then prompt length), so rows of similar
        length share a batch and less compute goes into padding. Greedy results do not depend on a row's batch.
        """
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.dimension, []).append(i)
        batches = []
        for dimension, index in groups.items():
            index.sort(
                key=lambda i: (sum(im.width * im.height for im in requests[i].images), len(texts[i])), reverse=True
            )
            batches += [(dimension, index[k : k + self.batch_size]) for k in range(0, len(index), self.batch_size)]
        return batches

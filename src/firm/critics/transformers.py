"""Critics that run a transformers vision-language model in this process (Qwen2.5-VL, Qwen3-VL).

- :class:`GenerativeJudge` writes an answer (greedy, batched) and reads the score from the text, as FIRM's critics
  are used. The default critic.
- :class:`~firm.critics.score_token.ScoreTokenJudge` reads the probabilities of the score tokens at the first answer
  position of one forward pass (the Edit-R1 style reward); re-exported here.

Both take a hub id or a local Hugging Face folder, or wrap a model already built with ``from_model``.

Example:
    >>> judge = GenerativeJudge("VisionXLab/FIRM-Edit-8B", max_pixels=1024 * 1024)  # doctest: +SKIP
    >>> judge.judge([JudgeRequest("execution", "add a red hat", edited, source=original)])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from firm.critics.base import FIRM_RANGE, JudgeRequest, ScoreRange, Verdict, task_of
from firm.critics.inprocess import InProcessCritic
from firm.critics.parsing import parse_verdict
from firm.critics.score_token import ScoreTokenJudge

__all__ = ["DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION", "GenerativeJudge", "ScoreTokenJudge"]

#: Token budgets that differ from ``max_new_tokens`` by default: instruction answers check the prompt requirement by
#: requirement before the rating, and run far longer than the edit critics' short JSON (FIRM: up to about 1-2K).
DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION: dict[str, int] = {"instruction": 1024}

# Settings the judge owns; letting generation_kwargs override them would break greedy decoding or the token budget.
_RESERVED_GENERATION_KWARGS = ("do_sample", "max_new_tokens", "max_length")


class GenerativeJudge(InProcessCritic):
    """A generative judge: the VLM writes its answer greedily and :func:`~firm.critics.parsing.parse_verdict` reads it.

    Requests are grouped by dimension and generated ``batch_size`` at a time, left padded, with ``do_sample=False``.
    Other generation settings come from the model's ``generation_config`` (e.g. a ``repetition_penalty`` it ships
    with), as vLLM applies them too; ``generation_kwargs`` overrides them. Only the new tokens are decoded, special
    tokens skipped. Every verdict keeps that text in ``raw``. An answer still unfinished at its token budget is parsed
    all the same; when it gives no score, its invalid reason says that the budget cut it.

    Args:
        model: a hub id (``VisionXLab/FIRM-Edit-8B``) or a local Hugging Face folder.
        templates: dimension -> built-in template name or template file; dimensions not listed use firm's default.
        max_new_tokens: token budget of an answer, for every dimension not in ``max_new_tokens_per_dimension``.
        max_new_tokens_per_dimension: per-dimension budgets that take precedence over ``max_new_tokens``. None
            means firm's defaults, :data:`DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION` (instruction: 1024); ``{}`` means
            ``max_new_tokens`` everywhere.
        generation_kwargs: extra arguments for ``generate`` (``repetition_penalty``, ``min_new_tokens``...);
            sampling and the token budget are set by the judge and cannot be given here.
        batch_size: requests per ``generate`` call.
        max_pixels: cap on an image's pixel count after the processor's resize; the processor's own when None.
        device: ``auto`` (first CUDA device, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        attn_implementation: ``sdpa``, ``flash_attention_2``, ``eager``; transformers' default when None.
        trust_remote_code: run code shipped with the model; off unless you trust its source.
        score_range: the integer scale the critic answers on; FIRM's 1-5 by default.
        progress: show a progress bar over the requests of a :meth:`judge` call.

    Raises:
        ValueError: for a token budget below 1, a budget or template for an unknown dimension, a reserved key in
            ``generation_kwargs``, or a tokenizer without a pad token.
    """

    def __init__(
        self,
        model: str,
        templates: dict[str, str] | None = None,
        max_new_tokens: int = 256,
        max_new_tokens_per_dimension: dict[str, int] | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        batch_size: int = 16,
        max_pixels: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        score_range: ScoreRange = FIRM_RANGE,
        progress: bool = False,
    ) -> None:
        per_dimension = (
            dict(DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION)
            if max_new_tokens_per_dimension is None
            else dict(max_new_tokens_per_dimension)
        )
        for dimension in per_dimension:
            task_of(dimension)
        if max_new_tokens < 1 or any(budget < 1 for budget in per_dimension.values()):
            raise ValueError(
                f"token budgets must be at least 1, got max_new_tokens={max_new_tokens}, "
                f"max_new_tokens_per_dimension={per_dimension}"
            )
        reserved = sorted(set(generation_kwargs or {}) & set(_RESERVED_GENERATION_KWARGS))
        if reserved:
            raise ValueError(
                f"generation_kwargs cannot set {', '.join(reserved)}: the judge decodes greedily; "
                "use max_new_tokens / max_new_tokens_per_dimension for the token budget"
            )
        super().__init__(
            model,
            templates=templates,
            batch_size=batch_size,
            max_pixels=max_pixels,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            score_range=score_range,
            progress=progress,
        )
        self.max_new_tokens = max_new_tokens
        self.max_new_tokens_per_dimension = per_dimension
        self.generation_kwargs = dict(generation_kwargs or {})
        tokenizer = self.processor.tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; batched generation needs one (set tokenizer.pad_token)")
        self.pad_token_id: int = tokenizer.pad_token_id
        eos = self.model.generation_config.eos_token_id
        eos = tokenizer.eos_token_id if eos is None else eos
        #: Tokens that end an answer; an answer without one that fills its budget was cut off.
        self.eos_token_ids: frozenset[int] = frozenset([eos] if isinstance(eos, int) else eos)

    def max_new_tokens_for(self, dimension: str) -> int:
        """The token budget of an answer about ``dimension``."""
        return self.max_new_tokens_per_dimension.get(dimension, self.max_new_tokens)

    def judge_batch(self, dimension: str, requests: Sequence[JudgeRequest], texts: Sequence[str]) -> list[Verdict]:
        """Generate answers for one batch of one dimension and parse them; verdicts in batch order."""
        budget = self.max_new_tokens_for(dimension)
        new_BN = self.answer_tokens(requests, budget, texts)
        answers = self.processor.tokenizer.batch_decode(new_BN, skip_special_tokens=True)
        return [self._verdict(dimension, answer, ids, budget) for answer, ids in zip(answers, new_BN, strict=True)]

    def answer_tokens(
        self, requests: Sequence[JudgeRequest], max_new_tokens: int, texts: Sequence[str] | None = None
    ) -> list[list[int]]:
        """The generated token ids of each request's answer, in one ``generate`` call.

        Rows that stop early are padded to the longest answer with the pad token (or end with an end token).

        Args:
            requests: one batch.
            max_new_tokens: the token budget.
            texts: the requests' :meth:`chat_text`, when the caller already has it.
        """
        inputs = self.encode(requests, texts)
        with torch.inference_mode():
            out_BL = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_token_id,
                **self.generation_kwargs,
            )
        # Left padding puts every prompt's end at column T, so the new tokens of each row start there.
        new_BN: list[list[int]] = out_BL[:, inputs["input_ids"].shape[1] :].tolist()
        return new_BN

    def _verdict(self, dimension: str, answer: str, ids: list[int], budget: int) -> Verdict:
        verdict = parse_verdict(answer, dimension, self.score_range)
        cut_off = len(ids) >= budget and self.eos_token_ids.isdisjoint(ids)
        if cut_off and verdict.invalid_reason is not None:
            reason = f"{verdict.invalid_reason} (answer cut at max_new_tokens={budget})"
            verdict = dataclasses.replace(verdict, invalid_reason=reason)
        return verdict

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

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from firm.critics.base import FIRM_RANGE, JudgeRequest, ScoreRange, Verdict, task_of
from firm.critics.inprocess import InProcessCritic
from firm.critics.parsing import parse_verdict
from firm.critics.score_token import ScoreTokenJudge

__all__ = ["DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION", "GenerativeJudge", "ScoreTokenJudge", "average_verdicts"]

#: Token budgets that differ from ``max_new_tokens`` by default: instruction answers check the prompt requirement by
#: requirement before the rating, and run far longer than the edit critics' short JSON (FIRM: up to about 1-2K).
DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION: dict[str, int] = {"instruction": 1024}

# Settings the judge owns; letting generation_kwargs override them would break greedy decoding or the token budget.
_RESERVED_GENERATION_KWARGS = (
    "do_sample", "max_new_tokens", "max_length", "num_return_sequences", "temperature", "top_k", "top_p",
)  # fmt: skip


def average_verdicts(verdicts: Sequence[Verdict], score_range: ScoreRange = FIRM_RANGE) -> Verdict:
    """One verdict from several sampled answers to the same request: the mean of their valid scores.

    ``expected`` is the mean, ``score`` the mean rounded half up, ``distribution`` the share of valid answers giving
    each score of the range. Reasoning, raw text and sub-scores are those of the valid answer whose score is
    closest to the mean (the first such). Invalid answers are left out; when no answer is valid the verdict is
    invalid, with the first answer's reason.
    """
    valid = [v for v in verdicts if v.score is not None]
    if not valid:
        first = verdicts[0]
        reason = f"none of the {len(verdicts)} sampled answers gave a score; the first: {first.invalid_reason}"
        return dataclasses.replace(first, invalid_reason=reason)
    scores = [v.score for v in valid if v.score is not None]  # all of them; the check is for the type checker
    mean = sum(scores) / len(scores)
    score = min(max(math.floor(mean + 0.5), score_range.low), score_range.high)
    chosen = min(valid, key=lambda v: abs((v.score or 0) - mean))
    counts = [scores.count(s) / len(scores) for s in range(score_range.low, score_range.high + 1)]
    return dataclasses.replace(
        chosen,
        score=score,
        expected=mean,
        distribution=tuple(counts),
        sub_scores=chosen.sub_scores if chosen.score == score else None,
    )


class GenerativeJudge(InProcessCritic):
    """A generative judge: the VLM writes its answer greedily and :func:`~firm.critics.parsing.parse_verdict` reads it.

    Requests are grouped by dimension and generated ``batch_size`` at a time, left padded, with ``do_sample=False``.
    With ``samples`` above 1 the judge instead samples that many answers per request (at ``temperature``, top-k and
    top-p off, seeded) and returns their average (:func:`average_verdicts`), as EditScore's avg@n does: the score is
    the rounded mean, ``expected`` the mean, ``distribution`` the share of each score.
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
        samples: answers per request; 1 (the default) decodes greedily, more samples and averages.
        temperature: sampling temperature when ``samples`` > 1.
        seed: seeds the sampling of each ``generate`` call (the same requests in the same batches give the same
            verdicts); the global random state is left as it was.

    Raises:
        ValueError: for a token budget below 1, a budget or template for an unknown dimension, a reserved key in
            ``generation_kwargs``, ``samples`` below 1, a temperature that is not positive, or a tokenizer without
            a pad token.
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
        samples: int = 1,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        if samples < 1 or not temperature > 0:
            raise ValueError(f"need samples >= 1 and temperature > 0, got samples={samples}, temperature={temperature}")
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
                f"generation_kwargs cannot set {', '.join(reserved)}: the judge decodes greedily (or samples with "
                "samples= and temperature=); use max_new_tokens / max_new_tokens_per_dimension for the token budget"
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
        self.samples = samples
        self.temperature = temperature
        self.seed = seed
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
        verdicts = [self._verdict(dimension, answer, ids, budget) for answer, ids in zip(answers, new_BN, strict=True)]
        if self.samples == 1:
            return verdicts
        # generate returns the samples of each request next to each other.
        n = self.samples
        return [average_verdicts(verdicts[i * n : (i + 1) * n], self.score_range) for i in range(len(requests))]

    def answer_tokens(
        self, requests: Sequence[JudgeRequest], max_new_tokens: int, texts: Sequence[str] | None = None
    ) -> list[list[int]]:
        """The generated token ids of each request's answer, in one ``generate`` call.

        Rows that stop early are padded to the longest answer with the pad token (or end with an end token). With
        ``samples`` > 1 there are that many rows per request, a request's samples next to each other.

        Args:
            requests: one batch.
            max_new_tokens: the token budget.
            texts: the requests' :meth:`chat_text`, when the caller already has it.
        """
        inputs = self.encode(requests, texts)
        decoding: dict[str, Any] = {"do_sample": False}
        if self.samples > 1:
            decoding = {
                "do_sample": True, "num_return_sequences": self.samples, "temperature": self.temperature,
                "top_k": 0, "top_p": 1.0,
            }  # fmt: skip
        with torch.inference_mode(), self._seeded() if self.samples > 1 else contextlib.nullcontext():
            out_BL = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_token_id,
                **decoding,
                **self.generation_kwargs,
            )
        # Left padding puts every prompt's end at column T, so the new tokens of each row start there.
        new_BN: list[list[int]] = out_BL[:, inputs["input_ids"].shape[1] :].tolist()
        return new_BN

    @contextlib.contextmanager
    def _seeded(self) -> Iterator[None]:
        """Sampling seeded with ``seed``; the global random state is restored afterwards (greedy needs neither)."""
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            yield

    def _verdict(self, dimension: str, answer: str, ids: list[int], budget: int) -> Verdict:
        verdict = parse_verdict(answer, dimension, self.score_range)
        cut_off = len(ids) >= budget and self.eos_token_ids.isdisjoint(ids)
        if cut_off and verdict.invalid_reason is not None:
            reason = f"{verdict.invalid_reason} (answer cut at max_new_tokens={budget})"
            verdict = dataclasses.replace(verdict, invalid_reason=reason)
        return verdict

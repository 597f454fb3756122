"""The score-token judge: one forward pass, the probabilities of the score tokens at the first answer position.

This is the reward of Edit-R1 and similar work: instead of generating an answer, read the logits where the critic
would write its first answer token, keep those of the tokens ``"1"`` ... ``"5"``, and take the expected score under
their softmax. It is cheap and continuous, but FIRM found it a noisier reward than the generated score, so it is an
option, not the default.

Asking for the bare score: the dimension's template is rendered as usual and ``score_instruction`` (our own short
sentence, see :data:`DEFAULT_SCORE_INSTRUCTION`) is appended to the user turn, so that an instruction-tuned model
answers with the score first. A model trained to write something else before its score can be led there instead with
``answer_prefix``, text forced after the generation prompt as if the critic had written it (e.g. ``{"score": [``
for a JSON answer), with ``score_instruction=""``.

Shapes: B requests in a batch, V vocabulary, S scores in the range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from firm.critics.base import FIRM_RANGE, JudgeRequest, ScoreRange, Verdict
from firm.critics.inprocess import InProcessCritic
from firm.critics.parsing import NO_SCORE

__all__ = ["DEFAULT_SCORE_INSTRUCTION", "ScoreTokenJudge", "score_distribution", "score_token_ids"]

#: Appended to the rendered template; ``{low}`` and ``{high}`` become the ends of the score range.
DEFAULT_SCORE_INSTRUCTION = (
    "Do not write the reasoning or the answer format asked for above. "
    "Reply with the score alone: one whole number from {low} to {high}."
)


def score_token_ids(tokenizer: PreTrainedTokenizerBase, score_range: ScoreRange) -> list[int]:
    """The token id of each score, low to high.

    Raises:
        ValueError: naming the first score whose text is not exactly one token (``"10"`` in most tokenizers).
    """
    ids = []
    for score in range(score_range.low, score_range.high + 1):
        encoded = tokenizer.encode(str(score), add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(
                f"score {score} of the range {score_range.low}-{score_range.high} is {len(encoded)} tokens "
                f"({encoded}) in this tokenizer; the score-token judge reads one token per score, so use a range "
                "whose scores are single tokens (such as 1-5 or 0-9), or the generative judge"
            )
        ids.append(encoded[0])
    return ids


def score_distribution(logits_BV: torch.Tensor, token_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of the score tokens, renormalised over them, and the probability mass they had before.

    Args:
        logits_BV: next-token logits.
        token_ids: the score tokens, low to high.

    Returns:
        ``probs_BS`` (rows sum to 1) and ``mass_B``, the share of the full softmax that the score tokens hold.
    """
    logits_BV = logits_BV.float()
    score_logits_BS = logits_BV[:, list(token_ids)]
    # Both in log space, so a model that gives the digits almost nothing still yields a finite distribution.
    mass_B = (score_logits_BS.logsumexp(-1) - logits_BV.logsumexp(-1)).exp()
    return score_logits_BS.softmax(-1), mass_B


class ScoreTokenJudge(InProcessCritic):
    """Scores from the score-token probabilities at the first answer position (one forward pass per batch).

    The verdict's ``score`` is the most likely score, ``distribution`` the probabilities of the scores low to high
    (renormalised over the score tokens), ``expected`` the mean score under it. ``reasoning`` records the probability
    mass the score tokens had before renormalising (``"digit mass 0.93"``) and ``raw`` the single token the model
    found most likely, over the whole vocabulary. A verdict whose digit mass is below ``min_digit_mass`` is invalid:
    the model was not about to write a score. Quality gets one overall score, without sub-scores.

    Args:
        model: a hub id or a local Hugging Face folder.
        templates: dimension -> built-in template name or template file; dimensions not listed use firm's default.
        score_instruction: appended to the rendered template (after a blank line); ``{low}`` and ``{high}`` become
            the ends of ``score_range``; ``""`` appends nothing.
        answer_prefix: text forced after the generation prompt; the score is read at the position after it. It
            should not end with a space: tokenizers such as Qwen's write the space and the digit as two tokens.
        min_digit_mass: verdicts whose score tokens hold less of the probability are invalid, with the mass in the
            reason. The default, 0.5, asks that the critic was more likely to write a score than anything else; an
            untrained or random model falls far below it (about 5/vocabulary size). 0 accepts every verdict.
        batch_size: requests per forward pass.
        max_pixels: cap on an image's pixel count after the processor's resize; the processor's own when None.
        device: ``auto`` (first CUDA device, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        attn_implementation: ``sdpa``, ``flash_attention_2``, ``eager``; transformers' default when None.
        trust_remote_code: run code shipped with the model; off unless you trust its source.
        score_range: the integer scale; every score must be a single token (see :func:`score_token_ids`).
        progress: show a progress bar over the requests of a :meth:`judge` call.

    Raises:
        ValueError: for ``min_digit_mass`` outside [0, 1], a score that is not a single token, or the settings
            :class:`~firm.critics.inprocess.InProcessCritic` rejects.
    """

    def __init__(
        self,
        model: str,
        templates: dict[str, str] | None = None,
        score_instruction: str = DEFAULT_SCORE_INSTRUCTION,
        answer_prefix: str = "",
        min_digit_mass: float = 0.5,
        batch_size: int = 16,
        max_pixels: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        score_range: ScoreRange = FIRM_RANGE,
        progress: bool = False,
    ) -> None:
        if not 0.0 <= min_digit_mass <= 1.0:
            raise ValueError(f"min_digit_mass is a probability in [0, 1], got {min_digit_mass}")
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
        low, high = str(score_range.low), str(score_range.high)
        self.score_instruction = score_instruction.replace("{low}", low).replace("{high}", high)
        self.answer_prefix = answer_prefix
        self.min_digit_mass = min_digit_mass
        self.score_token_ids = score_token_ids(self.processor.tokenizer, score_range)

    def question(self, request: JudgeRequest) -> str:
        """The rendered template with the score instruction appended."""
        question = super().question(request)
        return f"{question.rstrip()}\n\n{self.score_instruction}" if self.score_instruction else question

    def answer_prefix_for(self, request: JudgeRequest) -> str:
        """The configured ``answer_prefix``, the same for every request."""
        return self.answer_prefix

    def judge_batch(self, dimension: str, requests: Sequence[JudgeRequest], texts: Sequence[str]) -> list[Verdict]:
        """One forward pass over the batch; a verdict per row from its last position's logits."""
        inputs = self.encode(requests, texts)
        # Left padding: the last column is every row's last prompt token, whose logits predict the first answer token.
        with torch.inference_mode():
            logits_BV = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
            probs_BS, mass_B = score_distribution(logits_BV, self.score_token_ids)
        top_tokens = self.processor.tokenizer.batch_decode(logits_BV.argmax(-1)[:, None].tolist())
        return [
            self._verdict(dimension, probs, mass, top)
            for probs, mass, top in zip(probs_BS.tolist(), mass_B.tolist(), top_tokens, strict=True)
        ]

    def _verdict(self, dimension: str, probs: list[float], mass: float, top_token: str) -> Verdict:
        reasoning = f"digit mass {mass:.3g}"
        if mass < self.min_digit_mass:
            reason = (
                f"{NO_SCORE}: the score tokens hold {mass:.3g} of the probability, below "
                f"min_digit_mass={self.min_digit_mass}; the critic would write {top_token!r}"
            )
            return Verdict.invalid(dimension, reason, raw=top_token, reasoning=reasoning)
        scores = range(self.score_range.low, self.score_range.high + 1)
        best = max(range(len(probs)), key=probs.__getitem__)
        return Verdict(
            dimension=dimension,
            score=scores[best],
            reasoning=reasoning,
            raw=top_token,
            distribution=tuple(probs),
            expected=sum(p * s for p, s in zip(probs, scores, strict=True)),
        )

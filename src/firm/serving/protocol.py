"""The wire protocol of ``firm serve``: routes, request bodies, limits, image decoding and error answers.

Everything travels as JSON; images as base64 PNG or JPEG (a bare base64 string or a ``data:image/...;base64,`` URL).
Nothing is ever unpickled. Every refusal is an HTTP 4xx whose body names the problem in OpenAI's error shape,
``{"error": {"message": ..., "type": ..., "code": ...}}``, so OpenAI clients and firm's own backends read it alike.

Request ``POST /v1/judge``::

    {"items": [{"id": "c0ffee-1", "dimension": "execution", "text": "add a hat",
                "image": "<base64 PNG>", "source": "<base64 PNG>", "requirement": ""}]}

answers ``{"verdicts": [<Verdict.to_dict()>, ...], "score_range": [1, 5]}``. ``POST /v1/reward`` takes the same
items without ``dimension`` (the hosted reward strategy says which dimensions to judge) and answers
``{"rewards": [{"total": float | null, "valid": bool, "components": {...}}], "verdicts": [{dim: verdict}],
"score_range": [1, 5]}``. An item's ``id`` (chosen by the client, unique per item) makes a retry idempotent: the
server answers a repeated id from its cache instead of judging the item again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import struct
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firm.critics.base import JudgeRequest, task_of

ROUTE_JUDGE = "/v1/judge"
ROUTE_REWARD = "/v1/reward"
ROUTE_CHAT = "/v1/chat/completions"
ROUTE_MODELS = "/v1/models"
ROUTE_HEALTH = "/health"
ROUTE_METRICS = "/metrics"

#: Environment variable read for the bearer token, by the server and by :class:`~firm.serving.client.RemoteCritic`.
TOKEN_ENV = "FIRM_SERVE_TOKEN"

#: The image formats the server decodes; anything else is refused before its pixels are read.
IMAGE_FORMATS = ("PNG", "JPEG")

MAX_ID_CHARS = 200


@dataclass(frozen=True)
class ServeLimits:
    """What one request may carry. Requests over a limit are refused with 413 before the critic sees them.

    Attributes:
        max_body_bytes: largest request body, checked against Content-Length and against the bytes actually read.
        max_items: most items in one judge or reward request.
        max_image_pixels: most pixels (width x height) of one image, read from its header before decoding, so a
            decompression bomb is refused without inflating it.
        max_request_pixels: most pixels of all images in one request together, which bounds the memory one request
            holds while it waits for the critic.
        max_text_chars: most characters of one item's text or requirement, and of all the text of one chat request
            (FIRM's instructions and prompts are a few hundred); longer is refused with 413 before any tokenizing.
        max_messages: most messages in one chat request.
    """

    max_body_bytes: int = 64 * 1024 * 1024
    max_items: int = 64
    max_image_pixels: int = 2048 * 2048
    max_request_pixels: int = 64 * 1024 * 1024
    max_text_chars: int = 16_384
    max_messages: int = 32

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes", "max_items", "max_image_pixels", "max_request_pixels", "max_text_chars", "max_messages"
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


class ProtocolError(Exception):
    """A request the server refuses: HTTP ``status`` with a machine-readable ``code`` and a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The JSON body of a refusal, in OpenAI's error shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"message": message, "type": kind, "code": code}}


class JudgeItem(BaseModel):
    """One item of a judge request: a dimension, the text, the image and (for edits) the source."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    dimension: str
    text: str
    image: str
    source: str | None = None
    requirement: str = ""


class RewardItem(BaseModel):
    """One item of a reward request: the text, the image and (for edits) the source; dimensions come from the
    hosted reward strategy."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    text: str
    image: str
    source: str | None = None
    requirement: str = ""


class JudgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[JudgeItem]


class RewardBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[RewardItem]


@dataclass(frozen=True)
class ParsedItem:
    """A validated item: the judge request, the client's id and a digest of what was sent (to catch a reused id)."""

    request: JudgeRequest
    id: str | None
    digest: str


def parse_json(body: bytes) -> Any:
    """Decode a JSON body.

    Raises:
        ProtocolError: 400 ``invalid_json`` naming where parsing failed.
    """
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # a body nested thousands of levels deep
        raise ProtocolError(400, "invalid_json", "the body is nested too deeply to be a firm request") from None


def validate(model: type[BaseModel], data: Any) -> Any:
    """Validate decoded JSON against a body model.

    Raises:
        ProtocolError: 400 ``invalid_request`` listing the first problems, field paths included.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]]
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise ProtocolError(400, "invalid_request", "; ".join(problems) + more) from None


def decode_image(data: str, where: str, max_pixels: int) -> Image.Image:
    """Decode a base64 PNG or JPEG (bare, or a data URL) into RGB, refusing anything else or anything too large.

    The size is read from the image header before any pixel is decoded, so an image that would inflate past
    ``max_pixels`` is refused without being inflated.

    Args:
        data: base64 text, or ``data:image/png;base64,...``.
        where: the field's path, for the message (``items.3.image``).
        max_pixels: most pixels allowed.

    Raises:
        ProtocolError: 400 ``invalid_image`` (not base64, not PNG/JPEG, truncated) or 413 ``image_too_large``.
    """
    if data.startswith("data:"):
        header, sep, data = data.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ProtocolError(400, "invalid_image", f"{where}: a data URL must be data:image/...;base64,<data>")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(400, "invalid_image", f"{where}: not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        # PIL's own guard fires at open for sizes far past any sane limit; ours below covers the rest.
        raise ProtocolError(413, "image_too_large", f"{where}: the image header declares a gigantic size") from None
    except (UnidentifiedImageError, OSError):
        raise ProtocolError(400, "invalid_image", f"{where}: not a PNG or JPEG image") from None
    except (ValueError, SyntaxError, struct.error) as exc:  # PIL's refusals of malformed chunks (a text chunk that
        # inflates past its limit, a broken header) surface as these while the file is opened
        raise ProtocolError(400, "invalid_image", f"{where}: a malformed image: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ProtocolError(
            413, "image_too_large", f"{where}: {width}x{height} has {width * height} pixels; the limit is {max_pixels}"
        )
    try:
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as exc:
        raise ProtocolError(400, "invalid_image", f"{where}: cannot decode the image: {exc}") from None


class PixelBudget:
    """Counts decoded pixels across one request."""

    def __init__(self, limits: ServeLimits) -> None:
        self.limits = limits
        self.used = 0

    def decode(self, data: str, where: str) -> Image.Image:
        image = decode_image(data, where, self.limits.max_image_pixels)
        self.used += image.width * image.height
        if self.used > self.limits.max_request_pixels:
            raise ProtocolError(
                413,
                "request_too_large",
                f"the images of this request hold more than {self.limits.max_request_pixels} pixels together; "
                "send fewer items per request",
            )
        return image


def _check_count(count: int, limits: ServeLimits) -> None:
    if count == 0:
        raise ProtocolError(400, "invalid_request", "items: the request holds no items")
    if count > limits.max_items:
        raise ProtocolError(
            413, "too_many_items", f"the request holds {count} items; the limit is {limits.max_items} per request"
        )


def _digest(*parts: str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(b"\x00" if part is None else part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def check_text(text: str, where: str, limits: ServeLimits) -> None:
    """Refuse a text longer than ``limits.max_text_chars`` (413 ``text_too_long``)."""
    if len(text) > limits.max_text_chars:
        raise ProtocolError(
            413, "text_too_long", f"{where}: {len(text)} characters; the limit is {limits.max_text_chars}"
        )


def _request(dimension: str, item: JudgeItem | RewardItem, budget: PixelBudget, where: str) -> JudgeRequest:
    try:
        task = task_of(dimension)
    except ValueError as exc:
        raise ProtocolError(400, "invalid_request", f"{where}.dimension: {exc}") from None
    if task == "edit" and item.source is None:
        raise ProtocolError(400, "invalid_request", f"{where}.source: {dimension} judges an edit and needs the source")
    if task == "gen" and item.source is not None:
        raise ProtocolError(400, "invalid_request", f"{where}.source: {dimension} judges a generation, which has none")
    check_text(item.text, f"{where}.text", budget.limits)
    check_text(item.requirement, f"{where}.requirement", budget.limits)
    image = budget.decode(item.image, f"{where}.image")
    source = None if item.source is None else budget.decode(item.source, f"{where}.source")
    return JudgeRequest(dimension, item.text, image, source, item.requirement)


def parse_judge_body(body: bytes, limits: ServeLimits) -> list[ParsedItem]:
    """Parse and validate a ``/v1/judge`` body into judge requests, images decoded.

    Raises:
        ProtocolError: for malformed JSON, a body that does not match the schema, a bad image or a limit exceeded.
    """
    parsed: JudgeBody = validate(JudgeBody, parse_json(body))
    _check_count(len(parsed.items), limits)
    budget = PixelBudget(limits)
    out = []
    for i, item in enumerate(parsed.items):
        request = _request(item.dimension, item, budget, f"items.{i}")
        digest = _digest(item.dimension, item.text, item.requirement, item.image, item.source)
        out.append(ParsedItem(request, item.id, digest))
    return out


def parse_reward_body(body: bytes, limits: ServeLimits, dimensions: tuple[str, ...]) -> list[list[ParsedItem]]:
    """Parse a ``/v1/reward`` body into one judge request per item and reward dimension.

    Returns:
        Per item, its parsed requests in the order of ``dimensions``.

    Raises:
        ProtocolError: as :func:`parse_judge_body`.
    """
    parsed: RewardBody = validate(RewardBody, parse_json(body))
    _check_count(len(parsed.items), limits)
    budget = PixelBudget(limits)
    out = []
    for i, item in enumerate(parsed.items):
        # Images are decoded once per item and shared by its dimensions.
        first = _request(dimensions[0], item, budget, f"items.{i}")
        row = []
        for dimension in dimensions:
            request = JudgeRequest(dimension, item.text, first.image, first.source, item.requirement)
            digest = _digest(dimension, item.text, item.requirement, item.image, item.source)
            row.append(ParsedItem(request, item.id, digest))
        out.append(row)
    return out

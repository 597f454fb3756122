"""Chat messages for a judge request, shared by every backend so that all of them ask the same question.

The user turn holds the images first (for edits: source, then edited) and the rendered template text last, as
FIRM's critics were trained. Backends differ only in how an image is written into the message: a placeholder for
an in-process processor, a base64 data URL for an OpenAI-compatible server.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from firm.critics.base import JudgeRequest

Message = dict[str, Any]


def image_placeholder(image: Image.Image) -> dict[str, Any]:
    """Content part for processors that receive the pixels separately (transformers' chat templates)."""
    return {"type": "image"}


def encode_image(image: Image.Image, fmt: str = "PNG") -> str:
    """Base64 of the image encoded as PNG (lossless, the default) or JPEG."""
    buf = io.BytesIO()
    # compress_level=1: still lossless, about 4x faster to encode than PIL's default for a few % more bytes.
    options = {"compress_level": 1} if fmt.upper() == "PNG" else {"quality": 95}
    image.convert("RGB").save(buf, format=fmt, **options)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def image_data_url(image: Image.Image, fmt: str = "PNG") -> dict[str, Any]:
    """Content part with the image inline as a data URL, as OpenAI-compatible servers (vLLM, SGLang) take it."""
    mime = "image/png" if fmt.upper() == "PNG" else "image/jpeg"
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encode_image(image, fmt)}"}}


def build_messages(
    request: JudgeRequest,
    prompt: str,
    image_part: Callable[[Image.Image], dict[str, Any]] = image_placeholder,
    system: str | None = None,
) -> list[Message]:
    """The conversation that asks a critic to judge ``request``.

    Args:
        request: what to judge.
        prompt: the rendered template text (instruction or prompt already inserted).
        image_part: writes one image as a content part.
        system: an optional system message.
    """
    content = [image_part(img) for img in request.images]
    content.append({"type": "text", "text": prompt})
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    return messages

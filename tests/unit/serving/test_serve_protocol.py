"""The wire protocol: image decoding with limits, and validation of judge and reward bodies."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import pytest
from PIL import Image

from firm.critics.messages import encode_image
from firm.serving.protocol import (
    ProtocolError,
    ServeLimits,
    decode_image,
    parse_judge_body,
    parse_reward_body,
)

LIMITS = ServeLimits(max_items=4, max_image_pixels=64 * 64, max_request_pixels=3 * 64 * 64)


def png_declaring(width: int, height: int) -> str:
    """A real 2x2 PNG whose header claims ``width`` x ``height``: decoding it would fail, reading its size does not."""
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    return base64.b64encode(bytes(data)).decode()


def refusal(fn: Any, *args: Any) -> tuple[int, str, str]:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.status, info.value.code, info.value.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_png_and_jpeg_decode_to_rgb_of_the_sent_size(fmt: str) -> None:
    image = decode_image(encode_image(Image.new("RGB", (40, 30), (200, 10, 10)), fmt), "image", 64 * 64)
    assert image.mode == "RGB" and image.size == (40, 30)
    assert abs(image.getpixel((5, 5))[0] - 200) <= 3  # type: ignore[index]


def test_png_travels_losslessly_also_as_a_data_url() -> None:
    sent = Image.new("RGB", (3, 1))
    sent.putdata([(1, 2, 3), (250, 0, 7), (9, 9, 9)])
    got = decode_image("data:image/png;base64," + encode_image(sent), "image", 100)
    assert [got.getpixel((x, 0)) for x in range(3)] == [(1, 2, 3), (250, 0, 7), (9, 9, 9)]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ("not base64!!", 400, "invalid_image"),
        (base64.b64encode(b"hello, not an image").decode(), 400, "invalid_image"),
        (encode_image(Image.new("RGB", (65, 64))), 413, "image_too_large"),
        ("data:image/png,abc", 400, "invalid_image"),
    ],
)
def test_bad_images_are_refused_with_the_field_named(data: str, status: int, code: str) -> None:
    got = refusal(decode_image, data, "items.2.image", 64 * 64)
    assert got[:2] == (status, code) and got[2].startswith("items.2.image: ")


def test_gif_is_refused_although_pillow_reads_it() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    assert refusal(decode_image, base64.b64encode(buf.getvalue()).decode(), "image", 100)[:2] == (400, "invalid_image")


@pytest.mark.parametrize("side", [3000, 100_000])
def test_decompression_bombs_are_refused_from_the_header_without_decoding(side: int) -> None:
    # 3000^2 passes Pillow's own guard, 100000^2 trips it; both must be 413, and neither may reach decoding
    # (which would fail differently, with 400, since the pixel data is really 2x2).
    assert refusal(decode_image, png_declaring(side, side), "image", 2048 * 2048)[:2] == (413, "image_too_large")


def item(**fields: Any) -> dict[str, Any]:
    img = encode_image(Image.new("RGB", (8, 8)))
    base = {"id": "a", "dimension": "execution", "text": "add a hat", "image": img, "source": img}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def body(*items: dict[str, Any]) -> bytes:
    return json.dumps({"items": list(items)}).encode()


def test_a_judge_body_becomes_requests_with_images_source_and_requirement() -> None:
    (parsed,) = parse_judge_body(body(item(requirement="keep the sky")), LIMITS)
    assert parsed.id == "a" and parsed.request.dimension == "execution" and parsed.request.text == "add a hat"
    assert parsed.request.source is not None and parsed.request.requirement == "keep the sky"


def test_digest_changes_with_any_field_and_not_with_the_id() -> None:
    first = parse_judge_body(body(item(), item(id="b"), item(text="add a cat"), item(dimension="consistency")), LIMITS)
    digests = [p.digest for p in first]
    assert digests[0] == digests[1] and len(set(digests)) == 3


@pytest.mark.parametrize(
    ("raw", "code", "needle"),
    [
        (b"{not json", "invalid_json", "not valid JSON"),
        (b'{"items": "x"}', "invalid_request", "items"),
        (body(item(colour="red")), "invalid_request", "items.0.colour"),
        (body(item(image=None)), "invalid_request", "items.0.image: Field required"),
        (body(item(dimension="beauty")), "invalid_request", "unknown dimension 'beauty'"),
        (body(item(source=None)), "invalid_request", "items.0.source: execution judges an edit"),
        (body(item(dimension="quality")), "invalid_request", "quality judges a generation"),
        (body(), "invalid_request", "no items"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(raw: bytes, code: str, needle: str) -> None:
    status, got_code, message = refusal(parse_judge_body, raw, LIMITS)
    assert (status, got_code) == (400, code) and needle in message


def test_item_and_pixel_limits_are_413() -> None:
    assert refusal(parse_judge_body, body(*[item(id=str(i)) for i in range(5)]), LIMITS)[:2] == (413, "too_many_items")
    big = encode_image(Image.new("RGB", (64, 64)))
    # Two items of two 64x64 images each: 4 x 4096 pixels, over the request budget of 3 x 4096.
    two = body(item(image=big, source=big), item(id="b", image=big, source=big))
    assert refusal(parse_judge_body, two, LIMITS)[:2] == (413, "request_too_large")


def test_reward_body_judges_each_item_on_every_reward_dimension_sharing_its_images() -> None:
    raw = json.dumps({"items": [{k: v for k, v in item().items() if k != "dimension"}]}).encode()
    ((exe, con),) = parse_reward_body(raw, LIMITS, ("execution", "consistency"))
    assert (exe.request.dimension, con.request.dimension) == ("execution", "consistency")
    assert exe.id == con.id == "a" and exe.request.image is con.request.image and exe.digest != con.digest
    status, _, message = refusal(parse_reward_body, raw, LIMITS, ("instruction", "quality"))
    assert status == 400 and "instruction judges a generation" in message


def test_a_png_text_chunk_that_inflates_past_pils_limit_is_a_400_not_a_500() -> None:
    from PIL import PngImagePlugin

    chunk = PngImagePlugin.PngInfo()
    chunk.add_text("comment", "x" * (2 << 20), zip=True)  # 2 MiB of text zipped into a few kB
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=chunk)
    status, code, message = refusal(decode_image, base64.b64encode(buf.getvalue()).decode(), "items.0.image", 100)
    assert (status, code) == (400, "invalid_image") and "items.0.image" in message


def test_a_body_nested_thousands_deep_is_a_400_not_a_500() -> None:
    body = b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert refusal(parse_judge_body, body, LIMITS)[:2] == (400, "invalid_json")


def test_text_and_requirement_longer_than_the_limit_are_413_before_any_tokenizing() -> None:
    limits = ServeLimits(max_text_chars=100)
    image = encode_image(Image.new("RGB", (8, 8)))
    long_text = {"dimension": "quality", "text": "x" * 101, "image": image}
    status, code, message = refusal(parse_judge_body, json.dumps({"items": [long_text]}).encode(), limits)
    assert (status, code) == (413, "text_too_long") and "items.0.text: 101 characters" in message
    long_requirement = {"text": "ok", "requirement": "y" * 101, "image": image}
    body = json.dumps({"items": [long_requirement]}).encode()
    assert refusal(parse_reward_body, body, limits, ("quality",))[:2] == (413, "text_too_long")
    assert len(parse_judge_body(json.dumps({"items": [{**long_text, "text": "x" * 100}]}).encode(), limits)) == 1

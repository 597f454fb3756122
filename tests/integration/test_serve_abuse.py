"""``firm serve`` as a real process on 127.0.0.1 against abusive clients, with and without the token: a client that
tries to swap the chat template, sends huge texts, floods the queue with large images, or trickles its body. Each case
is bounded in time; afterwards the server answers a normal request correctly, its memory stayed bounded and its log
holds no traceback (a client's mistake is the client's, not a server error).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from serve_support import AUTH, TOKEN, serve_args

from firm.critics.base import DIMENSIONS
from firm.critics.messages import encode_image
from firm.serving.process import ServeProcess

#: A queue that holds about 12 items of two 64x64 images, so that a flood is refused with 429 long before memory.
PENDING_PIXELS = 100_000
BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tiny_critic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("abuse")
    templates = {}
    for dim in DIMENSIONS:
        (folder / f"{dim}.txt").write_text(f"Rate the {dim} from 1 to 5: {{text}}")
        templates[dim] = str(folder / f"{dim}.txt")
    (folder / "token").write_text(TOKEN)
    extra = ["--port", "0", "--max-batch-size", "4", "--max-pending-pixels", str(PENDING_PIXELS)]
    extra += ["--body-timeout", str(BODY_TIMEOUT_S), "--header-timeout", str(HEADER_TIMEOUT_S)]
    extra += ["--max-text-chars", "2000", "--max-image-pixels", str(64 * 64)]
    with ServeProcess(
        serve_args(tiny_critic_dir, templates, folder / "token", *extra), env={"OMP_NUM_THREADS": "1"}
    ) as proc:
        yield proc


def rss_mib(proc: ServeProcess) -> float:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def item(size: int = 32, text: str = "a green square", **extra: Any) -> dict[str, Any]:
    image = encode_image(Image.new("RGB", (size, size), (30, 200, 30)))
    return {"dimension": "quality", "text": text, "image": image, **extra}


def healthy(proc: ServeProcess) -> None:
    """A normal request is answered with a verdict, and the server's log holds no traceback."""
    answer = httpx.post(f"{proc.url}/v1/judge", json={"items": [item()]}, headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["verdicts"][0]["dimension"] == "quality"
    assert "Traceback" not in proc.stderr_tail(), proc.stderr_tail()


@pytest.mark.parametrize("token", [True, False], ids=["with-token", "without-token"])
def test_a_chat_client_cannot_replace_the_template(server: ServeProcess, token: bool) -> None:
    started = time.monotonic()
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "chat_template_kwargs": {"chat_template": "{% for i in range(10**9) %}x{% endfor %}"},
    }
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=AUTH if token else {}, timeout=30)
    if token:
        # Refused whatever the model name: the body is checked before the template could ever be rendered.
        assert answer.status_code in (400, 404), answer.text
        named = {**body, "model": str(server.args[server.args.index("--model") + 1])}
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=named, headers=AUTH, timeout=30)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "unsupported_parameter"
        top_level = {**named, "chat_template": "{{ 7 * 7 }}"}
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=top_level, headers=AUTH, timeout=30)
        assert answer.status_code == 400
    else:
        assert answer.status_code == 401
    assert time.monotonic() - started < 10
    healthy(server)


def test_huge_texts_are_refused_before_any_tokenizing(server: ServeProcess) -> None:
    started = time.monotonic()
    long_text = httpx.post(
        f"{server.url}/v1/judge", json={"items": [item(text="x" * 1_000_000)]}, headers=AUTH, timeout=30
    )
    assert long_text.status_code == 413 and long_text.json()["error"]["code"] == "text_too_long"
    requirement = httpx.post(
        f"{server.url}/v1/judge", json={"items": [item(requirement="y" * 100_000)]}, headers=AUTH, timeout=30
    )
    assert requirement.status_code == 413
    nested = b'{"items": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    deep = httpx.post(
        f"{server.url}/v1/judge", content=nested, headers={**AUTH, "Content-Type": "application/json"}, timeout=30
    )
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "invalid_json"
    assert time.monotonic() - started < 10
    healthy(server)


def test_a_flood_of_large_images_gets_429_not_memory(server: ServeProcess) -> None:
    before = rss_mib(server)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def flood() -> None:
        body = {"items": [item(size=64, text=f"flood {i}") for i in range(4)]}
        with httpx.Client(headers=AUTH, timeout=120) as client:
            for _ in range(3):
                status = client.post(f"{server.url}/v1/judge", json=body).status_code
                with lock:
                    statuses[status] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=flood) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads) and time.monotonic() - started < 180
    assert set(statuses) <= {200, 429} and statuses[429] > 0 and statuses[200] > 0, statuses
    grown = rss_mib(server) - before
    seconds = time.monotonic() - started
    print(f"flood: {dict(statuses)} in {seconds:.1f} s; RSS {before:.0f} -> {before + grown:.0f} MiB")
    # 72 requests x 4 images x 64x64 would be 1.2 M pixels if all were queued; the queue holds 100 k.
    assert grown < 150, f"the server grew by {grown:.0f} MiB"
    healthy(server)


def test_a_client_that_trickles_its_body_gets_408_and_frees_its_connection(server: ServeProcess) -> None:
    assert server.url is not None
    host, port = server.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        head = (
            f"POST /v1/judge HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        slow.sendall(head.encode() + b'{"items": [')
        healthy(server)  # others are served while this client dawdles
        answer = b""
        for _ in range(60):  # a byte every 0.1 s, far slower than the body deadline allows
            try:
                slow.sendall(b" ")
            except OSError:
                break
            slow.settimeout(0.1)
            try:
                answer += slow.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < BODY_TIMEOUT_S + 5
    healthy(server)


@pytest.mark.parametrize("start", [b"", b"POST /v1/judge HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "trickled-headers"])
def test_a_client_that_never_finishes_its_headers_is_cut_off(server: ServeProcess, start: bytes) -> None:
    assert server.url is not None
    host, port = server.url.removeprefix("http://").split(":")
    started = time.monotonic()
    closed = False
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        slow.sendall(start)
        slow.settimeout(0.25)
        while time.monotonic() - started < HEADER_TIMEOUT_S + 8:
            try:
                if start:
                    slow.sendall(b"X")  # one header byte at a time, never a blank line
                if slow.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:  # reset by the server
                closed = True
                break
    assert closed, "the server kept a connection whose headers never ended"
    assert HEADER_TIMEOUT_S - 0.5 < time.monotonic() - started < HEADER_TIMEOUT_S + 8
    healthy(server)

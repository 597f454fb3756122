"""Helpers for the serving tests: a critic whose scores come from pixels, and a firm server in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from PIL import Image

from firm.critics.base import Critic, JudgeRequest, Verdict
from firm.serving.app import bind


class PixelCritic(Critic):
    """Scores an image by its top-left pixel: ``1 + round(4 * red / 255)``; a text holding "unreadable" gets an
    invalid verdict. Since the score comes from the decoded pixels, a right score proves the image arrived intact.

    Args:
        delay_s: seconds each ``judge`` call sleeps, to keep items in flight.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []

    @property
    def judged(self) -> int:
        return sum(self.batches)

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        self.batches.append(len(requests))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self._verdict(r) for r in requests]

    @staticmethod
    def score(image: Image.Image) -> int:
        red = image.getpixel((0, 0))[0]  # type: ignore[index]
        return 1 + round(4 * red / 255)

    def _verdict(self, request: JudgeRequest) -> Verdict:
        if "unreadable" in request.text:
            return Verdict.invalid(request.dimension, "no score found", raw="???")
        score = self.score(request.image)
        return Verdict(request.dimension, score, reasoning=f"red says {score}", raw=f'{{"score": [{score}]}}')


def red(level: int, size: tuple[int, int] = (16, 16)) -> Image.Image:
    """A solid image whose red channel is ``level`` (PixelCritic scores 0 as 1, 255 as 5)."""
    return Image.new("RGB", size, (level, 40, 90))


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL; stops it gracefully."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)

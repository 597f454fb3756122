"""RemoteCritic against a real firm server (uvicorn in a thread): order, retries, failover, refusals, idempotency."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from serve_critics import PixelCritic, red, serving
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firm.critics.base import JudgeRequest, ScoreRange
from firm.critics.remote import RemoteCritic
from firm.serving.app import ServeConfig, bind, create_app
from firm.serving.protocol import ServeLimits


def edits(levels: list[int], size: tuple[int, int] = (16, 16)) -> list[JudgeRequest]:
    return [JudgeRequest("execution", f"edit {i}", red(level, size), source=red(0)) for i, level in enumerate(levels)]


def test_verdicts_come_back_in_order_across_concurrent_chunks() -> None:
    critic = PixelCritic()
    levels = [(i * 37) % 256 for i in range(37)]
    with serving(create_app(critic, ServeConfig(max_wait_ms=2))) as url:
        remote = RemoteCritic(base_url=url, batch_size=5, concurrency=3)
        verdicts = remote.judge(edits(levels))
        remote.close()
    assert [v.score for v in verdicts] == [PixelCritic.score(red(level)) for level in levels]
    assert critic.judged == 37 and remote.judge([]) == []


def test_a_refused_item_becomes_an_invalid_verdict_and_its_chunk_mates_are_judged() -> None:
    config = ServeConfig(limits=ServeLimits(max_image_pixels=16 * 16))
    requests = edits([255, 0, 128])
    requests[1] = edits([0], size=(32, 32))[0]  # 1024 pixels: over the server's limit
    with serving(create_app(PixelCritic(), config)) as url:
        verdicts = RemoteCritic(base_url=url, batch_size=8).judge(requests)
    assert [v.score for v in verdicts] == [5, None, 3]
    assert verdicts[1].invalid_reason is not None and "(413)" in verdicts[1].invalid_reason
    assert "image_too_large" not in verdicts[1].invalid_reason and "pixels" in verdicts[1].invalid_reason


def test_tokens_from_the_environment_or_a_file_and_a_wrong_one_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(create_app(PixelCritic(), ServeConfig(token="t0ken"))) as url:
        monkeypatch.setenv("FIRM_SERVE_TOKEN", "t0ken")
        assert RemoteCritic(base_url=url).judge(edits([255]))[0].score == 5
        (tmp_path / "token").write_text("wrong\n")
        with pytest.raises(PermissionError, match="wrong"):
            RemoteCritic(base_url=url, token_file=str(tmp_path / "token")).judge(edits([255]))


class LoseFirstAnswer:
    """Lets the first judge request reach the server, then drops its answer and says 502, as a proxy that lost the
    connection would. The client must retry, and the server must not judge those items again."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.lost = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/judge" or self.lost:
            await self.app(scope, receive, send)
            return
        self.lost += 1

        async def swallow(message: Message) -> None:
            pass

        await self.app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 502, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"bad gateway"})


def test_a_lost_answer_costs_a_retry_not_a_second_judgement() -> None:
    critic = PixelCritic()
    lossy = LoseFirstAnswer(create_app(critic))
    with serving(lossy) as url:  # type: ignore[arg-type]
        remote = RemoteCritic(base_url=url, batch_size=4, backoff_s=0.01)
        verdicts = remote.judge(edits([255, 0, 64, 192]))
    assert lossy.lost == 1 and remote.retries == 1
    assert [v.score for v in verdicts] == [5, 1, 2, 4]
    assert critic.judged == 4  # judged once, although sent twice


def test_retries_outlast_a_server_that_starts_late() -> None:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()  # free the port; the server takes it later
    # A trainer may start before its critic server listens: max_retries is the setting that waits for it.
    remote = RemoteCritic(
        base_url=f"http://127.0.0.1:{port}", backoff_s=0.05, max_backoff_s=0.2, max_retries=150, retry_timeout_s=30
    )
    result: list = []
    worker = threading.Thread(target=lambda: result.append(remote.judge(edits([255, 0]))))
    worker.start()
    time.sleep(0.8)
    assert worker.is_alive() and remote.retries >= 2
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(PixelCritic()), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    worker.join(timeout=30)
    server.should_exit = True
    thread.join(timeout=30)
    assert [v.score for v in result[0]] == [5, 1]


def test_a_dead_url_says_so_at_each_retry_and_gives_up_after_max_retries(caplog: pytest.LogCaptureFixture) -> None:
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    started = time.monotonic()
    with (
        caplog.at_level("WARNING", logger="firm.critics.remote"),
        pytest.raises(ConnectionError, match=r"cannot reach firm serve at .* after 4 attempts; is it running"),
    ):
        RemoteCritic(base_url=url, max_retries=3, backoff_s=0.05, retry_timeout_s=300).judge(edits([1]))
    assert time.monotonic() - started < 5  # not the 300 s a server that once answered would get
    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) == 3 and all(f"cannot reach {url}/v1/judge" in m for m in retries)
    assert [m.split("retrying (")[1].split(")")[0] for m in retries] == ["1/3", "2/3", "3/3"]


def test_the_default_gives_a_dead_url_seconds_not_minutes() -> None:
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="after 9 attempts"):
        RemoteCritic(base_url=url).judge(edits([1]))
    assert time.monotonic() - started < 30


class FailFirst:
    """Answers the first judge request with ``status`` (without judging it), then lets requests through."""

    def __init__(self, app: ASGIApp, status: int) -> None:
        self.app, self.status, self.failed = app, status, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/judge" or self.failed:
            await self.app(scope, receive, send)
            return
        self.failed += 1
        body = b'{"error": {"message": "boom", "type": "server_error", "code": "internal_error"}}'
        await send(
            {"type": "http.response.start", "status": self.status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(("status", "retried"), [(500, True), (503, True), (429, True), (400, False), (413, False)])
def test_a_5xx_or_429_is_retried_and_a_4xx_is_the_requests_own_fault(status: int, retried: bool) -> None:
    critic = PixelCritic()
    app = FailFirst(create_app(critic), status)
    with serving(app) as url:  # type: ignore[arg-type]
        remote = RemoteCritic(base_url=url, batch_size=1, backoff_s=0.01)
        [verdict] = remote.judge(edits([255]))
    assert remote.retries == (1 if retried else 0)
    if retried:
        assert verdict.score == 5 and critic.judged == 1
    else:
        assert verdict.score is None and f"({status})" in (verdict.invalid_reason or "") and critic.judged == 0


def test_several_urls_fail_over_to_the_one_that_answers() -> None:
    sock = bind("127.0.0.1", 0)
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    critic = PixelCritic()
    with serving(create_app(critic)) as live:
        remote = RemoteCritic(base_url=f"{dead},{live}", batch_size=1, concurrency=2, backoff_s=0.01)
        verdicts = remote.judge(edits([255, 0, 128, 64]))
    assert [v.score for v in verdicts] == [5, 1, 3, 2] and critic.judged == 4


def test_a_score_range_mismatch_is_an_error_not_a_silent_rescale() -> None:
    with serving(create_app(PixelCritic())) as url, pytest.raises(RuntimeError, match=r"answers on \[1, 5\]"):
        RemoteCritic(base_url=url, score_range=ScoreRange(0, 10)).judge(edits([1]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "127.0.0.1:8700"}, "http"),
        ({"base_url": "http://a", "image_format": "WEBP"}, "image_format"),
        ({"base_url": "http://a", "batch_size": 0}, "batch_size"),
        ({"base_url": "http://a", "backoff_s": 2.0, "max_backoff_s": 1.0}, "backoff_s"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RemoteCritic(**kwargs)

"""``firm serve`` as a real process on a free local port, hosting a tiny real critic, driven by RemoteCritic and by
plain HTTP: right verdicts, documented refusals, load from 16 clients, and a crash and a SIGTERM mid-load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from serve_support import AUTH, SERVER_ENV, TOKEN, FirmServer, serve_args

from firm.critics.base import JudgeRequest, Verdict
from firm.critics.messages import encode_image
from firm.critics.remote import RemoteCritic
from firm.critics.transformers import GenerativeJudge
from firm.serving.process import DEFAULT_COMMAND, ServeProcess

# The module's own server is the session's firm_server (see conftest.py); the slow tests start their own.


@pytest.fixture(scope="module")
def server(firm_server: FirmServer) -> str:
    return firm_server.url


@pytest.fixture(scope="module")
def critic_dir(firm_server: FirmServer) -> Path:
    return firm_server.critic_dir


@pytest.fixture(scope="module")
def templates(firm_server: FirmServer) -> dict[str, str]:
    return firm_server.templates


@pytest.fixture(scope="module")
def token_file(firm_server: FirmServer) -> Path:
    return firm_server.token_file


@pytest.fixture(scope="module")
def reference(firm_server: FirmServer, critic_dir: Path, templates: dict[str, str]) -> GenerativeJudge:
    """The same critic in this process: what the server must answer."""
    return GenerativeJudge(
        str(critic_dir), templates=templates, max_new_tokens=firm_server.max_new_tokens, device="cpu"
    )


def square(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (32, 32), rgb)


# Not "instruction": its answer budget defaults to 1024 tokens, which a random model fills every time.
REQUESTS = [
    JudgeRequest("execution", "make the square blue", square((200, 30, 30)), source=square((30, 30, 200))),
    JudgeRequest("consistency", "make the square blue", square((200, 30, 30)), source=square((30, 30, 200))),
    JudgeRequest("quality", "a green square", square((30, 200, 30))),
]


def good_item() -> dict[str, Any]:
    return {"id": None, "dimension": "quality", "text": "a green square", "image": encode_image(REQUESTS[2].image)}


def test_verdicts_over_the_wire_equal_the_in_process_critic(
    server: str, reference: GenerativeJudge, token_file: Path
) -> None:
    expected = [v.to_dict() for v in reference.judge(REQUESTS)]
    remote = RemoteCritic(base_url=server, token_file=str(token_file))
    assert [v.to_dict() for v in remote.judge(REQUESTS)] == expected
    plain = httpx.post(f"{server}/v1/judge", json={"items": [{**good_item(), "id": "plain"}]}, headers=AUTH)
    assert plain.status_code == 200 and plain.json()["verdicts"] == [expected[2]]


def test_a_random_critic_is_reported_invalid_with_a_null_reward_never_a_zero(server: str) -> None:
    item = {k: v for k, v in good_item().items() if k != "dimension"} | {"source": encode_image(square((0, 0, 0)))}
    answer = httpx.post(f"{server}/v1/reward", json={"items": [{**item, "id": "r1"}]}, headers=AUTH, timeout=60)
    assert answer.status_code == 200
    reward = answer.json()["rewards"][0]
    verdicts = answer.json()["verdicts"][0]
    assert set(verdicts) == {"execution", "consistency"}
    if not all(v["valid"] for v in verdicts.values()):
        assert reward["total"] is None and reward["valid"] is False
    metrics = httpx.get(f"{server}/metrics", headers=AUTH).json()
    assert metrics["verdicts"]["invalid"] + metrics["verdicts"]["valid"] == metrics["items"]["judged"]


def test_firm_score_takes_the_server_url_as_its_critic(server: str, reference: GenerativeJudge, tmp_path: Path) -> None:
    # What RL, curation and bench configs do too: the critic is RemoteCritic (registered as remote) with a base_url.
    REQUESTS[2].image.save(tmp_path / "gen.png")
    done = subprocess.run(
        [sys.executable, "-m", "firm.cli", "score", "--critic", "remote", "--base-url", server,
         "--image", str(tmp_path / "gen.png"), "--prompt", REQUESTS[2].text, "--dimensions", "quality"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "FIRM_SERVE_TOKEN": TOKEN},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdicts"]["quality"] == reference.judge([REQUESTS[2]])[0].to_dict()


def bad_requests() -> list[tuple[str, dict[str, Any], int, str]]:
    good = {"items": [good_item()]}
    return [
        ("malformed JSON", {"content": b'{"items": [', "headers": AUTH}, 400, "invalid_json"),
        (
            "non-image payload",
            {"json": {"items": [{**good_item(), "image": "bm90IGFuIGltYWdl"}]}, "headers": AUTH},
            400,
            "invalid_image",
        ),
        (
            "oversized body",
            {"json": {"items": [{**good_item(), "text": "x" * 400_000}]}, "headers": AUTH},
            413,
            "body_too_large",
        ),
        ("too many items", {"json": {"items": [good_item()] * 9}, "headers": AUTH}, 413, "too_many_items"),
        ("missing token", {"json": good}, 401, "missing_token"),
        ("wrong token", {"json": good, "headers": {"Authorization": "Bearer guess"}}, 401, "wrong_token"),
    ]


@pytest.mark.parametrize(("what", "kwargs", "status", "code"), bad_requests(), ids=[b[0] for b in bad_requests()])
def test_a_bad_request_gets_its_4xx_and_the_next_request_is_answered(
    server: str, reference: GenerativeJudge, what: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    refused = httpx.post(f"{server}/v1/judge", timeout=60, **kwargs)
    assert refused.status_code == status
    assert refused.json()["error"]["code"] == code and refused.json()["error"]["message"]
    after = httpx.post(f"{server}/v1/judge", json={"items": [good_item()]}, headers=AUTH, timeout=60)
    assert after.status_code == 200
    assert after.json()["verdicts"] == [reference.judge([REQUESTS[2]])[0].to_dict()]


def test_binding_beyond_loopback_without_a_token_exits_2_with_one_line(critic_dir: Path) -> None:
    done = subprocess.run(
        [*DEFAULT_COMMAND, "--model", str(critic_dir), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "FIRM_SERVE_TOKEN"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "binding 0.0.0.0 exposes the critic" in lines[0]


# Load and faults: 16 clients, each sending its requests one after another, one item per request.

CLIENTS = 16
TEXTS = [f"a square number {k}" for k in range(4)]  # the same length: same prompt shape for every item


def load_request(k: int) -> JudgeRequest:
    k %= len(TEXTS)
    return JudgeRequest("quality", TEXTS[k], square((40 * k, 90, 160)))


@dataclass
class Run:
    """What the clients saw: each request's verdict by number, latencies (s), wall time (s) and retries."""

    results: dict[int, Verdict] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    retries: int = 0


def drive(url: str, token_file: Path, per_client: int, on_progress: Any = None) -> Run:
    """Run the clients, each sending ``per_client`` one-item requests one after another."""
    run = Run()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        remote = RemoteCritic(
            base_url=url,
            token_file=str(token_file),
            batch_size=1,
            concurrency=1,
            backoff_s=0.05,
            max_backoff_s=0.5,
            retry_timeout_s=120,
            timeout_s=60,
        )
        try:
            for r in range(per_client):
                n = c * per_client + r
                started = time.perf_counter()
                (verdict,) = remote.judge([load_request(n)])
                with lock:
                    assert n not in run.results, "every request is answered once"
                    run.results[n] = verdict
                    run.latencies.append(time.perf_counter() - started)
                if on_progress is not None:
                    on_progress(len(run.results))
        except BaseException as exc:
            errors.append(exc)
        finally:
            remote.close()
            with lock:
                run.retries += remote.retries

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    run.wall = time.perf_counter() - started
    assert not errors, errors[:3]
    return run


def expected_verdicts(reference: GenerativeJudge) -> list[dict[str, Any]]:
    return [v.to_dict() for v in reference.judge([load_request(k) for k in range(len(TEXTS))])]


@pytest.mark.slow
def test_load_16_clients_200_requests_each_zero_errors_each_answered_once(
    critic_dir: Path, templates: dict[str, str], token_file: Path, reference: GenerativeJudge
) -> None:
    per_client = 200
    args = serve_args(critic_dir, templates, token_file, "--port", "0", "--max-batch-size", "16")
    with ServeProcess(args, env=SERVER_ENV) as proc:
        assert proc.url is not None
        run = drive(proc.url, token_file, per_client)
        metrics = httpx.get(f"{proc.url}/metrics", headers=AUTH).json()
    total = CLIENTS * per_client
    assert sorted(run.results) == list(range(total)) and run.retries == 0
    expected = expected_verdicts(reference)
    assert all(v.to_dict() == expected[n % len(TEXTS)] for n, v in run.results.items())
    assert metrics["requests"]["/v1/judge"] == {"200": total}
    assert metrics["items"] == {"judged": total, "answered_from_cache": 0}
    latencies = sorted(run.latencies)
    p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * len(latencies))]
    print(
        f"\nload: {CLIENTS} clients x {per_client} requests: {total / run.wall:.1f} req/s, p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, wall {run.wall:.1f} s, mean batch {metrics['batches']['mean_size']}"
    )


def journal_ids(path: Path) -> Counter[str]:
    return Counter(json.loads(line)["id"] for line in path.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "terminate"])
def test_a_server_killed_or_stopped_mid_load_and_restarted_loses_no_request_and_judges_none_twice(
    how: str,
    critic_dir: Path,
    templates: dict[str, str],
    token_file: Path,
    reference: GenerativeJudge,
    tmp_path: Path,
) -> None:
    per_client = 40
    journal = tmp_path / "journal.jsonl"
    proc = ServeProcess(
        serve_args(critic_dir, templates, token_file, "--port", "0", "--journal", str(journal)), env=SERVER_ENV
    )
    url = proc.start()
    port = url.rsplit(":", 1)[1]
    stopped = threading.Event()
    exit_codes: list[int] = []
    judged_before_restart: list[int] = []

    def stop_at_a_third(done: int) -> None:
        if done >= CLIENTS * per_client // 3 and not stopped.is_set():
            stopped.set()
            # Stop and restart from another thread, so this client keeps sending meanwhile.
            threading.Thread(target=restart).start()

    def restart() -> None:
        exit_codes.append(proc.kill() if how == "kill" else proc.terminate())
        judged_before_restart.append(sum(journal_ids(journal).values()))
        proc.args = serve_args(critic_dir, templates, token_file, "--port", port, "--journal", str(journal))
        proc.start()

    try:
        run = drive(url, token_file, per_client, on_progress=stop_at_a_third)
        after = httpx.get(f"{url}/metrics", headers=AUTH).json()["items"]
    finally:
        proc.terminate()
    total = CLIENTS * per_client
    assert stopped.is_set() and sorted(run.results) == list(range(total)) and run.retries > 0
    assert exit_codes == ([-9] if how == "kill" else [0])  # SIGTERM drains and exits cleanly
    expected = expected_verdicts(reference)
    assert all(v.to_dict() == expected[n % len(TEXTS)] for n, v in run.results.items())
    judged = journal_ids(journal)
    assert len(judged) == total and max(judged.values()) == 1  # every item judged, none twice
    # The restarted server judged exactly what the first one had not finished.
    assert after["judged"] == total - judged_before_restart[0]
    print(
        f"\n{how}: {judged_before_restart[0]} judged before the restart, {after['judged']} after, "
        f"{after['answered_from_cache']} retries answered from the journal, {run.retries} client retries"
    )


def test_sigterm_finishes_the_batch_in_flight_then_exits_0(
    critic_dir: Path, templates: dict[str, str], token_file: Path
) -> None:
    # A 1024-token budget, which the random critic always fills, keeps the item in flight for a few seconds.
    args = serve_args(critic_dir, templates, token_file, "--port", "0", "--max-new-tokens", "1024")
    with ServeProcess(args, env=SERVER_ENV) as proc:
        assert proc.url is not None and proc.proc is not None
        answers: list[httpx.Response] = []
        body = {"items": [{**good_item(), "id": "slow"}]}
        sender = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{proc.url}/v1/judge", json=body, headers=AUTH, timeout=120))
        )
        sender.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{proc.url}/metrics", headers=AUTH).json()["queue"]["running"] == 0:
            assert time.monotonic() < deadline, "the slow item never reached the critic"
            time.sleep(0.02)
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections once shutting down
            httpx.get(f"{proc.url}/health", timeout=5)
        assert sender.is_alive(), "the item was still being judged when the server began to stop"
        assert proc.proc.wait(timeout=120) == 0
        sender.join(timeout=10)
    assert answers and answers[0].status_code == 200
    verdict = answers[0].json()["verdicts"][0]
    assert verdict["dimension"] == "quality" and "max_new_tokens=1024" in verdict["invalid_reason"]
    assert "firm serve: stopped" in proc.stderr_tail()

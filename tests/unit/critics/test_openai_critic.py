"""OpenAICompatibleCritic over real HTTP against a scripted server process (openai_stub_server.py).

Each request scripts the stub's reply through a directive in its instruction text; see the stub's docstring.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from firm.critics.answer import format_answer
from firm.critics.base import Critic, JudgeRequest, ScoreRange
from firm.critics.openai import OpenAICompatibleCritic

STUB = Path(__file__).with_name("openai_stub_server.py")
RED = Image.new("RGB", (8, 6), (255, 0, 0))
BLUE = Image.new("RGB", (8, 6), (0, 0, 255))


@contextlib.contextmanager
def stub_process() -> Iterator[str]:
    """Run the scripted server in its own process; yields its base URL."""
    proc = subprocess.Popen([sys.executable, str(STUB)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with stub_process() as url:
        yield url


@pytest.fixture
def stub(stub_url: str) -> str:
    """The stub's base URL, with its log and attempt counters cleared."""
    httpx.post(f"{stub_url}/_reset", json={}).raise_for_status()
    return stub_url


def seen(stub: str) -> list[dict[str, Any]]:
    """The requests the stub received, in arrival order."""
    log: list[dict[str, Any]] = httpx.get(f"{stub}/_log").json()
    return log


def keys_seen(stub: str) -> list[str]:
    """The script key of each request the stub received, in arrival order."""
    texts = [r["body"]["messages"][0]["content"][-1]["text"] for r in seen(stub)]
    return [json.loads(t.split("<<stub ", 1)[1].split(">>stub", 1)[0])["key"] for t in texts]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago and has nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def scripted(key: str, dimension: str = "execution", **script: Any) -> JudgeRequest:
    text = f"Make it blue. <<stub {json.dumps({'key': key, **script})}>>stub"
    return JudgeRequest(dimension, text, image=BLUE, source=RED)


def critic(stub: str, **kwargs: Any) -> OpenAICompatibleCritic:
    settings: dict[str, Any] = {"model": "judge", "api_key_env": None, "timeout_s": 2.0, "backoff_s": 0.01}
    return OpenAICompatibleCritic(base_url=f"{stub}/v1", **{**settings, **kwargs})


def decode_data_url(url: str) -> Image.Image:
    header, _, data = url.partition(",")
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def test_request_carries_source_then_edited_image_the_prompt_greedy_settings_and_key(
    stub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRM_TEST_JUDGE_KEY", "s3cret")
    judge = critic(stub, api_key_env="FIRM_TEST_JUDGE_KEY", max_tokens=77)
    request = scripted("body", answer=format_answer("execution", 4, "The wall is glass now."))

    [verdict] = judge.judge([request])
    judge.close()

    assert (verdict.score, verdict.reasoning) == (4, "The wall is glass now.")
    [seen_request] = seen(stub)
    assert seen_request["headers"]["Authorization"] == "Bearer s3cret"
    body = seen_request["body"]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("judge", 0.0, 77)
    assert "logprobs" not in body
    [message] = body["messages"]
    assert message["role"] == "user"
    source_part, edited_part, text_part = message["content"]
    assert decode_data_url(source_part["image_url"]["url"]).tobytes() == RED.tobytes()
    assert decode_data_url(edited_part["image_url"]["url"]).tobytes() == BLUE.tobytes()
    assert text_part == {"type": "text", "text": judge.template("execution").render(request.text)}
    assert "Make it blue." in text_part["text"]


def test_key_file_wins_and_unset_env_sends_no_key(stub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRM_TEST_UNSET_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    answer = format_answer("consistency", 5, "Unchanged.")
    critic(stub, api_key_env="FIRM_TEST_UNSET_KEY").judge([scripted("a", "consistency", answer=answer)])
    critic(stub, api_key_file=str(key_file)).judge([scripted("b", "consistency", answer=answer)])

    no_key, with_file = seen(stub)
    assert "Authorization" not in no_key["headers"]
    assert with_file["headers"]["Authorization"] == "Bearer from-file"


def test_configured_template_file_is_used(stub: str, tmp_path: Path) -> None:
    template = tmp_path / "strict.txt"
    template.write_text('Judge the edit "{text}". Answer {{"score": [n]}}.')
    judge = critic(stub, templates={"execution": str(template)})
    judge.judge([scripted("t", answer=format_answer("execution", 2, "No."))])

    text = seen(stub)[0]["body"]["messages"][0]["content"][-1]["text"]
    assert text.startswith('Judge the edit "Make it blue. <<stub')
    assert text.endswith('Answer {"score": [n]}.')


def test_5xx_and_429_are_retried_until_the_server_answers(stub: str) -> None:
    answer = format_answer("execution", 3, "Half done.")
    judge = critic(stub, max_retries=3)
    verdicts = judge.judge(
        [
            scripted("flaky", answer=answer, fail=2, status=503),
            scripted("busy", answer=answer, fail=1, status=429, retry_after=0),
        ]
    )
    assert [v.score for v in verdicts] == [3, 3]
    assert sorted(keys_seen(stub)) == ["busy", "busy", "flaky", "flaky", "flaky"]  # failures, then the answers


def test_retries_run_out_into_an_invalid_verdict_with_the_server_message(stub: str) -> None:
    judge = critic(stub, max_retries=2)
    [verdict] = judge.judge([scripted("down", fail=99, status=502, error="upstream model crashed")])

    assert verdict.score is None
    assert verdict.invalid_reason is not None
    assert "502" in verdict.invalid_reason
    assert "upstream model crashed" in verdict.invalid_reason
    assert "3 attempts" in verdict.invalid_reason
    assert keys_seen(stub) == ["down"] * 3


def test_timeout_is_retried_then_becomes_an_invalid_verdict(stub: str) -> None:
    judge = critic(stub, timeout_s=0.2, max_retries=1)
    slow, fine = judge.judge(
        [scripted("slow", fail=99, status=0, hang=1.0), scripted("fine", answer=format_answer("execution", 5, "Yes."))]
    )

    assert slow.score is None
    assert slow.invalid_reason is not None
    assert "timed out after 0.2 s" in slow.invalid_reason
    assert "2 attempts" in slow.invalid_reason
    assert fine.score == 5


def test_a_timeout_then_a_prompt_answer_succeeds(stub: str) -> None:
    judge = critic(stub, timeout_s=0.2, max_retries=1)
    [verdict] = judge.judge([scripted("once", fail=1, status=0, hang=1.0, answer=format_answer("execution", 2, "No."))])
    assert verdict.score == 2


def test_400_fails_that_item_at_once_with_the_server_message(stub: str) -> None:
    judge = critic(stub, max_retries=3)
    bad, good = judge.judge(
        [
            scripted("bad", fail=99, status=400, error="image exceeds the maximum size"),
            scripted("good", answer=format_answer("execution", 4, "Done.")),
        ]
    )

    assert bad.invalid_reason is not None
    assert "400" in bad.invalid_reason
    assert "image exceeds the maximum size" in bad.invalid_reason
    assert good.score == 4
    assert sorted(keys_seen(stub)) == ["bad", "good"]  # no retry of the 400


def test_verdicts_keep_input_order_when_answers_arrive_out_of_order(stub: str) -> None:
    scores = [1, 2, 3, 4, 5, 1, 2, 3]
    # The first requests answer last, so completion order is the reverse of input order.
    requests = [
        scripted(f"o{i}", answer=format_answer("execution", s, f"item {i}"), delay=0.05 * (len(scores) - i))
        for i, s in enumerate(scores)
    ]
    judge = critic(stub, concurrency=4)
    verdicts = judge.judge(requests)

    assert [v.score for v in verdicts] == scores
    assert [v.reasoning for v in verdicts] == [f"item {i}" for i in range(len(scores))]
    assert httpx.get(f"{stub}/_stats").json()["max_in_flight"] == 4


def test_unparseable_answer_is_invalid_never_a_score(stub: str) -> None:
    judge = critic(stub, max_tokens=5)
    prose, cut = judge.judge(
        [
            scripted("prose", answer="The edit looks fine to me."),
            scripted("cut", answer='{"reasoning": "The wall', finish="length"),
        ]
    )

    assert prose.score is None
    assert prose.raw == "The edit looks fine to me."
    assert cut.score is None
    assert cut.invalid_reason is not None
    assert "max_tokens=5" in cut.invalid_reason


def test_unreachable_server_raises_connection_error_naming_the_url(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = OpenAICompatibleCritic(base_url=url, model="judge", api_key_env=None, max_retries=2, backoff_s=0)
    with caplog.at_level("WARNING", logger="firm.critics.openai"), pytest.raises(ConnectionError, match=url):
        judge.judge([scripted(f"x{i}") for i in range(6)])  # six requests at once: one warning per retry round
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        f"cannot reach {url}/chat/completions, retrying (1/2)",
        f"cannot reach {url}/chat/completions, retrying (2/2)",
    ]


def test_a_server_that_answered_once_and_then_went_away_gives_invalid_verdicts() -> None:
    answer = format_answer("execution", 4, "ok")
    with stub_process() as url:
        judge = critic(url, max_retries=1)
        [first] = judge.judge([scripted("before", answer=answer)])
    [after] = judge.judge([scripted("after", answer=answer)])

    assert first.score == 4
    assert after.invalid_reason is not None
    assert after.invalid_reason.startswith(f"cannot connect to {url}/v1/chat/completions")


def test_logprobs_give_the_score_distribution_at_the_score_token(stub: str) -> None:
    top = {"4": math.log(0.6), "3": math.log(0.2), "5": math.log(0.1), " ": math.log(0.1)}
    answer = format_answer("execution", 4, "Mostly glass, 3 panes missing.")
    judge = critic(stub, logprobs=True)
    [verdict] = judge.judge([scripted("lp", answer=answer, top=top, top_char="4")])

    body = seen(stub)[0]["body"]
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 10
    assert verdict.score == 4
    assert verdict.distribution == pytest.approx((0.0, 0.0, 2 / 9, 6 / 9, 1 / 9))
    assert verdict.expected == pytest.approx(3 * 2 / 9 + 4 * 6 / 9 + 5 / 9)


def test_logprobs_without_the_score_token_leave_the_distribution_out(stub: str) -> None:
    judge = critic(stub, logprobs=True)
    # Top logprobs at the score position that do not contain the chosen score: not trustworthy, left out.
    [verdict] = judge.judge([scripted("lp", answer=format_answer("execution", 4, "ok"), top={"x": -0.1}, top_char="4")])
    assert verdict.score == 4
    assert verdict.distribution is None
    assert verdict.expected is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "http"),
        ({"image_format": "webp"}, "image_format"),
        ({"concurrency": 0}, "concurrency"),
        ({"templates": {"execution": "no_such_template"}}, "no_such_template"),
        ({"templates": {"aesthetics": "execution"}}, "unknown dimension"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    settings: dict[str, Any] = {"base_url": "http://127.0.0.1:1/v1", "model": "judge", **kwargs}
    with pytest.raises(ValueError, match=match):
        OpenAICompatibleCritic(**settings)


def test_configured_from_yaml_through_the_critic_base_class() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--critic", type=Critic)
    config = parser.parse_string(
        """
        critic:
          class_path: firm.critics.openai.OpenAICompatibleCritic
          init_args:
            base_url: http://127.0.0.1:8000/v1
            model: VisionXLab/FIRM-Edit-8B
            templates: {consistency: execution}
            concurrency: 16
            score_range: {low: 0, high: 10}
            extra_body: {chat_template_kwargs: {enable_thinking: false}}
        """
    )
    judge = parser.instantiate(config).critic

    assert isinstance(judge, OpenAICompatibleCritic)
    assert (judge.url, judge.concurrency, judge.score_range) == (
        "http://127.0.0.1:8000/v1/chat/completions",
        16,
        ScoreRange(0, 10),
    )
    assert judge.template("consistency").name == "execution"
    request = JudgeRequest("consistency", "x", image=BLUE, source=RED)
    assert judge.request_body(request, "q")["chat_template_kwargs"] == {"enable_thinking": False}

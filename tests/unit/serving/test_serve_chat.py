"""The OpenAI-compatible chat route on a tiny real critic: the same greedy text as the in-process judge."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import httpx
import pytest
from PIL import Image
from serve_critics import serving

from firm.critics.base import DIMENSIONS, JudgeRequest
from firm.critics.messages import build_messages, image_data_url
from firm.critics.openai import OpenAICompatibleCritic
from firm.critics.transformers import GenerativeJudge
from firm.serving.app import ServeConfig, create_app
from firm.testing import build_tiny_critic

NAME = "tiny-critic"
TOKEN = "chat-token"
EDIT = JudgeRequest(
    "execution",
    "make the square blue",
    Image.new("RGB", (32, 32), (200, 30, 30)),
    source=Image.new("RGB", (32, 32), (30, 30, 200)),
)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # Short templates keep the byte-level tiny tokenizer's prompts short, so generation takes milliseconds.
    folder = tmp_path_factory.mktemp("templates")
    for dim in DIMENSIONS:
        (folder / f"{dim}.txt").write_text(f"Rate the {dim} from 1 to 5: {{text}}")
    return {dim: str(folder / f"{dim}.txt") for dim in DIMENSIONS}


@pytest.fixture(scope="module")
def judge(templates: dict[str, str]) -> GenerativeJudge:
    model, processor = build_tiny_critic("qwen3_vl")
    return GenerativeJudge.from_model(model, processor, templates=templates, max_new_tokens=8)


@pytest.fixture(scope="module")
def url(judge: GenerativeJudge) -> Iterator[str]:
    with serving(create_app(judge, ServeConfig(token=TOKEN, served_model_name=NAME, max_wait_ms=5))) as base:
        yield base


def chat(url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


def messages_for(judge: GenerativeJudge, request: JudgeRequest) -> list[dict]:
    return build_messages(request, judge.question(request), image_part=partial(image_data_url, fmt="PNG"))


def test_chat_gives_the_judges_raw_text_for_the_same_conversation(url: str, judge: GenerativeJudge) -> None:
    (expected,) = judge.judge([EDIT])
    answer = chat(url, model=NAME, messages=messages_for(judge, EDIT), max_tokens=8, temperature=0)
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "chat.completion" and body["model"] == NAME
    assert body["choices"][0]["message"] == {"role": "assistant", "content": expected.raw}
    assert body["choices"][0]["finish_reason"] == "length"  # a random model never closes its answer in 8 tokens
    assert body["usage"]["completion_tokens"] == 8 and body["usage"]["prompt_tokens"] > 8


def test_firms_openai_backend_against_firm_serve_matches_the_in_process_judge(
    url: str, judge: GenerativeJudge, templates: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRM_CHAT_TEST_KEY", TOKEN)
    gen = JudgeRequest("quality", "a red cube on a table", EDIT.image)
    requests = [EDIT, gen, JudgeRequest("consistency", "make it blue", EDIT.image, source=EDIT.source)]
    remote = OpenAICompatibleCritic(
        base_url=f"{url}/v1", model=NAME, api_key_env="FIRM_CHAT_TEST_KEY", templates=templates, max_tokens=8
    )
    try:
        over_http = remote.judge(requests)
    finally:
        remote.close()
    in_process = judge.judge(requests)
    assert [v.raw for v in over_http] == [v.raw for v in in_process]
    assert [v.valid for v in over_http] == [v.valid for v in in_process]


def test_logprobs_give_each_answer_token_with_its_top_alternatives(url: str, judge: GenerativeJudge) -> None:
    answer = chat(url, model=NAME, messages=messages_for(judge, EDIT), max_tokens=5, logprobs=True, top_logprobs=3)
    choice = answer.json()["choices"][0]
    tokens = choice["logprobs"]["content"]
    assert len(tokens) == 5
    for token in tokens:
        top = token["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        # Greedy decoding writes the most likely token.
        assert token["token"] == top[0]["token"] and token["logprob"] == pytest.approx(top[0]["logprob"])
        assert token["logprob"] < 0


def test_text_only_and_image_requests_share_the_route(url: str) -> None:
    answer = chat(
        url,
        model=NAME,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_completion_tokens=3,
    )
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"temperature": 0.7}, 400, "unsupported_parameter"),
        ({"stream": True}, 400, "unsupported_parameter"),
        ({"n": 2}, 400, "unsupported_parameter"),
        ({"stop": ["\n"]}, 400, "unsupported_parameter"),
        ({"tools": []}, 400, "invalid_request"),
        ({"model": "gpt-4o"}, 404, "model_not_found"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}
                ]
            },
            400,
            "invalid_image",
        ),
    ],
)
def test_unsupported_requests_are_refused_never_silently_changed(url: str, body: dict, status: int, code: str) -> None:
    full = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **body}
    answer = chat(url, **full)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)


def test_models_lists_the_served_model(url: str) -> None:
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [m["id"] for m in models["data"]] == [NAME]


def test_the_served_name_defaults_to_the_model_path(judge: GenerativeJudge) -> None:
    with serving(create_app(judge)) as base:
        models = httpx.get(f"{base}/v1/models").json()
    assert [m["id"] for m in models["data"]] == [str(judge.model.name_or_path)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chat_template": "{% for i in range(10**9) %}x{% endfor %}"},
        {"tokenize": True},
        {"tools": [{"type": "function"}]},
        {"my_template_override": "x"},
        {"enable_thinking": {"nested": "data"}},
        {"enable_thinking": "x" * 1000},
    ],
)
def test_chat_requests_cannot_replace_or_reconfigure_the_template(url: str, kwargs: dict) -> None:
    answer = chat(
        url, model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=2, chat_template_kwargs=kwargs
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unsupported_parameter"
    assert f"chat_template_kwargs.{next(iter(kwargs))}" in answer.json()["error"]["message"]


def test_template_variables_are_still_accepted(url: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    answer = chat(url, model=NAME, messages=messages, max_tokens=2, chat_template_kwargs={"enable_thinking": False})
    assert answer.status_code == 200


def test_chat_text_and_message_count_are_limited(url: str) -> None:
    too_long = chat(url, model=NAME, messages=[{"role": "user", "content": "x" * 20_000}], max_tokens=2)
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "text_too_long"
    many = [{"role": "user", "content": "hi"}] * 33
    too_many = chat(url, model=NAME, messages=many, max_tokens=2)
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_messages"

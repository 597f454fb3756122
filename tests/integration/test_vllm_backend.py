"""firm's OpenAI-compatible critic against a real vLLM server (CPU build) serving tiny random-weight Qwen-VL critics.

Opt-in: marked ``vllm`` and skipped unless a vLLM venv exists (``FIRM_VLLM_VENV``, default ``<repo>/.venv-vllm``).
Each critic family starts one server (about 20-40 s on a CPU box).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from vllm_support import REPO, VLLMServer, vllm_missing, vllm_server

from firm.critics.base import JudgeRequest
from firm.critics.openai import OpenAICompatibleCritic
from firm.critics.parsing import REASON_CATEGORIES, reason_category
from firm.testing import CRITIC_FAMILIES, save_tiny_critic

EDIT_PAIR = REPO.parent / "shared" / "fixtures" / "editscore"
MAX_TOKENS = 32

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(vllm_missing() is not None, reason=str(vllm_missing()))]


@pytest.fixture(scope="module", params=CRITIC_FAMILIES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, VLLMServer]]:
    """A tiny critic folder of one family and a vLLM server serving it."""
    tmp = tmp_path_factory.mktemp(f"vllm-{request.param}")
    folder = save_tiny_critic(tmp / "critic", request.param)
    with vllm_server(folder, log_path=tmp / "vllm.log") as server:
        yield folder, server


@pytest.fixture(scope="module")
def edit_requests() -> list[JudgeRequest]:
    """The EditScore example pair, judged on execution and consistency."""
    if not EDIT_PAIR.is_dir():
        pytest.skip(f"no edit pair fixture at {EDIT_PAIR}")
    example = json.loads((EDIT_PAIR / "example.json").read_text())
    source = Image.open(EDIT_PAIR / example["input_image"]).convert("RGB")
    edited = Image.open(EDIT_PAIR / example["output_image"]).convert("RGB")
    return [
        JudgeRequest(dim, example["instruction"], image=edited, source=source) for dim in ("execution", "consistency")
    ]


def vllm_critic(server: VLLMServer, **kwargs: object) -> OpenAICompatibleCritic:
    return OpenAICompatibleCritic(
        base_url=server.base_url, model=server.model, api_key_env=None, max_tokens=MAX_TOKENS, timeout_s=120, **kwargs
    )


def test_vllm_answers_become_well_formed_verdicts(
    served: tuple[Path, VLLMServer], edit_requests: list[JudgeRequest]
) -> None:
    _, server = served
    critic = vllm_critic(server, logprobs=True)
    verdicts = critic.judge(edit_requests)
    critic.close()

    assert [v.dimension for v in verdicts] == ["execution", "consistency"]
    for verdict in verdicts:
        assert verdict.raw.strip(), "vLLM wrote no text"
        if verdict.valid:
            assert verdict.score in critic.score_range
        else:
            # Random weights write gibberish: the verdict is invalid because of the *text*, never the transport
            # (a 400 for the logprobs fields, a timeout) and never a made-up score.
            assert verdict.invalid_reason is not None
            assert reason_category(verdict.invalid_reason) in REASON_CATEGORIES, verdict.invalid_reason


def test_vllm_greedy_answer_equals_in_process_transformers(
    served: tuple[Path, VLLMServer], edit_requests: list[JudgeRequest]
) -> None:
    from firm.critics.transformers import GenerativeJudge

    folder, server = served
    critic = vllm_critic(server)
    served_verdicts = critic.judge(edit_requests)
    # batch_size 1: no padding, so the comparison is about the backends, not about batch numerics.
    local = GenerativeJudge(str(folder), max_new_tokens=MAX_TOKENS, batch_size=1, device="cpu", dtype="float32")
    local_verdicts = local.judge(edit_requests)

    # Same prompt tokens (chat template, image tokens) and same greedy tokens: vLLM can return the ids.
    for request in edit_requests:
        body = critic.request_body(request, critic.template(request.dimension).render(request.text))
        answer = httpx.post(critic.url, json={**body, "return_token_ids": True}, timeout=120).json()
        assert answer["prompt_token_ids"] == local.encode([request])["input_ids"][0].tolist()
        assert answer["choices"][0]["token_ids"] == local.answer_tokens([request], MAX_TOKENS)[0]
    critic.close()

    # Random weights write random bytes. An answer cut off inside a multi-byte UTF-8 character ends in U+FFFD when
    # transformers decodes it, while vLLM's incremental detokenizer holds the unfinished bytes back; the tokens are
    # equal (above), so the texts are compared without that tail.
    assert [v.raw.rstrip("\ufffd") for v in served_verdicts] == [v.raw.rstrip("\ufffd") for v in local_verdicts]
    assert [v.score for v in served_verdicts] == [v.score for v in local_verdicts]


def test_firm_score_cli_through_the_openai_backend(served: tuple[Path, VLLMServer], capsys) -> None:
    """`firm score --critic openai` against the served critic prints both verdicts and the CME reward block."""
    from firm.cli import main

    _, server = served
    example = json.loads((EDIT_PAIR / "example.json").read_text())
    argv = ["score", "--critic", "openai", "--base-url", server.base_url, "--model", server.model]
    argv += ["--source", str(EDIT_PAIR / example["input_image"]), "--image", str(EDIT_PAIR / example["output_image"])]
    argv += ["--instruction", example["instruction"]]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["verdicts"]) == {"execution", "consistency"}
    assert all(v["raw"] for v in result["verdicts"].values())
    valid = all(v["valid"] for v in result["verdicts"].values())
    assert result["reward"]["name"] == "cme" and result["reward"]["valid"] is valid
    assert (result["reward"]["total"] is None) is (not valid)

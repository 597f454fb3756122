"""``firm serve`` against ``vllm serve`` hosting the same tiny critic: the same greedy answers through every route.

Opt-in: marked ``vllm`` and skipped unless a vLLM venv exists (``FIRM_VLLM_VENV``, default ``<repo>/.venv-vllm``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image
from vllm_support import VLLMServer, vllm_missing, vllm_server

from firm.critics.base import DIMENSIONS, JudgeRequest
from firm.critics.openai import OpenAICompatibleCritic
from firm.critics.remote import RemoteCritic
from firm.serving.process import ServeProcess
from firm.testing import save_tiny_critic

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(vllm_missing() is not None, reason=str(vllm_missing()))]

MAX_TOKENS = 16
REQUESTS = [
    JudgeRequest(
        "execution",
        "make the square blue",
        Image.new("RGB", (32, 32), (200, 30, 30)),
        source=Image.new("RGB", (32, 32), (30, 30, 200)),
    ),
    JudgeRequest("quality", "a green square", Image.new("RGB", (32, 32), (30, 200, 30))),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], VLLMServer, str]]:
    tmp = tmp_path_factory.mktemp("serve-vllm")
    folder = save_tiny_critic(tmp / "critic", "qwen3_vl")
    templates = {}
    for dim in DIMENSIONS:
        (tmp / f"{dim}.txt").write_text(f"Rate the {dim} from 1 to 5: {{text}}")
        templates[dim] = str(tmp / f"{dim}.txt")
    args = ["--model", str(folder), "--device", "cpu", "--port", "0", "--max-new-tokens", str(MAX_TOKENS)]
    args += ["--served-model-name", "critic", *(f"--template={d}={p}" for d, p in templates.items())]
    with vllm_server(folder, log_path=tmp / "vllm.log") as vllm, ServeProcess(args) as firm:
        assert firm.url is not None
        yield templates, vllm, firm.url


def openai_critic(base_url: str, templates: dict[str, str]) -> OpenAICompatibleCritic:
    return OpenAICompatibleCritic(
        base_url=base_url, model="critic", api_key_env=None, templates=templates, max_tokens=MAX_TOKENS, timeout_s=120
    )


def test_firm_serve_and_vllm_serve_give_the_same_greedy_answers(setup: tuple[dict[str, str], VLLMServer, str]) -> None:
    templates, vllm, firm_url = setup
    via_vllm = openai_critic(vllm.base_url, templates).judge(REQUESTS)
    via_firm_chat = openai_critic(f"{firm_url}/v1", templates).judge(REQUESTS)
    via_firm_judge = RemoteCritic(base_url=firm_url).judge(REQUESTS)
    assert all(v.raw for v in via_vllm)
    assert [v.raw for v in via_firm_chat] == [v.raw for v in via_vllm]
    assert [v.raw for v in via_firm_judge] == [v.raw for v in via_vllm]

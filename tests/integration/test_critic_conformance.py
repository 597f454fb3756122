"""Conformance over the critic registry: every registered critic is built tiny and judges every dimension.

One `firm serve` process hosting a tiny Qwen3-VL critic stands behind the critics that talk HTTP (its judge route
for `remote`, its OpenAI-compatible route for `openai`). Registering a critic without settings here fails the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from firm import plugins
from firm.critics import DIMENSIONS, Critic, JudgeRequest, reason_category
from firm.critics.parsing import REASON_CATEGORIES
from firm.serving.process import ServeProcess
from firm.testing import save_tiny_critic

SERVED_NAME = "tiny-critic"


@pytest.fixture(scope="module")
def critic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_critic(tmp_path_factory.mktemp("conformance") / "tiny", "qwen3_vl")


@pytest.fixture(scope="module")
def server_url(critic_dir: Path) -> Iterator[str]:
    args = ["--model", str(critic_dir), "--device", "cpu", "--max-new-tokens", "8", "--port", "0"]
    with ServeProcess([*args, "--served-model-name", SERVED_NAME], env={"OMP_NUM_THREADS": "1"}) as proc:
        assert proc.url is not None
        yield proc.url


# name -> settings of a tiny instance, given the critic folder and the URL of a server hosting it.
SETTINGS: dict[str, Callable[[Path, str], dict[str, Any]]] = {
    "generative": lambda folder, url: {"model": str(folder), "max_new_tokens": 8, "device": "cpu"},
    "score_token": lambda folder, url: {"model": str(folder), "device": "cpu"},
    "openai": lambda folder, url: {"base_url": f"{url}/v1", "model": SERVED_NAME, "api_key_env": None, "max_tokens": 8},
    "remote": lambda folder, url: {"base_url": url, "token_env": None},
}


def _requests() -> list[JudgeRequest]:
    source, edited = Image.new("RGB", (48, 48), (200, 30, 30)), Image.new("RGB", (48, 48), (30, 30, 200))
    return [
        JudgeRequest(dim, "make the square blue", edited, source=source if task == "edit" else None)
        for dim, task in DIMENSIONS.items()
    ]


@pytest.mark.parametrize("plugin", plugins.discover("firm.critics"), ids=lambda p: p.name)
def test_every_registered_critic_judges_every_dimension(plugin, critic_dir, request):
    assert plugin.name in SETTINGS, f"registered critic {plugin.name!r} has no tiny settings in this conformance test"
    needs_server = "base_url" in SETTINGS[plugin.name](critic_dir, "http://x")
    url = request.getfixturevalue("server_url") if needs_server else ""
    critic = plugin.load()(**SETTINGS[plugin.name](critic_dir, url))
    assert isinstance(critic, Critic)
    try:
        verdicts = critic.judge(_requests())
    finally:
        critic.close()
    assert [v.dimension for v in verdicts] == list(DIMENSIONS)
    for verdict in verdicts:
        if verdict.valid:
            assert verdict.score in critic.score_range
        else:  # random weights: invalid for a reason about the text, never a transport failure or a made-up score
            assert verdict.invalid_reason is not None
            assert reason_category(verdict.invalid_reason) in REASON_CATEGORIES, verdict.invalid_reason

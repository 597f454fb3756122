"""Conformance over the critic registry: every registered critic is built tiny and judges every dimension.

The critics that load a model get the tiny Qwen3-VL critic's folder; the critics that talk HTTP get the session's
`firm serve` process hosting that folder (the ``firm_server`` fixture): its judge route for `remote`, its
OpenAI-compatible route for `openai`. Each is built by the critic factory, as `firm score`, `bench` and `serve` build
theirs. Registering a critic without settings here fails the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from serve_support import FirmServer

from firm import plugins
from firm.critics import DIMENSIONS, Critic, JudgeRequest, reason_category
from firm.critics.factory import CriticSpec, build_critic
from firm.critics.parsing import REASON_CATEGORIES

# name -> settings of a tiny instance of a critic that loads the critic folder itself.
IN_PROCESS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "generative": lambda folder: {"model": str(folder), "max_new_tokens": 8, "device": "cpu"},
    "score_token": lambda folder: {"model": str(folder), "device": "cpu"},
    "shapes": lambda folder: {},  # reads pixels and text itself; these plain squares are not ShapesWorld scenes
}
# name -> settings of a tiny instance of a critic that talks to a server hosting the critic folder. The server's chat
# route names its model by the --model path, as no --served-model-name is given.
OVER_HTTP: dict[str, Callable[[FirmServer], dict[str, Any]]] = {
    "openai": lambda server: {
        "base_url": f"{server.url}/v1",
        "model": str(server.critic_dir),
        "api_key_env": None,
        "api_key_file": str(server.token_file),
        "max_tokens": 8,
    },
    "remote": lambda server: {"base_url": server.url, "token_env": None, "token_file": str(server.token_file)},
}


def _requests() -> list[JudgeRequest]:
    source, edited = Image.new("RGB", (48, 48), (200, 30, 30)), Image.new("RGB", (48, 48), (30, 30, 200))
    return [
        JudgeRequest(dim, "make the square blue", edited, source=source if task == "edit" else None)
        for dim, task in DIMENSIONS.items()
    ]


@pytest.mark.parametrize("plugin", plugins.discover("firm.critics"), ids=lambda p: p.name)
def test_every_registered_critic_judges_every_dimension(plugin, tiny_critic_dir, request):
    assert plugin.name in {*IN_PROCESS, *OVER_HTTP}, (
        f"registered critic {plugin.name!r} has no tiny settings in this conformance test"
    )
    if plugin.name in OVER_HTTP:  # the server starts only when a critic needs it
        settings = OVER_HTTP[plugin.name](request.getfixturevalue("firm_server"))
    else:
        settings = IN_PROCESS[plugin.name](tiny_critic_dir)
    critic = build_critic(CriticSpec(plugin.name, settings))
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

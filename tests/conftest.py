"""Fixtures shared by the tests: tiny critics (in memory and saved), a running ``firm serve``, short templates, and
the environment of DeepSpeed processes.

Heavy imports (torch, transformers) happen inside the fixtures, so collecting a test that uses none of them stays
fast. The environment every test sees (offline, no installed plugins) is set by the root conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from serve_support import LIMITS, MAX_NEW_TOKENS, SERVER_ENV, TOKEN, FirmServer, serve_args

from firm.critics.base import DIMENSIONS
from firm.serving.process import ServeProcess

REPO = Path(__file__).resolve().parents[1]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # tiny_critic is parametrised here rather than with params=CRITIC_FAMILIES: reading CRITIC_FAMILIES imports
    # torch and transformers (about 4 s), which only the tests that use a tiny critic should pay for.
    if "tiny_critic" in metafunc.fixturenames:
        from firm.testing import CRITIC_FAMILIES

        metafunc.parametrize("tiny_critic", CRITIC_FAMILIES, ids=CRITIC_FAMILIES, indirect=True, scope="session")


@pytest.fixture(scope="session")
def tiny_critic(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """The in-memory ``(model, processor)`` of a tiny random critic, one per family of ``CRITIC_FAMILIES``."""
    from firm.testing import build_tiny_critic

    return build_tiny_critic(request.param)


@pytest.fixture(scope="session")
def tiny_critic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-VL critic saved as a Hugging Face folder (read-only: tests write elsewhere)."""
    from firm.testing import save_tiny_critic

    return save_tiny_critic(tmp_path_factory.mktemp("critic") / "tiny", "qwen3_vl")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for the test, restored afterwards.

    On two shared cores, several threads per process contend with dataloader workers and other processes and make
    the tiny critic's tests many times slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def short_templates() -> dict[str, str]:
    """The debug recipe's execution and consistency templates: fewer tokens keep CPU tests fast."""
    folder = REPO / "recipes" / "debug" / "templates"
    return {dim: str(folder / f"{dim}.txt") for dim in ("execution", "consistency")}


@pytest.fixture(scope="session")
def deepspeed_env() -> Mapping[str, str]:
    """The environment for processes that start DeepSpeed (read-only; copy it to add variables).

    Taken once per session from this process's environment: without the rank variables an in-process distributed
    run leaves (they would make Lightning think it was launched as one rank), offline, and DeepSpeed's compiled ops
    cached in the repo's venv, as ``make`` does.
    """
    from critic_sft_support import DISTRIBUTED_ENV

    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".venv" / "torch_extensions"))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return MappingProxyType(env)


@pytest.fixture(scope="session")
def firm_server(tiny_critic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirmServer]:
    """A real ``firm serve`` process hosting ``tiny_critic_dir`` on CPU: bearer token, short templates, cme reward.

    Its flags: ``--max-new-tokens 8``, a ``Rate the {dim} from 1 to 5: {text}`` template per dimension (short
    prompts for the byte-level tokenizer), ``--token-file``, ``--reward cme``, a free port and small request limits
    (``serve_support.LIMITS``).
    """
    folder = tmp_path_factory.mktemp("firm_server")
    templates = {}
    for dim in DIMENSIONS:
        (folder / f"{dim}.txt").write_text(f"Rate the {dim} from 1 to 5: {{text}}")
        templates[dim] = str(folder / f"{dim}.txt")
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    args = serve_args(tiny_critic_dir, templates, token_file, "--port", "0", "--reward", "cme", *LIMITS)
    with ServeProcess(args, env=SERVER_ENV) as proc:
        assert proc.url is not None
        yield FirmServer(proc.url, TOKEN, token_file, tiny_critic_dir, templates, MAX_NEW_TOKENS)

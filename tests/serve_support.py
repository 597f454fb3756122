"""The ``firm serve`` process the tests share (the ``firm_server`` fixture in conftest.py): what it hosts, how to reach
it, and the flags that start another server hosting the same critic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The server's bearer token.
TOKEN = "integration-token"
#: Bearer header for plain HTTP requests to the server.
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The server's answer budget, in tokens, for every dimension.
MAX_NEW_TOKENS = 8
# One intra-op thread: the tiny model gains nothing from more, and OpenMP threads spinning on a busy two-core
# machine made every forward pass several times slower.
SERVER_ENV = {"OMP_NUM_THREADS": "1"}
#: Request limits small enough for tests to exceed: 300 kB bodies, 8 items, 64 x 64 pixels per image.
LIMITS = ("--max-body-bytes", "300000", "--max-items", "8", "--max-image-pixels", str(64 * 64))


@dataclass(frozen=True)
class FirmServer:
    """A running ``firm serve`` hosting a tiny critic.

    Attributes:
        url: the server's base URL (``http://127.0.0.1:PORT``).
        token: its bearer token.
        token_file: the file holding the token (``--token-file``).
        critic_dir: the critic's Hugging Face folder (``--model``); the chat route's model name is ``str(critic_dir)``.
        templates: dimension -> template file (``--template``).
        max_new_tokens: the answer budget of every dimension (``--max-new-tokens``).
    """

    url: str
    token: str
    token_file: Path
    critic_dir: Path
    templates: dict[str, str]
    max_new_tokens: int


def serve_args(
    critic_dir: Path, templates: dict[str, str], token_file: Path, *extra: str, max_new_tokens: int = MAX_NEW_TOKENS
) -> list[str]:
    """The ``firm serve`` flags that host ``critic_dir`` on CPU with these templates and token, then ``extra``."""
    args = ["--model", str(critic_dir), "--device", "cpu", "--max-new-tokens", str(max_new_tokens)]
    for dim, path in templates.items():
        args += ["--template", f"{dim}={path}"]
    return [*args, "--token-file", str(token_file), *extra]

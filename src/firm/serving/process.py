"""Run ``firm serve`` as a child process: start it, wait until it listens, stop it gracefully or kill it.

Used by benchmarks and tests, and by scripts that start one server per GPU::

    servers = [ServeProcess(["--model", "./critic", "--port", str(8700 + gpu)], env={"CUDA_VISIBLE_DEVICES": str(gpu)})
               for gpu in range(4)]
    urls = [s.start() for s in servers]
    critic = RemoteCritic(base_url=urls)
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO

#: How ``firm serve`` is started: this interpreter, so the child sees the same environment and firm.
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "firm.cli", "serve")

READY_PREFIX = "firm serve: listening on "


class ServeProcess:
    """A ``firm serve`` child process.

    Args:
        args: the flags after ``firm serve`` (``--model``, ``--port 0`` ...).
        env: variables added to this process's environment for the child.
        command: the command that starts the server, before ``args``.
        ready_timeout_s: how long :meth:`start` waits for the server to listen.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        self.args = list(args)
        self.env = dict(env or {})
        self.command = list(command or DEFAULT_COMMAND)
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._stdout: queue.Queue[str | None] = queue.Queue()

    def start(self) -> str:
        """Start the server and return its base URL once it accepts connections.

        Raises:
            RuntimeError: when the server exits or does not listen within ``ready_timeout_s``; with its last
                lines of stderr.
        """
        assert self.proc is None or self.proc.poll() is not None, "the server is already running"
        self.url = None
        self._stderr.clear()
        self._stdout = queue.Queue()
        self.proc = subprocess.Popen(
            [*self.command, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env},
        )
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, None), daemon=True).start()
        try:
            while True:
                line = self._stdout.get(timeout=self.ready_timeout_s)
                if line is None:
                    code = self.proc.wait()
                    raise RuntimeError(f"firm serve exited with code {code} before listening:\n{self.stderr_tail()}")
                if line.startswith(READY_PREFIX):
                    self.url = line[len(READY_PREFIX) :].strip()
                    return self.url
        except queue.Empty:
            self.kill()
            raise RuntimeError(
                f"firm serve did not listen within {self.ready_timeout_s:g} s:\n{self.stderr_tail()}"
            ) from None

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr."""
        return "".join(self._stderr)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM: stop accepting, finish the requests in flight, exit. Returns the exit code."""
        return self._stop(signal.SIGTERM, timeout_s)

    def kill(self) -> int:
        """SIGKILL: die at once, as a crash would. Returns the exit code."""
        return self._stop(signal.SIGKILL, 30.0)

    def _stop(self, sig: int, timeout_s: float) -> int:
        assert self.proc is not None, "the server was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def _pump(self, stream: IO[str] | None, lines: queue.Queue[str | None] | None) -> None:
        assert stream is not None
        for line in stream:
            if lines is None:
                self._stderr.append(line)
            else:
                lines.put(line)
        if lines is not None:
            lines.put(None)

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout_s=30.0)
            except subprocess.TimeoutExpired:
                self.kill()

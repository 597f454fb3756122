"""HTTP plumbing shared by the critics that call a server (the OpenAI-compatible backend, firm serve's client).

One keep-alive ``httpx.Client`` and one worker pool per critic, opened on first use and reopened after ``close()``;
the bearer token read from a file or an environment variable; the server's ``Retry-After`` hint and error message.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from firm.errors import check_file

#: Longest wait for a TCP connection (an unreachable host otherwise holds a request for its whole timeout).
CONNECT_TIMEOUT_S = 10.0


class PooledHttp:
    """A lazily opened keep-alive client plus a thread pool, safe to open and close from several threads.

    Args:
        token: sent as ``Authorization: Bearer <token>``; no header when None.
        timeout_s: timeout of one HTTP request.
        connections: keep-alive connections held at most.
        workers: threads sending requests at once.
        name: thread-name prefix, for debugging.
    """

    def __init__(self, token: str | None, timeout_s: float, connections: int, workers: int, name: str) -> None:
        self.token, self.timeout_s, self.connections, self.workers, self.name = (
            token,
            timeout_s,
            connections,
            workers,
            name,
        )
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def open(self) -> tuple[httpx.Client, ThreadPoolExecutor]:
        """The client and the pool, opened if needed."""
        with self._lock:
            if self._client is None or self._pool is None:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                limits = httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections)
                # Connecting gets at most CONNECT_TIMEOUT_S: a host that drops packets must not cost the whole timeout.
                timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_S))
                self._client = httpx.Client(headers=headers, timeout=timeout, limits=limits)
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
            return self._client, self._pool

    def close(self) -> None:
        """Finish queued work, close connections and threads; a later :meth:`open` starts afresh."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._client is not None:
                self._client.close()
            self._client, self._pool = None, None


def read_secret(env: str | None, file: str | None, what: str) -> str | None:
    """A token from ``file`` (which wins) or the environment variable ``env``; None when neither holds one.

    Raises:
        FileNotFoundError: naming ``what`` when ``file`` is given but missing or a directory.
    """
    if file is not None:
        path = check_file(Path(file).expanduser(), what, FileNotFoundError)
        return path.read_text().strip() or None
    if env is None:
        return None
    return os.environ.get(env, "").strip() or None


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds; None when absent or in the HTTP-date form (backoff applies then)."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_message(response: httpx.Response) -> str:
    """The server's error message: OpenAI's ``{"error": {"message"}}``, vLLM's older ``{"message"}``, else the text."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return response.text[:500]

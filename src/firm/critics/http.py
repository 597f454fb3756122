"""HTTP plumbing shared by the critics that call a server (the OpenAI-compatible backend, firm serve's client).

One keep-alive ``httpx.Client`` and one worker pool per critic, opened on first use and reopened after ``close()``;
the bearer token read from a file or an environment variable; the server's ``Retry-After`` hint and error message.
"""

from __future__ import annotations

import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


#: Longest wait between two attempts, whatever the backoff or the server's Retry-After says.
MAX_BACKOFF_S = 30.0


class Retryable(Exception):
    """An attempt that failed in a way worth retrying; ``reason`` is what the caller reports if retries run out.

    Attributes:
        retry_after: the server's Retry-After hint in seconds, when it sent one.
        connect_error: nothing answered at all (refused, unknown host): a wrong URL when it never succeeded.
        answered: the server did answer (429, 5xx), so it is reachable.
    """

    def __init__(
        self, reason: str, retry_after: float | None = None, connect_error: bool = False, answered: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.connect_error = connect_error
        self.answered = answered


class Refused(Exception):
    """A 4xx answer: the request itself is wrong, so retrying cannot help; ``reason`` says what the server said."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


IMAGE_FORMATS = ("PNG", "JPEG")


def check_client_settings(
    base_url: str, image_format: str, concurrency: int, timeout_s: float, max_retries: int, backoff_s: float
) -> None:
    """The settings every OpenAI-compatible client checks at construction.

    Raises:
        ValueError: for a URL that is not http(s), an image format other than PNG or JPEG, or a setting out of range.
    """
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    if image_format.upper() not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if concurrency < 1 or timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
        raise ValueError(
            "need concurrency >= 1, timeout_s > 0, max_retries >= 0 and backoff_s >= 0; got "
            f"{concurrency}, {timeout_s}, {max_retries}, {backoff_s}"
        )


def post_attempt(client: httpx.Client, url: str, body: Any, timeout_s: float) -> httpx.Response:
    """One POST of a JSON body: the response when it succeeded (status below 400).

    Raises:
        Retryable: connection errors, timeouts, network errors, 429 and 5xx answers.
        Refused: other 4xx answers.
    """
    try:
        response = client.post(url, json=body)
    except (httpx.ConnectError, httpx.ConnectTimeout) as err:  # refused, unknown host, or nothing answers at all
        raise Retryable(f"cannot connect to {url}: {err or type(err).__name__}", connect_error=True) from err
    except httpx.TimeoutException as err:
        raise Retryable(f"timed out after {timeout_s:g} s ({type(err).__name__}) at {url}") from err
    except (httpx.NetworkError, httpx.RemoteProtocolError) as err:
        raise Retryable(f"{type(err).__name__} talking to {url}: {err}") from err
    status = response.status_code
    if status == 429 or status >= 500:
        raise Retryable(
            f"server answered {status}: {error_message(response)}", retry_after=retry_after(response), answered=True
        )
    if status >= 400:
        raise Refused(f"server refused the request with {status}: {error_message(response)}")
    return response


def backoff_delay(backoff_s: float, attempt: int, hint: float | None) -> float:
    """Seconds to wait before retry ``attempt + 1``: the server's hint, else ``backoff_s * 2**attempt`` with full
    jitter (so concurrent retries do not hit the server in lockstep), at most :data:`MAX_BACKOFF_S`."""
    if hint is not None:
        return min(hint, MAX_BACKOFF_S)
    return min(backoff_s * 2**attempt, MAX_BACKOFF_S) * random.uniform(0.5, 1.5)

"""A critic that judges through ``firm serve``: pooled connections, concurrent chunks, retries that outlast restarts.

Every item gets an id (a UUID) once, before its first attempt, and keeps it through every retry; the server answers a
repeated id from its cache (or its journal), so a retry after a lost answer is never judged twice. Connection
failures, timeouts, 429 and 5xx answers are retried with capped exponential backoff and jitter, moving to the next
URL each time when several are given; a 4xx is the request's own fault and is not retried. A server that has never
answered gets ``max_retries`` retries (a wrong or dead URL fails in seconds, saying so on stderr at each retry); once
it has answered, failures are retried until ``retry_timeout_s`` has passed, so a server restart costs retries, not
the run.

Example:
    >>> critic = RemoteCritic(base_url="http://localhost:8700")  # token from FIRM_SERVE_TOKEN, if set
    >>> verdicts = critic.judge(requests)  # doctest: +SKIP

In a YAML config, wherever a critic goes::

    critic:
      class_path: firm.critics.remote.RemoteCritic
      init_args: {base_url: "http://critic-0:8700,http://critic-1:8700", token_file: /run/secrets/firm-token}
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

import httpx

from firm.critics.base import FIRM_RANGE, Critic, JudgeRequest, ScoreRange, Verdict
from firm.critics.http import IMAGE_FORMATS, PooledHttp, read_secret, retry_after
from firm.critics.messages import encode_image
from firm.serving.protocol import ROUTE_JUDGE, TOKEN_ENV

log = logging.getLogger(__name__)

#: Statuses worth retrying besides every 5xx: the server asks the client to slow down. Other 4xx answers are the
#: request's own fault and would only be refused again.
RETRY_STATUSES = frozenset({429})


class RemoteCritic(Critic):
    """Judges with a critic hosted by ``firm serve``.

    Requests are sent ``batch_size`` items per HTTP request, ``concurrency`` requests at a time, over one pool of
    kept-alive connections. A request the server refuses as malformed or too large (400, 409, 413) is split and
    resent item by item, so only the offending items become invalid verdicts (with the server's reason). A missing
    or wrong token raises at once.

    Args:
        base_url: the server's URL, e.g. ``http://localhost:8700``; several as a list or comma-separated string
            (chunks go round-robin, and a failed attempt moves on to the next URL).
        token_env: environment variable holding the bearer token; None to send none.
        token_file: file holding the bearer token; takes precedence over ``token_env``.
        batch_size: items per HTTP request.
        concurrency: HTTP requests in flight at once.
        timeout_s: seconds to wait for one answer (the server batches, so allow for a queue); connecting gets at most
            10 s of it.
        max_retries: retries of a request while the server has never answered this critic, before giving up with
            :class:`ConnectionError` (a dead or wrong URL): about 15 s with the default backoff. Raise it when the
            critic may start before its server has loaded the model (``firm serve`` listens once it has).
        retry_timeout_s: once the server has answered, how long to keep retrying one request (through a restart)
            before giving up with :class:`ConnectionError`.
        backoff_s: first backoff; doubled per attempt up to ``max_backoff_s``, with jitter.
        max_backoff_s: longest single backoff.
        image_format: how images are sent: ``PNG`` (lossless) or ``JPEG`` (smaller, lossy).
        score_range: the scale the hosted critic answers on; checked against every answer.

    Raises:
        ValueError: for a URL that is not http(s), an unknown image format or out-of-range settings.
        FileNotFoundError: when ``token_file`` does not exist.
    """

    transport_settings = frozenset(
        {"token_env", "token_file", "batch_size", "concurrency", "timeout_s", "max_retries", "retry_timeout_s",
         "backoff_s", "max_backoff_s"}
    )  # fmt: skip

    def __init__(
        self,
        base_url: str | Sequence[str],
        token_env: str | None = TOKEN_ENV,
        token_file: str | None = None,
        batch_size: int = 16,
        concurrency: int = 4,
        timeout_s: float = 300.0,
        max_retries: int = 8,
        retry_timeout_s: float = 300.0,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        image_format: str = "PNG",
        score_range: ScoreRange = FIRM_RANGE,
    ) -> None:
        urls = [u.strip().rstrip("/") for u in (base_url.split(",") if isinstance(base_url, str) else base_url)]
        urls = [u for u in urls if u]
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise ValueError(f"base_url must be one or more http(s):// URLs, got {base_url!r}")
        if image_format.upper() not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        if batch_size < 1 or concurrency < 1:
            raise ValueError(f"batch_size and concurrency must be >= 1, got {batch_size} and {concurrency}")
        if timeout_s <= 0 or max_retries < 0 or retry_timeout_s < 0 or backoff_s < 0 or max_backoff_s < backoff_s:
            raise ValueError(
                "need timeout_s > 0, max_retries >= 0, retry_timeout_s >= 0 and 0 <= backoff_s <= max_backoff_s; "
                f"got {timeout_s}, {max_retries}, {retry_timeout_s}, {backoff_s}, {max_backoff_s}"
            )
        self.urls = urls
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_timeout_s = retry_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.image_format = image_format.upper()
        self.score_range = score_range
        self._token = read_secret(token_env, token_file, "token_file")
        self._next_url = itertools.count()
        connections = concurrency * len(self.urls)
        self._http = PooledHttp(self._token, timeout_s, connections, concurrency, "firm-remote-critic")
        self._lock = threading.Lock()
        #: Attempts that failed and were retried, since construction (for logs and tests).
        self.retries = 0
        #: Whether any server has answered this critic yet (until then, a failure is probably a wrong URL).
        self.reached = False

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """Judge every request on the server; verdicts in input order.

        Raises:
            ConnectionError: when no server answered a request within ``max_retries`` retries (none has answered this
                critic yet) or within ``retry_timeout_s`` (one has).
            PermissionError: when the server refuses the token.
            RuntimeError: when the server answers something that is not firm's protocol (a wrong URL).
        """
        if not requests:
            return []
        client, pool = self._http.open()
        chunks = [requests[k : k + self.batch_size] for k in range(0, len(requests), self.batch_size)]
        verdicts: list[Verdict] = []
        for chunk_verdicts in pool.map(partial(self._judge_chunk, client), chunks):
            verdicts += chunk_verdicts
        return verdicts

    def close(self) -> None:
        """Close the connections and worker threads; a later :meth:`judge` opens new ones."""
        self._http.close()

    def item(self, request: JudgeRequest, item_id: str) -> dict[str, Any]:
        """The JSON item sent for ``request``."""
        out: dict[str, Any] = {
            "id": item_id,
            "dimension": request.dimension,
            "text": request.text,
            "image": encode_image(request.image, self.image_format),
            "requirement": request.requirement,
        }
        if request.source is not None:
            out["source"] = encode_image(request.source, self.image_format)
        return out

    def _judge_chunk(self, client: httpx.Client, chunk: Sequence[JudgeRequest]) -> list[Verdict]:
        # Ids are fixed before the first attempt: every retry of an item carries the same one.
        items = [self.item(r, uuid.uuid4().hex) for r in chunk]
        status, answer = self._post(client, {"items": items})
        if status in (400, 409, 413) and len(items) > 1:
            # One bad item must not cost the others their verdicts: resend them one by one.
            return [v for item in items for v in self._judge_items(client, [item])]
        return self._verdicts(status, answer, items)

    def _judge_items(self, client: httpx.Client, items: list[dict[str, Any]]) -> list[Verdict]:
        status, answer = self._post(client, {"items": items})
        return self._verdicts(status, answer, items)

    def _verdicts(self, status: int, answer: Any, items: list[dict[str, Any]]) -> list[Verdict]:
        if status in (400, 409, 413):
            reason = f"firm serve refused the item ({status}): {_error_message(answer)}"
            return [Verdict.invalid(item["dimension"], reason) for item in items]
        if status == 401:
            raise PermissionError(f"firm serve refused the token: {_error_message(answer)}")
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("verdicts"), list):
            raise RuntimeError(f"unexpected answer from firm serve ({status}): {str(answer)[:300]}")
        if answer.get("score_range") != [self.score_range.low, self.score_range.high]:
            raise RuntimeError(
                f"the server's critic answers on {answer.get('score_range')}, this client expects "
                f"{[self.score_range.low, self.score_range.high]}; set score_range to match"
            )
        verdicts = [Verdict.from_dict(v) for v in answer["verdicts"]]
        if len(verdicts) != len(items):
            raise RuntimeError(f"firm serve answered {len(verdicts)} verdicts for {len(items)} items")
        return verdicts

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` until an answer that is not worth retrying; returns its status and decoded JSON."""
        deadline = time.monotonic() + self.retry_timeout_s
        attempt = 0
        while True:
            url = self.urls[next(self._next_url) % len(self.urls)] + ROUTE_JUDGE
            hint: float | None = None
            unreachable = False
            try:
                response = client.post(url, json=body)
            except httpx.TransportError as err:  # refused, reset, timed out: the server is down or restarting
                failure = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                unreachable = True
            else:
                self.reached = True  # any HTTP answer: the URL is right, the server may be busy or restarting
                status = response.status_code
                if status not in RETRY_STATUSES and status < 500:
                    return status, _json(response)
                failure = f"{status} {_error_message(_json(response))}"
                hint = retry_after(response)
            delay = min(self.backoff_s * 2**attempt, self.max_backoff_s) * random.uniform(0.5, 1.0)
            if hint is not None:
                delay = min(max(delay, hint), self.max_backoff_s)
            if not self.reached and attempt >= self.max_retries:
                raise ConnectionError(
                    f"cannot reach firm serve at {url} ({failure}) after {attempt + 1} attempts; is it running, and "
                    "is base_url right? (max_retries sets how often a server that never answered is retried)"
                )
            if self.reached and time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"firm serve did not answer within retry_timeout_s={self.retry_timeout_s:g} "
                    f"({attempt + 1} attempts); last: {failure} at {url}"
                )
            if unreachable:
                # On stderr at once (Python's last-resort handler prints warnings when logging is not configured).
                budget = f"{attempt + 1}/{self.max_retries}" if not self.reached else f"{attempt + 1}"
                log.warning("cannot reach %s (%s), retrying (%s) in %.1f s", url, failure, budget, delay)
            else:
                log.debug("retrying in %.2fs after %s from %s", delay, failure, url)
            with self._lock:
                self.retries += 1
            time.sleep(delay)
            attempt += 1


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _error_message(answer: Any) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return str(answer["error"].get("message", answer["error"]))
    return str(answer)[:500]

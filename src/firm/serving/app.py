"""The ``firm serve`` application: FastAPI routes over a :class:`~firm.serving.service.JudgeService`, run by uvicorn.

Routes (JSON; see :mod:`firm.serving.protocol` for the bodies):

====================  ===========================================================================================
``GET /health``       ``{"status": "ok"}``; no token needed, so load balancers can probe it
``GET /metrics``      request counts, latency percentiles, batch sizes, invalid-verdict rate (``?format=prometheus``
                      for Prometheus' text format)
``POST /v1/judge``    items -> verdicts
``POST /v1/reward``   items -> the hosted reward strategy's rewards and the verdicts behind them
``POST /v1/chat/completions``  OpenAI-compatible chat on the hosted model (in-process critics)
``GET /v1/models``    the served model, OpenAI style
====================  ===========================================================================================

Every route but ``/health`` needs ``Authorization: Bearer <token>`` when the server has a token. Refusals are JSON:
400 malformed JSON, a body that does not match the schema, a non-PNG/JPEG or malformed image, an unsupported chat
parameter; 401 missing or wrong token; 404 unknown route, model, or a route the hosted critic cannot serve; 408 a
body that did not arrive in time; 409 an id reused for a different item; 413 body, item count, text or image pixels
over the limits; 429 queue full (items or pixels; retry); 499 the client went away; 503 shutting down (retry).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firm import __version__
from firm.critics.base import Critic, Verdict
from firm.rewards.base import RewardStrategy
from firm.rewards.critic_reward import CriticReward
from firm.serving import protocol
from firm.serving.batcher import BatcherClosed, BatcherFull, MicroBatcher
from firm.serving.metrics import ServerMetrics, prometheus_text
from firm.serving.protocol import ParsedItem, ProtocolError, ServeLimits, error_body
from firm.serving.service import ClientGone, JudgeService, wait_unless_gone

if TYPE_CHECKING:
    from firm.serving.chat import ChatEngine, ChatJob, ChatResult

#: Seconds an idle kept-alive connection stays open.
KEEP_ALIVE_S = 15
#: Most bytes of a request's headers; uvicorn refuses a request whose headers grow past it.
MAX_HEADER_BYTES = 64 * 1024
#: Seconds a client may take to send a request's headers once it has connected or started them (the default).
HEADER_TIMEOUT_S = 10.0

ROUTES = (
    protocol.ROUTE_HEALTH,
    protocol.ROUTE_METRICS,
    protocol.ROUTE_JUDGE,
    protocol.ROUTE_REWARD,
    protocol.ROUTE_CHAT,
    protocol.ROUTE_MODELS,
)


@dataclass(frozen=True)
class ServeConfig:
    """How ``firm serve`` batches, limits and protects requests.

    Attributes:
        max_batch_size: most items per call of the critic's batched ``judge``; keep it at or above the critic's own
            batch size, or the critic's batches are never full.
        max_wait_ms: longest an item waits for others to join its batch. Under load batches fill while the model is
            busy, so this only adds latency when traffic is light.
        max_pending: most items waiting for the model; beyond it requests get 429 and clients back off.
        max_pending_pixels: most decoded image pixels waiting for the model (what queued requests hold in memory,
            3 bytes each); beyond it requests get 429. The default, 256 Mi pixels, is about 768 MiB.
        body_timeout_s: longest a client may take to send its body; a slower one gets 408 and its connection back.
        cache_size: recent results remembered by item id, so a retried item is answered, not judged again.
        journal: JSON-lines file of every judged item with an id, replayed at start-up so retries that reach a
            restarted server are answered from it. None keeps results in memory only.
        token: the bearer token every route but ``/health`` requires; None for no authentication (loopback only).
        served_model_name: the model name of the chat route; the critic's model path when None.
        limits: body size, item count and pixel limits.
    """

    max_batch_size: int = 16
    max_wait_ms: float = 50.0
    max_pending: int = 4096
    max_pending_pixels: int = 256 * 1024 * 1024
    body_timeout_s: float = 60.0
    cache_size: int = 65_536
    journal: Path | None = None
    token: str | None = field(default=None, repr=False)
    served_model_name: str | None = None
    limits: ServeLimits = field(default_factory=ServeLimits)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_wait_ms < 0 or self.max_pending < 1 or self.cache_size < 0:
            raise ValueError(
                "need --max-batch-size >= 1, --max-wait-ms >= 0, --max-pending >= 1 and --cache-size >= 0; got "
                f"{self.max_batch_size}, {self.max_wait_ms}, {self.max_pending}, {self.cache_size}"
            )
        if self.max_pending_pixels < 1 or self.body_timeout_s <= 0:
            raise ValueError(
                f"need --max-pending-pixels >= 1 and --body-timeout > 0; got {self.max_pending_pixels}, "
                f"{self.body_timeout_s}"
            )
        if self.token is not None and not self.token.strip():
            raise ValueError("the token is empty")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to expose an unauthenticated critic beyond this machine.

    Raises:
        ValueError: for a non-loopback host without a token.
    """
    if token is None and not is_loopback(host):
        raise ValueError(
            f"binding {host} exposes the critic to the network, which needs a token: give --token-file or set "
            f"{protocol.TOKEN_ENV} (or bind 127.0.0.1)"
        )


def create_app(
    critic: Critic, config: ServeConfig | None = None, reward: RewardStrategy | None = None, reward_name: str = ""
) -> FastAPI:
    """The ASGI app serving ``critic`` (and ``reward`` over it, when given).

    Args:
        critic: the hosted critic; in-process critics also answer chat completions.
        config: batching, limits and token.
        reward: a reward strategy for ``/v1/reward``; without one that route answers 404.
        reward_name: the strategy's name, echoed in reward answers.

    Raises:
        ValueError: for a reward whose dimensions mix edits and generations.
    """
    config = config or ServeConfig()
    critic_reward = None if reward is None else CriticReward(critic, reward, reward_name)
    metrics = ServerMetrics()
    service = JudgeService(
        critic,
        metrics,
        max_batch_size=config.max_batch_size,
        max_wait_s=config.max_wait_ms / 1000,
        max_pending=config.max_pending,
        cache_size=config.cache_size,
        journal=config.journal,
        max_pending_pixels=config.max_pending_pixels,
    )
    chat = _chat_engine(critic, config)
    limits = config.limits
    score_range = [critic.score_range.low, critic.score_range.high]
    chat_batcher: list[MicroBatcher[ChatJob, ChatResult]] = []  # set in the lifespan, once the event loop runs

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if chat is not None:
            chat_batcher.append(service.batcher(chat.generate, config.max_batch_size))
        yield
        # uvicorn has finished the in-flight requests; finish whatever they left queued, then stop.
        await service.close()

    app = FastAPI(
        title="firm serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    def authorise(request: Request) -> None:
        if config.token is None:
            return
        header = request.headers.get("authorization")
        if not header:
            raise ProtocolError(401, "missing_token", "this server needs 'Authorization: Bearer <token>'")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), config.token.encode()):
            raise ProtocolError(401, "wrong_token", "the bearer token is wrong")

    guarded = [Depends(authorise)]

    async def judge_for(request: Request, items: list[ParsedItem]) -> list[Verdict]:
        """Judge a request's items; a client that goes away while they wait gets them withdrawn, unjudged."""
        try:
            return await service.judge(items, request.is_disconnected)
        except ClientGone as exc:
            raise ProtocolError(499, "client_closed", str(exc)) from None

    @app.get(protocol.ROUTE_HEALTH)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(protocol.ROUTE_METRICS, dependencies=guarded)
    async def get_metrics(format: str = "json") -> Response:
        snapshot = metrics.snapshot(
            {
                "queue": {
                    "pending": service.pending,
                    "running": service.running,
                    "dropped_client_gone": service.dropped,
                },
                "server": {
                    "version": __version__,
                    "critic": f"{type(critic).__module__}.{type(critic).__qualname__}",
                    "reward": reward_name or None,
                    "chat_model": None if chat is None else chat.served_model_name,
                    "max_batch_size": config.max_batch_size,
                    "max_wait_ms": config.max_wait_ms,
                },
            }
        )
        if format == "prometheus":
            return PlainTextResponse(prometheus_text(snapshot), media_type="text/plain; version=0.0.4")
        if format != "json":
            raise ProtocolError(400, "invalid_request", f"format must be json or prometheus, got {format!r}")
        return JSONResponse(snapshot)

    @app.post(protocol.ROUTE_JUDGE, dependencies=guarded)
    async def judge(request: Request) -> JSONResponse:
        body = await read_body(request, limits.max_body_bytes, config.body_timeout_s)
        items = await asyncio.to_thread(protocol.parse_judge_body, body, limits)
        verdicts = await judge_for(request, items)
        return JSONResponse({"verdicts": [v.to_dict() for v in verdicts], "score_range": score_range})

    @app.post(protocol.ROUTE_REWARD, dependencies=guarded)
    async def reward_route(request: Request) -> JSONResponse:
        if critic_reward is None:
            raise ProtocolError(404, "no_reward", "this server hosts no reward strategy; start it with --reward NAME")
        body = await read_body(request, limits.max_body_bytes, config.body_timeout_s)
        dims = critic_reward.dimensions
        rows = await asyncio.to_thread(protocol.parse_reward_body, body, limits, dims)
        # Judged through the service (batched with other requests, idempotent ids, journal), combined here.
        flat = await judge_for(request, [item for row in rows for item in row])
        verdicts = [dict(zip(dims, flat[i * len(dims) : (i + 1) * len(dims)], strict=True)) for i in range(len(rows))]
        scored = critic_reward.combine(verdicts)
        return JSONResponse(
            {
                "reward": reward_name,
                "rewards": [scored.reward_json(i) for i in range(len(rows))],
                "verdicts": [{d: v.to_dict() for d, v in row.items()} for row in verdicts],
                "score_range": score_range,
            }
        )

    @app.post(protocol.ROUTE_CHAT, dependencies=guarded)
    async def chat_completions(request: Request) -> JSONResponse:
        if chat is None:
            raise ProtocolError(
                404,
                "no_chat_model",
                f"the hosted critic ({type(critic).__name__}) holds no in-process model to chat with",
            )
        body = await read_body(request, limits.max_body_bytes, config.body_timeout_s)
        job = await asyncio.to_thread(chat.parse, body, limits)
        future = chat_batcher[0].submit(job, sum(image.width * image.height for image in job.images))
        try:
            result = await wait_unless_gone(future, request.is_disconnected)
        except ClientGone as exc:
            raise ProtocolError(499, "client_closed", str(exc)) from None
        metrics.chat_completions += 1
        return JSONResponse(chat.response(result))

    @app.get(protocol.ROUTE_MODELS, dependencies=guarded)
    async def models() -> dict[str, Any]:
        data = [] if chat is None else [{"id": chat.served_model_name, "object": "model", "owned_by": "firm"}]
        return {"object": "list", "data": data}

    _install_error_handlers(app)
    app.add_middleware(_Timing, metrics=metrics)
    return app


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused with 413 once it exceeds ``limit`` bytes (declared or actually sent), and with 408
    when it takes longer than ``timeout_s`` to arrive (a client that trickles its body holds a connection).

    Raises:
        ProtocolError: 413 ``body_too_large``; 400 for a malformed Content-Length; 408 ``body_timeout``.
    """
    if timeout_s is None:
        return await _read_body(request, limit)
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise ProtocolError(408, "body_timeout", f"the body did not arrive within {timeout_s:g} s") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ProtocolError(400, "invalid_request", f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise ProtocolError(413, "body_too_large", f"the body has {size} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client hung up mid-body: nothing to answer, and nothing wrong on our side
        raise ProtocolError(499, "client_closed", "the client went away while sending its body") from None
    return b"".join(chunks)


def _chat_engine(critic: Critic, config: ServeConfig) -> ChatEngine | None:
    # An in-process critic has imported its module already; looking it up spares other critics importing
    # transformers (seconds) just to learn that they are not one.
    inprocess = sys.modules.get("firm.critics.inprocess")
    if inprocess is None or not isinstance(critic, inprocess.InProcessCritic):
        return None
    from firm.serving.chat import ChatEngine

    return ChatEngine(critic, config.served_model_name or str(critic.model.name_or_path))


def _install_error_handlers(app: FastAPI) -> None:
    def answer(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)

    async def on_protocol(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProtocolError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return answer(exc.status, exc.code, exc.message, headers)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return answer(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")

    async def on_closed(request: Request, exc: Exception) -> Response:
        return answer(503, "shutting_down", "the server is shutting down; retry", {"Retry-After": "1"})

    async def on_full(request: Request, exc: Exception) -> Response:
        return answer(429, "busy", f"the critic's queue is full ({exc}); retry", {"Retry-After": "1"})

    async def on_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer is sent, so uvicorn logs the traceback on the server side.
        return answer(500, "internal_error", f"the critic failed on this request: {type(exc).__name__}: {exc}")

    app.add_exception_handler(ProtocolError, on_protocol)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(BatcherClosed, on_closed)
    app.add_exception_handler(BatcherFull, on_full)
    app.add_exception_handler(Exception, on_error)


class _Timing:
    """ASGI middleware: counts every request by route and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.record_request(route, status, time.perf_counter() - started)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0 picks a free port), ready for :func:`serve_socket`.

    Raises:
        OSError: when the address cannot be bound (in use, not an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may rebind while old sockets linger
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8700, **kwargs: Any) -> None:
    """Bind ``host:port`` and serve ``app`` there; see :func:`serve_socket` for the other arguments."""
    serve_socket(app, bind(host, port), **kwargs)


def serve_socket(
    app: FastAPI,
    sock: socket.socket,
    shutdown_timeout_s: float | None = None,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
    max_connections: int = 512,
    header_timeout_s: float = HEADER_TIMEOUT_S,
) -> None:
    """Serve ``app`` with uvicorn until SIGINT or SIGTERM; then stop accepting and finish in-flight requests.

    Args:
        app: from :func:`create_app`.
        sock: a bound socket (:func:`bind`).
        shutdown_timeout_s: longest to wait for in-flight requests at shutdown; None waits for all of them.
        on_ready: called with the base URL once the server accepts connections (the real port when it was 0).
        log_level: uvicorn's log level.
        max_connections: connections and requests handled at once; beyond it uvicorn answers 503 at once, so a
            flood of clients cannot grow the server's memory without bound.
        header_timeout_s: longest a client may take to send a request's headers; the connection is closed after.

    Raises:
        RuntimeError: when the app fails to start (its error is logged above).
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=None if shutdown_timeout_s is None else max(1, math.ceil(shutdown_timeout_s)),
        lifespan="on",
        limit_concurrency=max_connections,
        http=_header_deadline_protocol(header_timeout_s),
        # An idle kept-alive connection is closed after this; a client's headers may hold at most this many bytes.
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
    main_thread = threading.current_thread() is threading.main_thread()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler that was installed before; a no-op
    # handler there lets the process exit normally (code 0) after the drain instead of dying by the signal.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None) if main_thread else None
    try:
        started = asyncio.run(_serve(server, sock, url, on_ready))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if not started:
        raise RuntimeError("the server failed to start; see the error above")


def _header_deadline_protocol(timeout_s: float) -> type:
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline on headers, which uvicorn does not have: a connection that
    has not finished a request's headers ``timeout_s`` after it opened, or after it started them, is closed.
    Without it a client that trickles its headers holds one of ``--max-connections`` slots for as long as it likes.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()  # the headers of a request have begun (or not yet): they must end in time
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


async def _serve(server: Any, sock: socket.socket, url: str, on_ready: Callable[[str], None] | None) -> bool:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    started = bool(server.started)
    if started and on_ready is not None:
        on_ready(url)
    await task
    return started

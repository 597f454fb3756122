"""``firm serve``: host a critic (and optionally a reward over it) as a batched JSON/HTTP service.

Examples::

    firm serve --model VisionXLab/FIRM-Edit-8B --reward cme                      # http://localhost:8700
    FIRM_SERVE_TOKEN=... firm serve --model ./critic --host 0.0.0.0 --port 8700  # reachable from the network
    firm serve --model ./critic --token-file ~/.firm-token --journal run1.jsonl --max-batch-size 32

Clients: ``firm.critics.remote.RemoteCritic(base_url="http://localhost:8700")``, plain HTTP (``POST /v1/judge``), or any
OpenAI client on ``/v1/chat/completions``. The server binds 127.0.0.1 unless told otherwise and refuses any other
address without a token. SIGTERM or Ctrl-C stops it after the requests in flight are answered.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from firm.commands import UsageError
from firm.commands.critic_flags import add_critic_arguments, build, critic_spec
from firm.errors import check_file


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="host a critic as a batched HTTP reward service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    critic = parser.add_argument_group("critic and reward (the same flags as firm score)")
    add_critic_arguments(critic)
    critic.add_argument("--reward", help="reward strategy served on /v1/reward (cme, qma, ...); none by default")
    net = parser.add_argument_group("network and security")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1); others need a token")
    net.add_argument("--port", type=int, default=8700, help="port (8700); 0 picks a free one")
    net.add_argument(
        "--token-file", type=Path, help="file holding the bearer token; else the FIRM_SERVE_TOKEN environment variable"
    )
    net.add_argument("--served-model-name", help="model name of the chat-completions route (default: --model)")
    net.add_argument("--shutdown-timeout", type=float, help="seconds to wait for in-flight requests on SIGTERM (all)")
    net.add_argument("--log-level", default="warning", help="uvicorn log level (warning)")
    batching = parser.add_argument_group("batching and results")
    batching.add_argument("--max-batch-size", type=int, default=16, help="items per critic call (16)")
    batching.add_argument("--max-wait-ms", type=float, default=50.0, help="longest wait to fill a batch (50 ms)")
    batching.add_argument("--max-pending", type=int, default=4096, help="items queued before answering 429 (4096)")
    batching.add_argument(
        "--max-pending-pixels",
        type=int,
        default=256 * 1024 * 1024,
        help="decoded image pixels queued before answering 429 (256 Mi, about 768 MiB)",
    )
    batching.add_argument("--cache-size", type=int, default=65_536, help="recent results kept for retries by id")
    batching.add_argument("--journal", type=Path, help="jsonl of judged items, replayed on restart")
    limits = parser.add_argument_group("request limits (over them: 413)")
    limits.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024, help="largest body (64 MiB)")
    limits.add_argument("--max-items", type=int, default=64, help="items per request (64)")
    limits.add_argument("--max-image-pixels", type=int, default=2048 * 2048, help="pixels per image (2048x2048)")
    limits.add_argument(
        "--max-request-pixels", type=int, default=64 * 1024 * 1024, help="pixels of all images in a request (64 Mi)"
    )
    limits.add_argument("--max-text-chars", type=int, default=16_384, help="characters of one text or chat (16384)")
    limits.add_argument("--max-messages", type=int, default=32, help="messages of one chat request (32)")
    limits.add_argument("--body-timeout", type=float, default=60.0, help="seconds to receive a body, else 408 (60)")
    limits.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds to receive a request's headers, else close (10)"
    )
    limits.add_argument(
        "--max-connections", type=int, default=512, help="requests handled at once; beyond it 503 at once (512)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from firm.rewards.critic_reward import strategy_for
    from firm.serving.app import ServeConfig, check_exposure
    from firm.serving.protocol import TOKEN_ENV, ServeLimits

    token = read_token(args.token_file, os.environ.get(TOKEN_ENV))
    spec = critic_spec(args)
    try:
        check_exposure(args.host, token)
        config = ServeConfig(
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
            max_pending=args.max_pending,
            max_pending_pixels=args.max_pending_pixels,
            body_timeout_s=args.body_timeout,
            cache_size=args.cache_size,
            journal=args.journal,
            token=token,
            served_model_name=args.served_model_name or args.model,
            limits=ServeLimits(
                args.max_body_bytes,
                args.max_items,
                args.max_image_pixels,
                args.max_request_pixels,
                args.max_text_chars,
                args.max_messages,
            ),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.max_connections < 1 or args.header_timeout <= 0:
        raise UsageError(
            f"need --max-connections >= 1 and --header-timeout > 0; got {args.max_connections}, {args.header_timeout}"
        )
    reward = None if args.reward is None else strategy_for(args.reward)
    if args.journal is not None:
        try:
            args.journal.parent.mkdir(parents=True, exist_ok=True)
            args.journal.open("a").close()
        except OSError as exc:
            raise UsageError(f"cannot write the journal {args.journal}: {exc.strerror or exc}") from exc

    from firm.serving.app import bind, create_app, serve_socket

    # Bind before loading the model, so a port in use fails in a second, not after minutes of loading.
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    critic = build(spec)
    try:
        app = create_app(critic, config, reward, args.reward or "")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc

    def ready(url: str) -> None:
        # The one line on stdout: scripts and tests read the address from it (the real port when --port 0).
        print(f"firm serve: listening on {url}", flush=True)

    try:
        serve_socket(app, sock, args.shutdown_timeout, ready, args.log_level, args.max_connections, args.header_timeout)
    except RuntimeError as exc:
        print(f"firm serve: error: {exc}", file=sys.stderr)
        return 1
    finally:
        critic.close()
    print("firm serve: stopped", file=sys.stderr, flush=True)
    return 0


def read_token(token_file: Path | None, env_value: str | None) -> str | None:
    """The bearer token: the file's content when a file is given, else the environment variable's value.

    Raises:
        UsageError: for a missing or empty token file.
    """
    if token_file is None:
        return env_value.strip() if env_value and env_value.strip() else None
    path = check_file(token_file.expanduser(), "--token-file", UsageError)
    token = path.read_text().strip()
    if not token:
        raise UsageError(f"--token-file {path} is empty")
    if env_value:
        print("firm serve: warning: --token-file given, ignoring FIRM_SERVE_TOKEN", file=sys.stderr)
    return token

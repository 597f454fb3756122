"""Serving critics: ``firm serve`` (a batched JSON/HTTP reward service) and :class:`RemoteCritic`, its client.

The client imports light (httpx); the server side (FastAPI, uvicorn) loads on first use of its names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from firm.serving.client import RemoteCritic
from firm.serving.protocol import ServeLimits

if TYPE_CHECKING:
    from firm.serving.app import ServeConfig, create_app, run_server

__all__ = ["RemoteCritic", "ServeConfig", "ServeLimits", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name in ("ServeConfig", "create_app", "run_server"):
        from firm.serving import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

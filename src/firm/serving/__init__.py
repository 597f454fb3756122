"""Serving critics: ``firm serve``, a batched JSON/HTTP reward service. Its client is
:class:`firm.critics.remote.RemoteCritic`, a critic like any other.

The server side (FastAPI, uvicorn) loads on first use of its names.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from firm.serving.protocol import ServeLimits

if TYPE_CHECKING:
    from firm.serving.app import ServeConfig, create_app, run_server

__all__ = ["ServeConfig", "ServeLimits", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name in ("ServeConfig", "create_app", "run_server"):
        from firm.serving import app

        return getattr(app, name)
    if name == "RemoteCritic":
        warnings.warn(
            "firm.serving.RemoteCritic moved to firm.critics.remote.RemoteCritic; the old path goes in the next "
            "release",
            DeprecationWarning,
            stacklevel=2,
        )
        from firm.critics.remote import RemoteCritic

        return RemoteCritic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Deprecated home of :class:`~firm.critics.remote.RemoteCritic`; import it from :mod:`firm.critics.remote`."""

from __future__ import annotations

import warnings
from typing import Any

__all__: list[str] = []  # RemoteCritic is reached through __getattr__, with a warning


def __getattr__(name: str) -> Any:
    if name == "RemoteCritic":
        warnings.warn(
            "firm.serving.client.RemoteCritic moved to firm.critics.remote.RemoteCritic; the old path goes in the "
            "next release",
            DeprecationWarning,
            stacklevel=2,
        )
        from firm.critics.remote import RemoteCritic

        return RemoteCritic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

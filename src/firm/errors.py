"""The one exception type for input that firm cannot use, whichever layer finds it.

The library raises :class:`InputError` (or a subclass) for a bad flag value, file, config or sample; the ``firm``
command prints its message as one line and exits with code 2, so each message must say what to fix.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Input from a user (a setting, a file, a config, a sample) that firm cannot use; the message says what to fix."""

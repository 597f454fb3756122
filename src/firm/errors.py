"""The one exception type for input that firm cannot use, whichever layer finds it.

The library raises :class:`InputError` (or a subclass) for a bad flag value, file, config or sample; the ``firm``
command prints its message as one line and exits with code 2, so each message must say what to fix.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "check_file"]


class InputError(ValueError):
    """Input from a user (a setting, a file, a config, a sample) that firm cannot use; the message says what to fix."""


def check_file(path: Path, what: str, error: type[Exception] = InputError) -> Path:
    """``path`` when it is an existing file; otherwise ``error`` saying that it is a directory or that it is missing.

    Args:
        path: where a file is expected.
        what: what the file is, as the user knows it (``"bench file"``, ``"--token-file"``).
        error: the exception class to raise (an :class:`InputError` unless the caller's contract says otherwise).

    Raises:
        error: ``"<what> <path> is a directory, not a file"`` or ``"<what> not found: <path>"``.
    """
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    return path

"""Write a file under a temporary name and rename it into place only once it is complete.

A writer killed at any point (an exception, Ctrl-C, SIGKILL, a preempted node) never leaves a truncated file under
the final name: the final name either does not exist, or holds the previous complete file, or the new complete one.
The temporary is ``.<final name>.<pid>.partial`` in the same folder (so the rename is atomic, never a copy across
file systems); it is hidden and ends in ``.partial``, so readers never see it: neither ``*.tar`` globs nor WebDataset
brace patterns such as ``shard-{000000..000009}.tar`` match it. A SIGKILL leaves the temporary behind;
:func:`remove_stale_partials` clears such leftovers before a rerun.

Example:
    >>> with atomic_path("out/shard-000003.tar") as tmp:
    ...     with wds.TarWriter(str(tmp)) as sink:
    ...         for sample in samples:
    ...             sink.write(sample)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_directory", "atomic_path", "fsync_directory", "remove_stale_partials"]

logger = logging.getLogger(__name__)

_PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure delete it.

    The parent folder is created. On a normal exit the temporary is fsynced, renamed over ``path`` with
    ``os.replace`` (replacing an existing file atomically), and the folder is fsynced where the platform allows, so
    the rename survives a power loss. On an exception, ``KeyboardInterrupt`` included, the temporary is removed,
    ``path`` is left as it was, and the exception propagates.

    Args:
        path: The final file.

    Yields:
        The temporary file to create and write: ``<folder>/.<name>.<pid>.partial``.

    Raises:
        FileNotFoundError: The body exited normally without creating the temporary file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = _partial_path(final, os.getpid())
    # A leftover from an earlier process with the same pid must not be renamed into place if the body never writes.
    temp.unlink(missing_ok=True)
    try:
        yield temp
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if not temp.exists():
        raise FileNotFoundError(
            f"atomic_path({str(final)!r}): the body did not create the temporary file {str(temp)!r}; "
            "write to the path the context manager yields, not to the final path"
        )
    _fsync_file(temp)
    os.replace(temp, final)
    fsync_directory(final.parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_path`, for a folder (an exported model): yield a temporary folder to fill; on success it
    takes the place of ``path``, on failure it is deleted and ``path`` is left as it was.

    A folder cannot replace a non-empty folder atomically: an existing ``path`` is first moved aside
    (``.<name>.<pid>.old``), the new folder renamed in, then the old one deleted. A kill in that instant leaves the
    previous folder under the ``.old`` name, never a half-written one under ``path``.

    Args:
        path: The final folder.

    Yields:
        The temporary folder, created empty: ``<parent>/.<name>.<pid>.partial``.
    """
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = _partial_path(final, os.getpid())
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(temp, final)
    fsync_directory(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_partials(folder: str | os.PathLike[str], name: str) -> int:
    """Remove the temporaries that killed writers of ``name`` left in ``folder``.

    Only ``.<name>.<pid>.partial`` files are removed, so those of a longer name (``name.gz``) are kept. Call it
    before a rerun, never while another process may be writing ``name``.

    Args:
        folder: Where ``name`` is written.
        name: The final file name, e.g. ``"shard-000003.tar"``.

    Returns:
        How many files were removed (0 when ``folder`` does not exist).

    Raises:
        ValueError: ``name`` is a path rather than a bare file name.
    """
    if not name or Path(name).name != name:
        raise ValueError(
            f"remove_stale_partials: name must be a bare file name such as 'shard-000003.tar', not {name!r}"
        )
    root = Path(folder)
    if not root.is_dir():
        return 0
    prefix = f".{name}."
    removed = 0
    for entry in root.iterdir():
        pid = entry.name[len(prefix) : -len(_PARTIAL_SUFFIX)]
        if entry.name.startswith(prefix) and entry.name.endswith(_PARTIAL_SUFFIX) and pid.isdigit() and entry.is_file():
            entry.unlink(missing_ok=True)
            logger.info("removed %s, left by a killed writer (pid %s)", entry, pid)
            removed += 1
    return removed


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a new or renamed file's name) to disk, where the platform allows.

    Best effort: a no-op off POSIX, and file systems that cannot fsync a directory are ignored, since the data
    itself is already safe and only the name's durability against power loss is at stake.

    Args:
        folder: The folder whose entries changed.
    """
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # e.g. EINVAL on some network and FUSE file systems
            os.fsync(fd)
    finally:
        os.close(fd)


def _partial_path(final: Path, pid: int) -> Path:
    return final.with_name(f".{final.name}.{pid}{_PARTIAL_SUFFIX}")


def _fsync_file(path: Path) -> None:
    # Windows only flushes a handle opened for writing.
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

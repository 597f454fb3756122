"""A resumable, append-only JSON-lines record store: one JSON object per line, safe against a writer killed mid-write.

Guarantees, for a single writer at a time:

- After :meth:`RecordStore.repair`, every line in the file is a whole record; a record is a whole line or nothing.
- A writer killed mid-:meth:`~RecordStore.append` leaves at most one torn last line (bytes with no trailing newline).
  ``repair()`` cuts it, and ``append()`` repairs before its first write, so a torn line is never glued to the next
  record. :meth:`~RecordStore.read` reports a torn line as a :class:`RecordError` with ``torn=True`` rather than
  parsing it, even when the bytes that made it to disk happen to be valid JSON.
- A returned ``append()`` has reached the operating system, so it survives the death of the process. With
  ``fsync=True`` it has also reached the disk, so it survives a power loss.

Example:
    >>> store = RecordStore("out/scores.jsonl")
    >>> done = {rec["key"] for _, rec in store.read() if not isinstance(rec, RecordError)}
    >>> with store:
    ...     for batch in batches:
    ...         store.append({"key": k, "score": s} for k, s in score(batch) if k not in done)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, overload

from firm.data.shards import fsync_directory

__all__ = ["RecordError", "RecordStore", "read_jsonl"]

logger = logging.getLogger(__name__)

#: How far :meth:`RecordStore.repair` reads at a time while looking backwards for the last newline.
REPAIR_BLOCK_BYTES = 64 * 1024


class RecordError(ValueError):
    """A line of a record store that is not a record.

    Attributes:
        where: ``"<path>:<line number>"``, 1-based, blank lines counted.
        line: The 1-based line number.
        reason: What is wrong with the line, e.g. ``"is not a JSON object"``.
        torn: True when the line is the last one and has no trailing newline: a writer was killed mid-write.
    """

    def __init__(self, where: str, line: int, reason: str, *, torn: bool = False) -> None:
        super().__init__(f"{where} {reason}")
        self.where = where
        self.line = line
        self.reason = reason
        self.torn = torn


class RecordStore:
    """An append-only JSON-lines file of records (JSON objects) that a killed writer cannot corrupt.

    Use it as a context manager to keep one file handle open across many appends; outside one, each ``append``
    opens and closes the file itself.

    Args:
        path: The ``.jsonl`` file. It need not exist; ``append`` creates it and its parent folders.
        fsync: Make each ``append`` durable against power loss (``os.fsync``), not only against process death.
            Costs a disk flush per call, so append in batches.

    Attributes:
        path: The file, as given.
        fsync: Whether appends are fsynced.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._handle: BinaryIO | None = None
        self._keep_open = False  # between open() and close(); a failed write drops the handle, the next reopens
        self._repaired = False

    def __repr__(self) -> str:
        return f"RecordStore({str(self.path)!r}, fsync={self.fsync})"

    def __enter__(self) -> RecordStore:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> RecordStore:
        """Repair the file if needed and keep it open for appending until :meth:`close`.

        Opening an already open store does nothing.

        Returns:
            The store itself, so ``store = RecordStore(path).open()`` works.
        """
        if self._handle is None:
            self._handle = self._open_for_append()
        self._keep_open = True
        return self

    def close(self) -> None:
        """Close the handle kept by :meth:`open`. Closing a closed store does nothing."""
        self._keep_open = False
        self._drop_handle()

    def _drop_handle(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()

    def repair(self) -> int:
        """Cut a torn last line left by a writer killed mid-write.

        Scans backwards from the end in blocks, so a large file is not read whole.

        Returns:
            The number of bytes cut: 0 when the file is absent, empty or ends with a newline.
        """
        self._repaired = True
        if not self.path.exists():
            return 0
        with open(self.path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            keep = _end_of_last_line(f, size)
            if keep == size:
                return 0
            f.truncate(keep)
            if self.fsync:
                os.fsync(f.fileno())
        logger.warning(
            "%s: cut %d bytes of a torn last line (a writer was killed mid-write); the records before it are kept",
            self.path,
            size - keep,
        )
        return size - keep

    @overload
    def read(self, blank: Literal[False] = False) -> Iterator[tuple[str, dict[str, Any] | RecordError]]: ...

    @overload
    def read(self, blank: Literal[True]) -> Iterator[tuple[str, dict[str, Any] | RecordError | None]]: ...

    def read(self, blank: bool = False) -> Iterator[tuple[str, dict[str, Any] | RecordError | None]]:
        """Yield every non-blank line as a record, or as the error that keeps it from being one.

        Bad lines are yielded, not raised, so a caller can skip, count or raise them as it sees fit.

        Args:
            blank: also yield blank lines, as ``(where, None)``: for inputs where every line must be answered.

        Yields:
            ``(where, record_or_error)`` with ``where`` as ``"<path>:<line number>"`` (1-based, blank lines counted).
            The error is a :class:`RecordError` for a line that is not UTF-8, not JSON, not a JSON object, or torn
            (the last line, without its newline; ``torn=True``). An absent file yields nothing.
        """
        return _lines(self.path, blank, last_line_whole=False)

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append records, one JSON line each, in a single write.

        The first append of this store object (or :meth:`open`) repairs a torn last line first, so the new records
        start on a line of their own.

        Args:
            records: JSON-encodable mappings. All are encoded before anything is written.

        Returns:
            The number of records written.

        Raises:
            TypeError: A record is not a mapping or holds a value JSON cannot encode; nothing is written.
            ValueError: A record refers to itself or holds a lone surrogate; nothing is written.
        """
        data = b"".join(_encode(i, record) for i, record in enumerate(records))
        count = data.count(b"\n")  # json.dumps escapes newlines inside strings, so this counts records
        if count == 0:
            return 0
        if self._keep_open:
            if self._handle is None:
                self._handle = self._open_for_append()
            self._write(self._handle, data)
        else:
            with self._open_for_append() as handle:
                self._write(handle, data)
        return count

    def _open_for_append(self) -> BinaryIO:
        if not self._repaired:
            self.repair()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        # Unbuffered: a failed write leaves nothing in a buffer to be flushed, half, later on close.
        handle: BinaryIO = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed by close() or the caller
        if created and self.fsync:
            fsync_directory(self.path.parent)  # the new file's name must survive a power loss too
        return handle

    def _write(self, handle: BinaryIO, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:  # a raw write may be short (a signal, a full disk); finish it or raise
                view = view[handle.write(view) :]
            if self.fsync:
                os.fsync(handle.fileno())
        except BaseException:
            # The file may now end in a torn line: repair again before the next append, through a fresh handle.
            self._repaired = False
            self._drop_handle()
            raise


@overload
def read_jsonl(
    path: str | os.PathLike[str], blank: Literal[False] = False
) -> Iterator[tuple[str, dict[str, Any] | RecordError]]: ...


@overload
def read_jsonl(
    path: str | os.PathLike[str], blank: Literal[True]
) -> Iterator[tuple[str, dict[str, Any] | RecordError | None]]: ...


def read_jsonl(
    path: str | os.PathLike[str], blank: bool = False
) -> Iterator[tuple[str, dict[str, Any] | RecordError | None]]:
    """The lines of a jsonl that a person or another tool wrote (a batch input, a bench, predictions), as
    :meth:`RecordStore.read` yields them, except that a last line without its newline is a whole record: editors
    and scripts often leave it off, and nobody was killed mid-write.
    """
    return _lines(Path(path), blank, last_line_whole=True)


def _lines(path: Path, blank: bool, last_line_whole: bool) -> Iterator[tuple[str, dict[str, Any] | RecordError | None]]:
    if not path.exists():
        return
    # Binary, so a bad byte is one bad line rather than a crash, and only b"\n" ends a line (not \r or U+2028).
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                if blank:
                    yield f"{path}:{number}", None
                continue
            where = f"{path}:{number}"
            if last_line_whole and not raw.endswith(b"\n"):
                raw += b"\n"
            yield where, _parse_line(raw, where, number)


def _end_of_last_line(f: BinaryIO, size: int) -> int:
    """Return the offset just past the last newline of ``f`` (``size`` bytes long), or 0 when it has none."""
    end = size
    while end > 0:
        start = max(0, end - REPAIR_BLOCK_BYTES)
        f.seek(start)
        block = f.read(end - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


_JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _parse_line(raw: bytes, where: str, number: int) -> dict[str, Any] | RecordError:
    if not raw.endswith(b"\n"):
        return RecordError(
            where,
            number,
            "is cut off mid-write (a torn last line with no newline); RecordStore.repair() or the next append cuts it",
            torn=True,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return RecordError(where, number, f"is not valid UTF-8: {err}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return RecordError(where, number, f"is not valid JSON: {err}")
    if not isinstance(value, dict):
        return RecordError(where, number, f"is not a JSON object (it is {_JSON_KINDS.get(type(value), 'a value')})")
    return value


def _encode(index: int, record: Mapping[str, Any]) -> bytes:
    if not isinstance(record, Mapping):
        raise TypeError(f"record {index} is a {type(record).__name__}, not a mapping; append takes mappings (dicts)")
    try:
        line = json.dumps(record if isinstance(record, dict) else dict(record), ensure_ascii=False)
    except TypeError as err:
        raise TypeError(f"record {index} cannot be written as JSON: {err}; convert the value first") from err
    try:
        return (line + "\n").encode("utf-8")
    except UnicodeEncodeError as err:
        # ensure_ascii=False passes lone surrogates (e.g. from os.fsdecode of a non-UTF-8 name) through to here.
        raise ValueError(f"record {index} holds a string that is not valid Unicode ({err}); clean it first") from err

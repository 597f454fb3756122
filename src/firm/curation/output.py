"""What a curation run keeps in its output folder: the journal records, the critic samples made from them, the
shards they are written into, and the lock that keeps a second run out.

A journal record (one line of ``labels.jsonl`` per input) is ``{"input", "origin", "hash", "status", "samples",
"rejected"}``: status ``labelled`` (at least one sample), ``rejected`` (none) or ``duplicate`` (``duplicate_of``
names the input labelled instead); each sample entry holds the critic sample's fields without its images, which are
read again from the input when shards are written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firm.curation.base import CurationError, EditItem, Item, Label, Rejected
from firm.data.schema import CriticSample, to_wds
from firm.data.shards import atomic_path, remove_stale_partials

__all__ = [
    "ShardSet",
    "critic_sample",
    "duplicate_record",
    "exclusive",
    "finish",
    "new_record",
    "reject",
    "sample_entry",
]


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold ``<out>/.lock`` for the run: a second ``firm curate`` on the same folder is refused, not interleaved.

    The lock is the operating system's (``flock``), so a killed run leaves nothing that blocks the next one.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, one writer is the user's promise
        yield
        return
    with open(out / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CurationError(
                f"another firm curate is writing {out}; wait for it or choose another --output"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def new_record(item: Item) -> dict[str, Any]:
    return {"input": item.key, "origin": item.origin, "status": "", "samples": [], "rejected": []}


def duplicate_record(item: Item, digest: str, first: str) -> dict[str, Any]:
    return {"input": item.key, "origin": item.origin, "status": "duplicate", "duplicate_of": first, "hash": digest,
            "samples": [], "rejected": []}  # fmt: skip


def reject(
    record: dict[str, Any], stage: str, dimension: str | None, why: Rejected, tries: int, rewritten: bool = False
) -> None:
    entry = {"stage": stage, "dimension": dimension, "reason": why.reason, "raw": why.raw, "tries": tries}
    if rewritten:
        entry["rewritten"] = True
    record["rejected"].append(entry)


def finish(record: dict[str, Any]) -> dict[str, Any]:
    record["status"] = "labelled" if record["samples"] else "rejected"
    return record


def sample_entry(item: Item, label: Label, evidence: dict[str, Any], replaced: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "key": f"{item.key}-{label.dimension}",
        "dimension": label.dimension,
        "text": item.text,
        "score": label.score,
        "answer": label.answer,
        "sub_scores": None if label.sub_scores is None else list(label.sub_scores),
        "evidence": evidence,
        "raw": label.raw,
    }
    if replaced is not None:
        entry["rewritten"] = True
        entry["original_instruction"] = replaced
    return entry


def critic_sample(item: Item, entry: dict[str, Any], record: dict[str, Any]) -> CriticSample:
    provenance: dict[str, Any] = {"input": record["input"], "origin": record.get("origin", "")}
    if item.metadata:
        provenance["metadata"] = dict(item.metadata)
    if entry.get("rewritten"):
        provenance["rewritten_from"] = entry["original_instruction"]
    return CriticSample(
        key=entry["key"],
        task="edit" if isinstance(item, EditItem) else "gen",
        dimension=entry["dimension"],
        text=entry["text"],
        image=item.image,
        source=item.source if isinstance(item, EditItem) else None,
        score=entry["score"],
        answer=entry["answer"],
        sub_scores=None if entry["sub_scores"] is None else tuple(entry["sub_scores"]),
        evidence=entry["evidence"],
        provenance=provenance,
    )


class ShardSet:
    """Writes samples into ``<prefix>-NNNNNN.tar`` shards of ``size`` samples, each renamed into place when complete;
    on close, shards of an earlier, longer write and partials of killed writers are removed."""

    def __init__(self, folder: Path, prefix: str, size: int) -> None:
        self.folder, self.prefix, self.size = folder, prefix, size
        self.names: list[str] = []
        self._count = 0
        self._context: Any = None
        self._sink: Any = None

    def __enter__(self) -> ShardSet:
        for stale in self.folder.glob(f".{self.prefix}-*.tar.*.partial"):  # .<name>.<pid>.partial
            remove_stale_partials(self.folder, stale.name[1:].split(".tar.")[0] + ".tar")
        return self

    def write(self, sample: CriticSample) -> None:
        from webdataset.writer import TarWriter  # imports torch: only when shards are written

        if self._sink is None:
            name = f"{self.prefix}-{len(self.names):06d}.tar"
            self._context = atomic_path(self.folder / name)
            partial = self._context.__enter__()
            self._sink = TarWriter(str(partial), mtime=0)
            self.names.append(name)
        self._sink.write(to_wds(sample))
        self._count += 1
        if self._count == self.size:
            self._close_shard(None)

    def _close_shard(self, exc: BaseException | None) -> None:
        if self._sink is None:
            return
        self._sink.close()
        self._sink = None
        context, self._context = self._context, None
        self._count = 0
        if exc is None:
            context.__exit__(None, None, None)
        else:
            context.__exit__(type(exc), exc, exc.__traceback__)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._close_shard(exc)
        if exc is not None:
            return
        for path in self.folder.glob(f"{self.prefix}-*.tar"):
            if path.name not in self.names:
                path.unlink()

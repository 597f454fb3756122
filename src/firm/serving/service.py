"""The judging service behind the routes: one model thread, dynamic batching, idempotent retries and a journal.

Every call into the critic runs on a single worker thread (models are not thread-safe), fed by a
:class:`~firm.serving.batcher.MicroBatcher`. Items carry a client-chosen id; the service remembers recent results by
``(id, dimension)``, so a client that retries after a lost answer gets the first result instead of a second judgement,
and a retry that arrives while the item is still being judged waits for that same judgement. With a journal file,
each judged item is appended as one JSON line *before* its answer is sent (flushed and fsynced once per batch), and the
file is read back at start-up: a retry that reaches a restarted server is answered from the journal, so no item is
judged twice even across a crash. The journal is a :class:`~firm.data.records.RecordStore`: a line cut by a crash
mid-write belonged to an item whose answer was never sent; it is skipped on replay and cut off before the next
append, so it never swallows the record written after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from firm.critics.base import Critic, JudgeRequest, Verdict
from firm.data.records import RecordError, RecordStore
from firm.serving.batcher import MicroBatcher
from firm.serving.metrics import ServerMetrics
from firm.serving.protocol import ParsedItem, ProtocolError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Job:
    request: JudgeRequest
    id: str | None
    digest: str


class JudgeService:
    """Judges parsed items with ``critic``, batching across concurrent requests.

    Args:
        critic: the hosted critic.
        metrics: where batch sizes, verdict validity and cache hits are counted.
        max_batch_size: most items per ``critic.judge`` call.
        max_wait_s: longest an item waits for others to join its batch.
        max_pending: most items queued for the critic; beyond it requests get 429 and clients back off.
        max_pending_pixels: most decoded image pixels queued for the critic (what a waiting request holds in
            memory); beyond it requests get 429. None: bounded by items only.
        cache_size: how many recent results by id are kept for idempotent retries.
        journal: a JSON-lines file of judged items, appended to and replayed at start-up; None for none.
    """

    def __init__(
        self,
        critic: Critic,
        metrics: ServerMetrics,
        max_batch_size: int = 16,
        max_wait_s: float = 0.01,
        max_pending: int = 4096,
        cache_size: int = 65_536,
        journal: Path | None = None,
        max_pending_pixels: int | None = None,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.critic = critic
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending
        self.max_pending_pixels = max_pending_pixels
        self.cache_size = cache_size
        self.journal_path = journal
        #: The one thread that runs the model.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firm-critic")
        self._cache: OrderedDict[tuple[str, str], tuple[str, Verdict | asyncio.Future[Verdict]]] = OrderedDict()
        self._journal: RecordStore | None = None
        self._batchers: list[MicroBatcher[Any, Any]] = []
        self._judge: MicroBatcher[_Job, Verdict] | None = None
        # How many requests wait on each queued judgement: one whose client went away is withdrawn only when no
        # other request (a retry of the same id) waits on it too.
        self._waiters: dict[asyncio.Future[Verdict], int] = {}

    async def start(self) -> None:
        """Replay the journal, open it for appending and start batching. Call on the serving event loop."""
        if self.journal_path is not None:
            journal = RecordStore(self.journal_path, fsync=True)
            self._replay(journal)
            journal.open()
            self._journal = journal
        self._judge = self.batcher(self._judge_batch, self.max_batch_size, self._record_batch)

    def batcher(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        on_batch: Callable[[list[T], Sequence[R] | None, float], None] | None = None,
    ) -> MicroBatcher[T, R]:
        """A started batcher whose batches run on the model thread; closed with the service."""
        batcher: MicroBatcher[T, R] = MicroBatcher(
            fn, max_batch_size, self.max_wait_s, self.executor, self.max_pending, on_batch, self.max_pending_pixels
        )
        batcher.start()
        self._batchers.append(batcher)
        return batcher

    @property
    def pending(self) -> int:
        """Items waiting for the model thread."""
        return sum(b.pending for b in self._batchers)

    @property
    def dropped(self) -> int:
        """Items withdrawn unjudged because their client went away."""
        return sum(b.dropped for b in self._batchers)

    @property
    def running(self) -> int:
        """Items the model thread is working on."""
        return sum(b.running for b in self._batchers)

    async def close(self) -> None:
        """Finish every queued item, then stop the model thread and close the journal."""
        for batcher in self._batchers:
            await batcher.close()
        self.executor.shutdown(wait=True)
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    async def judge(
        self, items: Sequence[ParsedItem], disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> list[Verdict]:
        """Verdicts for ``items``, in order; repeated ids are answered from the cache (or the journal).

        Args:
            items: the parsed items of one request.
            disconnected: tells whether the client has gone away; checked while the items wait, and if it has,
                its items that no other request waits on are withdrawn before they are judged.

        Raises:
            ProtocolError: 409 when an id was already used for a different item.
            BatcherClosed: while shutting down; BatcherFull: when the queue is full.
            ClientGone: when ``disconnected`` said so before the verdicts were ready.
        """
        assert self._judge is not None, "start() the service first"
        for item in items:
            entry = self._cache.get((item.id, item.request.dimension)) if item.id is not None else None
            if entry is not None and entry[0] != item.digest:
                raise ProtocolError(
                    409,
                    "id_conflict",
                    f"id {item.id!r} ({item.request.dimension}) was already used for a different item; "
                    "give every item its own id",
                )
        futures: list[asyncio.Future[Verdict]] = []
        waited: list[asyncio.Future[Verdict]] = []
        try:
            for item in items:
                key = (item.id, item.request.dimension) if item.id is not None else None
                entry = self._cache.get(key) if key is not None else None
                if entry is not None:
                    self.metrics.items_cached += 1
                    future = _resolved(entry[1])
                else:
                    future = self._judge.submit(_Job(item.request, item.id, item.digest), _pixels(item.request))
                    if key is not None:
                        self._remember(key, item.digest, future)
                        future.add_done_callback(partial(self._settle, key, item.digest))
                futures.append(future)
                if not future.done():
                    self._waiters[future] = self._waiters.get(future, 0) + 1
                    waited.append(future)
            # shield: a cancelled request must not cancel a judgement that a retry of it may be waiting for.
            gathered = asyncio.gather(*(asyncio.shield(f) for f in futures))
            verdicts: list[Verdict] = await wait_unless_gone(gathered, disconnected)
            return verdicts
        except BaseException:
            # Refused part-way (a full queue), cancelled or abandoned: nothing only this request wanted stays queued.
            self._withdraw(waited)
            raise
        finally:
            self._release(waited)

    def _withdraw(self, waited: list[asyncio.Future[Verdict]]) -> int:
        """Cancel the queued judgements that only this request waits on and whose batch has not started (the
        batcher then drops them unjudged); returns how many."""
        assert self._judge is not None
        withdrawn = 0
        for future in waited:
            if not future.done() and self._waiters.get(future) == 1 and not self._judge.started(future):
                future.cancel()
                withdrawn += 1
        return withdrawn

    def _release(self, waited: list[asyncio.Future[Verdict]]) -> None:
        for future in waited:
            count = self._waiters.get(future, 0) - 1
            if count > 0:
                self._waiters[future] = count
            else:
                self._waiters.pop(future, None)

    def _judge_batch(self, jobs: list[_Job]) -> list[Verdict]:
        """Runs on the model thread."""
        verdicts = self.critic.judge([job.request for job in jobs])
        if self._journal is not None:
            stamp = time.time()
            # One durable write per batch, before any answer leaves: a crash after it cannot lose a sent result.
            self._journal.append(
                {"id": job.id, "digest": job.digest, "time": stamp, "verdict": verdict.to_dict()}
                for job, verdict in zip(jobs, verdicts, strict=True)
                if job.id is not None
            )
        return verdicts

    def _record_batch(self, jobs: list[_Job], verdicts: Sequence[Verdict] | None, seconds: float) -> None:
        self.metrics.record_batch(len(jobs), seconds, verdicts)

    def _remember(self, key: tuple[str, str], digest: str, value: Verdict | asyncio.Future[Verdict]) -> None:
        if self.cache_size == 0:
            return
        self._cache[key] = (digest, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _settle(self, key: tuple[str, str], digest: str, future: asyncio.Future[Verdict]) -> None:
        entry = self._cache.get(key)
        if entry is None or entry[1] is not future:
            return
        if future.cancelled() or future.exception() is not None:
            del self._cache[key]  # a failed judgement is retried, not replayed
        else:
            self._cache[key] = (digest, future.result())

    def _replay(self, journal: RecordStore) -> None:
        loaded = skipped = 0
        for where, record in journal.read():
            try:
                if isinstance(record, RecordError):
                    raise record  # a line cut by a crash mid-write: that item was never answered
                verdict = Verdict.from_dict(record["verdict"])
                key = (str(record["id"]), verdict.dimension)
                digest = str(record["digest"])
            except (ValueError, KeyError, TypeError) as exc:
                skipped += 1
                log.warning("journal %s: skipped (%s)", where, exc)
                continue
            self._remember(key, digest, verdict)
            loaded += 1
        log.info("journal %s: %d results replayed, %d unreadable lines skipped", journal.path, loaded, skipped)


class ClientGone(Exception):
    """The client of a request went away before its verdicts were ready."""


#: How often a waiting request checks whether its client is still there.
_DISCONNECT_POLL_S = 0.1


async def wait_unless_gone(future: asyncio.Future[T], disconnected: Callable[[], Awaitable[bool]] | None) -> T:
    """``await future``, checking every 0.1 s whether the client is still there; if it is not, cancel ``future``
    (a queued item whose future is cancelled is dropped unjudged by its batcher) and raise :class:`ClientGone`."""
    while disconnected is not None:
        done, _ = await asyncio.wait({future}, timeout=_DISCONNECT_POLL_S)
        if done:
            break
        if await disconnected():
            future.cancel()
            raise ClientGone("the client went away before its answer was ready")
    return await future


def _pixels(request: JudgeRequest) -> int:
    """The decoded pixels a queued request holds in memory."""
    return sum(image.width * image.height for image in request.images)


def _resolved(value: Verdict | asyncio.Future[Verdict]) -> asyncio.Future[Verdict]:
    if isinstance(value, asyncio.Future):
        return value
    future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future

"""Dynamic batching: items from concurrent requests are gathered into one call of a batched function.

A :class:`MicroBatcher` owns a queue. Its loop takes the oldest item, then keeps taking items until it holds
``max_batch_size`` of them or ``max_wait_s`` has passed since that oldest item arrived or the previous batch ended,
whichever is later, and runs the function on the batch in an executor. The executor is meant to have one thread: the
model is not thread-safe, and the event loop stays free to accept, parse and answer requests while the model works.
Items that arrive while a batch runs wait in the queue and join the next batch. The queue is bounded twice: by
items and by cost (the service counts decoded image pixels, so a few huge requests cannot fill memory while many
small ones still fit). An item whose future was cancelled before its batch ran (its client went away) is dropped,
never judged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new items."""


class BatcherFull(RuntimeError):
    """The queue already holds ``max_pending`` items, or ``max_pending_cost`` of cost."""


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    cost: int = 0
    arrived: float = field(default_factory=time.monotonic)


_STOP: Any = object()


class MicroBatcher(Generic[T, R]):
    """Gathers items submitted from many coroutines into batches for ``fn``.

    Args:
        fn: called with a list of items, returns one result per item, in order; runs in ``executor``.
        max_batch_size: most items per call of ``fn``.
        max_wait_s: longest an item waits for others to join its batch.
        executor: where ``fn`` runs (a single-thread pool for a model that is not thread-safe).
        max_pending: most items waiting in the queue; :meth:`submit` raises :class:`BatcherFull` beyond it.
        on_batch: called on the event loop after each batch with its size and the seconds ``fn`` took.
        max_pending_cost: most summed cost of the items waiting (None: unbounded); :meth:`submit` raises
            :class:`BatcherFull` beyond it, except for an item arriving at an empty queue (so no item is refused
            forever).

    Raises:
        ValueError: for ``max_batch_size < 1``, ``max_wait_s < 0``, ``max_pending < 1`` or ``max_pending_cost < 1``.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        max_wait_s: float,
        executor: Executor,
        max_pending: int = 4096,
        on_batch: Callable[[list[T], Sequence[R] | None, float], None] | None = None,
        max_pending_cost: int | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_pending < 1 or (max_pending_cost or 1) < 1:
            raise ValueError(
                f"need max_batch_size >= 1, max_wait_s >= 0, max_pending >= 1, max_pending_cost >= 1; "
                f"got {max_batch_size}, {max_wait_s}, {max_pending}, {max_pending_cost}"
            )
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.max_pending = max_pending
        self.max_pending_cost = max_pending_cost
        self.on_batch = on_batch
        #: Summed cost of the items waiting in the queue.
        self.pending_cost = 0
        #: Items dropped because their future was cancelled before their batch ran.
        self.dropped = 0
        self._started: set[asyncio.Future[R]] = set()
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._free_since = 0.0
        #: Items handed to ``fn`` and not yet returned.
        self.running = 0

    def started(self, future: asyncio.Future[R]) -> bool:
        """Whether ``future``'s item has been handed to ``fn`` (cancelling it then no longer saves the work)."""
        return future in self._started

    @property
    def pending(self) -> int:
        """Items waiting in the queue."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        assert self._task is None, "the batcher is already started"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="firm-micro-batcher")

    def submit(self, item: T, cost: int = 0) -> asyncio.Future[R]:
        """Queue one item; the returned future resolves to its result (or to the exception ``fn`` raised).

        Cancel the future to withdraw the item: if its batch has not started, it is dropped unjudged.

        Raises:
            BatcherClosed: after :meth:`close` was called.
            BatcherFull: when ``max_pending`` items already wait, or their cost plus ``cost`` exceeds
                ``max_pending_cost``.
        """
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        if self._queue.qsize() >= self.max_pending:
            raise BatcherFull(f"{self._queue.qsize()} items already wait for the critic")
        if (
            self.max_pending_cost is not None
            and self.pending_cost > 0
            and self.pending_cost + cost > self.max_pending_cost
        ):
            raise BatcherFull(f"the items waiting for the critic already hold {self.pending_cost} pixels")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future, cost))
        self.pending_cost += cost
        return future

    async def close(self) -> None:
        """Take no new items, finish every queued one, then stop the loop."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(_STOP)
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            # Counted from when the model became free, not only from the first arrival: the callers answered by the
            # batch just finished often send their next items at once, and waiting for them fills the batch, where
            # starting at once would split the callers into two half-full batches that alternate for good.
            deadline = max(first.arrived, self._free_since) + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if self._queue.empty():
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                else:
                    nxt = self._queue.get_nowait()
                if nxt is _STOP:
                    stop = True  # everything queued before the stop marker is in this batch or already done
                    break
                batch.append(nxt)
            await self._execute(batch)

    async def _execute(self, batch: list[_Pending[T, R]]) -> None:
        self.pending_cost -= sum(p.cost for p in batch)
        live = [p for p in batch if not p.future.cancelled()]
        self.dropped += len(batch) - len(live)
        if not live:
            return
        batch = live
        items = [p.item for p in batch]
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.running = len(items)
        self._started = {p.future for p in batch}
        try:
            results = await loop.run_in_executor(self.executor, self.fn, items)
            if len(results) != len(items):
                raise RuntimeError(f"the batched function returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # the batch's callers get the error; the loop keeps serving later batches
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            if self.on_batch is not None:
                self.on_batch(items, None, time.monotonic() - started)
            return
        finally:
            self.running = 0
            self._started = set()
            self._free_since = time.monotonic()
        if self.on_batch is not None:
            self.on_batch(items, results, time.monotonic() - started)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

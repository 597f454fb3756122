"""Dynamic batching: items from concurrent requests are gathered into one call of a batched function.

A :class:`MicroBatcher` owns a queue. Its loop takes the oldest item, then keeps taking items until it holds
``max_batch_size`` of them or ``max_wait_s`` has passed since that oldest item arrived or the previous batch ended,
whichever is later, and runs the function on the batch in an executor. The executor is meant to have one thread: the
model is not thread-safe, and the event loop stays free to accept, parse and answer requests while the model works.
Items that arrive while a batch runs wait in the queue and join the next batch.
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
    """The queue already holds ``max_pending`` items."""


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
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

    Raises:
        ValueError: for ``max_batch_size < 1``, ``max_wait_s < 0`` or ``max_pending < 1``.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        max_wait_s: float,
        executor: Executor,
        max_pending: int = 4096,
        on_batch: Callable[[list[T], Sequence[R] | None, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_pending < 1:
            raise ValueError(
                f"need max_batch_size >= 1, max_wait_s >= 0, max_pending >= 1; "
                f"got {max_batch_size}, {max_wait_s}, {max_pending}"
            )
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.max_pending = max_pending
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._free_since = 0.0
        #: Items handed to ``fn`` and not yet returned.
        self.running = 0

    @property
    def pending(self) -> int:
        """Items waiting in the queue."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        assert self._task is None, "the batcher is already started"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="firm-micro-batcher")

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue one item; the returned future resolves to its result (or to the exception ``fn`` raised).

        Raises:
            BatcherClosed: after :meth:`close` was called.
            BatcherFull: when ``max_pending`` items already wait.
        """
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        if self._queue.qsize() >= self.max_pending:
            raise BatcherFull(f"{self._queue.qsize()} items already wait for the critic")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, future))
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
        items = [p.item for p in batch]
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.running = len(items)
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
            self._free_since = time.monotonic()
        if self.on_batch is not None:
            self.on_batch(items, results, time.monotonic() - started)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

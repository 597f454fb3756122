"""MicroBatcher: items from concurrent callers share calls of the batched function, on its own thread."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from firm.serving.batcher import BatcherClosed, BatcherFull, MicroBatcher


class Doubler:
    """Doubles numbers, a batch at a time; remembers each batch and the thread it ran on. Fails on 13."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if 13 in items:
            raise ValueError("unlucky batch")
        return [2 * x for x in items]


async def _gather_with(fn: Doubler, items: list[int], **kw: float) -> list[int | BaseException]:
    with ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
        batcher = MicroBatcher(fn, executor=pool, **kw)  # type: ignore[arg-type]
        batcher.start()
        futures = [batcher.submit(x) for x in items]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
    return list(results)


def test_concurrent_items_fill_batches_up_to_the_max_size_in_order_on_one_thread() -> None:
    fn = Doubler()
    results = asyncio.run(_gather_with(fn, list(range(10)), max_batch_size=4, max_wait_s=0.1))
    assert results == [2 * x for x in range(10)]
    # All ten are queued before the loop runs: two full batches, then the rest once max_wait has passed.
    assert [len(b) for b in fn.batches] == [4, 4, 2]
    assert fn.threads == {"model_0"}


def test_a_lone_item_waits_at_most_max_wait() -> None:
    fn = Doubler()
    started = time.monotonic()
    assert asyncio.run(_gather_with(fn, [5], max_batch_size=8, max_wait_s=0.05)) == [10]
    assert time.monotonic() - started < 1.0 and fn.batches == [[5]]


def test_items_arriving_while_the_model_is_busy_form_the_next_batch() -> None:
    async def scenario() -> tuple[list[int], Doubler]:
        fn = Doubler(delay_s=0.2)
        with ThreadPoolExecutor(1) as pool:
            batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=16, max_wait_s=0.0, executor=pool)
            batcher.start()
            first = batcher.submit(0)
            await asyncio.sleep(0.05)  # the first batch is running now
            rest = [batcher.submit(x) for x in range(1, 6)]
            results = await asyncio.gather(first, *rest)
            await batcher.close()
        return list(results), fn

    results, fn = asyncio.run(scenario())
    assert results == [0, 2, 4, 6, 8, 10] and fn.batches == [[0], [1, 2, 3, 4, 5]]


def test_callers_answered_by_a_batch_can_join_the_next_one_within_max_wait() -> None:
    # Without this, closed-loop clients split into two half-full batches that alternate for good.
    async def scenario() -> Doubler:
        fn = Doubler(delay_s=0.2)
        with ThreadPoolExecutor(1) as pool:
            batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=16, max_wait_s=0.1, executor=pool)
            batcher.start()
            first = batcher.submit(0)
            await asyncio.sleep(0.15)  # the first batch is running
            early = [batcher.submit(1), batcher.submit(2)]
            await first
            late = batcher.submit(3)  # the first batch's caller, sending its next item at once
            assert await asyncio.gather(*early, late) == [2, 4, 6]
            await batcher.close()
        return fn

    assert asyncio.run(scenario()).batches == [[0], [1, 2, 3]]


def test_a_failing_batch_fails_its_callers_only_and_the_loop_serves_on() -> None:
    fn = Doubler()
    results = asyncio.run(_gather_with(fn, [1, 13, 2, 3], max_batch_size=2, max_wait_s=0.0))
    assert isinstance(results[0], ValueError) and isinstance(results[1], ValueError)
    assert results[2:] == [4, 6]


def test_close_finishes_queued_items_then_refuses_new_ones() -> None:
    async def scenario() -> None:
        fn = Doubler(delay_s=0.05)
        with ThreadPoolExecutor(1) as pool:
            batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=2, max_wait_s=0.0, executor=pool)
            batcher.start()
            futures = [batcher.submit(x) for x in range(5)]
            await batcher.close()
            assert all(f.done() for f in futures) and [f.result() for f in futures] == [0, 2, 4, 6, 8]
            with pytest.raises(BatcherClosed):
                batcher.submit(9)

    asyncio.run(scenario())


def test_a_full_queue_refuses_with_batcher_full() -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher: MicroBatcher[int, int] = MicroBatcher(Doubler(), 4, 0.0, pool, max_pending=2)
            batcher.submit(1)
            batcher.submit(2)
            with pytest.raises(BatcherFull):
                batcher.submit(3)
            batcher.start()
            await batcher.close()

    asyncio.run(scenario())


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Doubler(), 0, 0.0, ThreadPoolExecutor(1))

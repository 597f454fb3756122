"""Running critics on a bench: batched, through a verdict cache, plus the reference rows every report carries.

Reference rows answer without looking at the images, so a real critic has something to beat:

- ``constant k``: the middle of the scale (3 on 1-5) for every sample.
- ``best constant``: per dimension, the score with the least MAE against this bench's human scores (a median). It
  is fitted on the answers, so it is the best any constant can do, not a fair critic.
- ``random (seed s)``: uniform integers of the scale from a seeded generator, in bench order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from firm.bench.metrics import best_constant
from firm.bench.predictions import Key, VerdictCache
from firm.bench.sample import Bench, BenchSample
from firm.critics.base import Critic, Verdict
from firm.data.samples import SampleInputError

__all__ = ["JudgeStats", "best_constant_verdicts", "constant_verdicts", "judge_bench", "random_verdicts"]


@dataclass(frozen=True)
class JudgeStats:
    """What one critic run did: verdicts taken from the cache, and requests judged now."""

    reused: int
    judged: int
    unreadable: int = 0
    """Samples whose images could not be read: each an invalid verdict, not cached (a fixed image is judged)."""


def judge_bench(
    critic: Critic,
    samples: Sequence[BenchSample],
    cache: VerdictCache,
    chunk: int = 64,
    progress: bool = True,
    desc: str = "judging",
) -> tuple[dict[Key, Verdict], JudgeStats]:
    """Judge every sample that the cache does not hold yet, ``chunk`` requests per call, caching each chunk.

    Args:
        critic: the critic.
        samples: the bench samples to judge.
        cache: the critic's verdict cache; a chunk's verdicts are appended and flushed as soon as they come.
        chunk: requests per :meth:`Critic.judge` call (the critic batches inside it as it likes).
        progress: show a progress bar.
        desc: the progress bar's label.

    Returns:
        The verdict of every sample by (id, dimension), and how many came from the cache.

    Raises:
        ValueError: for ``chunk < 1`` or a sample without images (a scores-only bench).
        RuntimeError: when the critic breaks its contract (wrong number of verdicts, or another dimension).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    todo = [s for s in samples if s.key not in cache]
    unreadable: dict[Key, Verdict] = {}
    with tqdm(total=len(todo), unit="request", desc=desc, disable=not progress or not todo) as bar:
        for start in range(0, len(todo), chunk):
            batch, requests = [], []
            for sample in todo[start : start + chunk]:
                try:
                    requests.append(sample.request())
                    batch.append(sample)
                except SampleInputError as exc:  # one sample's unreadable image costs that sample, not the run
                    unreadable[sample.key] = Verdict.invalid(sample.dimension, f"unreadable image: {exc}")
            verdicts = critic.judge(requests) if requests else []
            if len(verdicts) != len(batch):
                raise RuntimeError(f"{type(critic).__name__} returned {len(verdicts)} verdicts for {len(batch)}")
            for sample, verdict in zip(batch, verdicts, strict=True):
                if verdict.dimension != sample.dimension:
                    raise RuntimeError(
                        f"{type(critic).__name__} answered {verdict.dimension} for a {sample.dimension} request"
                    )
            cache.add((s.key, v) for s, v in zip(batch, verdicts, strict=True))
            bar.update(min(chunk, len(todo) - start))
    stats = JudgeStats(reused=len(samples) - len(todo), judged=len(todo) - len(unreadable), unreadable=len(unreadable))
    return {s.key: unreadable.get(s.key) or cache[s.key] for s in samples}, stats


def constant_verdicts(bench: Bench, score: int) -> dict[Key, Verdict]:
    """The same score for every sample."""
    return {s.key: Verdict(s.dimension, score, reasoning="constant") for s in bench.samples}


def best_constant_verdicts(bench: Bench) -> tuple[dict[Key, Verdict], Mapping[str, int]]:
    """Per dimension, the constant with the least MAE on the bench; also returns the constant chosen per dimension."""
    chosen = {
        dim: best_constant(
            torch.tensor([s.human for s in bench.samples if s.dimension == dim], dtype=torch.float64),
            bench.score_range,
        )
        for dim in bench.dimensions
    }
    verdicts = {s.key: Verdict(s.dimension, chosen[s.dimension], reasoning="best constant") for s in bench.samples}
    return verdicts, chosen


def random_verdicts(bench: Bench, seed: int) -> dict[Key, Verdict]:
    """Uniform random scores of the scale, drawn in bench order from a generator seeded with ``seed``."""
    low, high = bench.score_range.low, bench.score_range.high
    draws = torch.randint(low, high + 1, (len(bench.samples),), generator=torch.Generator().manual_seed(seed))
    return {s.key: Verdict(s.dimension, int(d), reasoning="random") for s, d in zip(bench.samples, draws, strict=True)}

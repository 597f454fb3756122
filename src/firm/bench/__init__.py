"""Measuring critics against human scores: bench readers, metrics, a resumable runner, reports and plots.

``firm bench`` (:mod:`firm.bench.cli`) puts these together; each part is usable on its own::

    from firm.bench import evaluate, read_bench

    bench = read_bench("shapesworld", [Path("shapes-bench/bench.jsonl")])
    result = evaluate(bench, "my critic", verdicts)  # verdicts: {(id, dimension): Verdict}
    result.groups["execution"].mae

Names are imported on first use, so that ``firm --help`` does not pay for torchmetrics and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firm.bench.predictions import VerdictCache, read_predictions, write_predictions
    from firm.bench.readers import READERS, ReadOptions, read_bench
    from firm.bench.result import CriticResult, GroupMetrics, evaluate
    from firm.bench.runner import judge_bench
    from firm.bench.sample import Bench, BenchSample

_HOMES = {
    "CriticResult": "result",
    "GroupMetrics": "result",
    "evaluate": "result",
    "VerdictCache": "predictions",
    "read_predictions": "predictions",
    "write_predictions": "predictions",
    "READERS": "readers",
    "ReadOptions": "readers",
    "read_bench": "readers",
    "judge_bench": "runner",
    "Bench": "sample",
    "BenchSample": "sample",
}

__all__ = [
    "READERS",
    "Bench",
    "BenchSample",
    "CriticResult",
    "GroupMetrics",
    "ReadOptions",
    "VerdictCache",
    "evaluate",
    "judge_bench",
    "read_bench",
    "read_predictions",
    "write_predictions",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'firm.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"firm.bench.{_HOMES[name]}"), name)

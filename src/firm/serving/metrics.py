"""Server metrics: request counts, batch sizes, latency percentiles and the invalid-verdict rate.

Counters are totals since the server started; latency percentiles cover the most recent ``window`` requests of each
route. Everything is updated on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

from firm.critics.base import Verdict


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of ascending values; NaN for none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class ServerMetrics:
    """What ``GET /metrics`` reports.

    Args:
        window: how many recent requests per route the latency percentiles cover.
    """

    def __init__(self, window: int = 10_000) -> None:
        self.started = time.monotonic()
        self.window = window
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency_s: dict[str, deque[float]] = {}
        self.batch_sizes: Counter[int] = Counter()
        self.batch_seconds = 0.0
        self.failed_batches = 0
        self.items_judged = 0
        self.items_cached = 0
        self.verdicts: Counter[tuple[str, bool]] = Counter()
        self.chat_completions = 0

    def record_request(self, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request."""
        self.requests[(route, status)] += 1
        self.latency_s.setdefault(route, deque(maxlen=self.window)).append(seconds)

    def record_batch(self, size: int, seconds: float, verdicts: Iterable[Verdict] | None) -> None:
        """One call of the critic; ``verdicts`` is None when it raised."""
        self.batch_sizes[size] += 1
        self.batch_seconds += seconds
        if verdicts is None:
            self.failed_batches += 1
            return
        self.items_judged += size
        for verdict in verdicts:
            self.verdicts[(verdict.dimension, verdict.valid)] += 1

    def snapshot(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The metrics as a JSON-ready dict; latencies in milliseconds, NaN-free."""
        requests: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.requests.items()):
            requests.setdefault(route, {})[str(status)] = count
        latency: dict[str, dict[str, float | int | None]] = {}
        for route, values in sorted(self.latency_s.items()):
            ordered = sorted(values)
            latency[route] = {
                "count": len(ordered),
                **{f"p{q}": _ms(percentile(ordered, q)) for q in (50, 90, 99)},
                "max": _ms(ordered[-1]) if ordered else None,
            }
        batches = sum(self.batch_sizes.values())
        items = sum(size * count for size, count in self.batch_sizes.items())
        valid = sum(c for (_, ok), c in self.verdicts.items() if ok)
        invalid = sum(c for (_, ok), c in self.verdicts.items() if not ok)
        by_dimension: dict[str, dict[str, int]] = {}
        for (dimension, ok), count in sorted(self.verdicts.items()):
            by_dimension.setdefault(dimension, {"valid": 0, "invalid": 0})["valid" if ok else "invalid"] += count
        out: dict[str, Any] = {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": requests,
            "latency_ms": latency,
            "batches": {
                "count": batches,
                "failed": self.failed_batches,
                "mean_size": round(items / batches, 3) if batches else None,
                "max_size": max(self.batch_sizes) if batches else None,
                "sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())},
                "busy_s": round(self.batch_seconds, 3),
            },
            "items": {"judged": self.items_judged, "answered_from_cache": self.items_cached},
            "verdicts": {
                "valid": valid,
                "invalid": invalid,
                "invalid_rate": round(invalid / (valid + invalid), 6) if valid + invalid else None,
                "by_dimension": by_dimension,
            },
            "chat_completions": self.chat_completions,
        }
        out.update(extra or {})
        return out


def prometheus_text(snapshot: Mapping[str, Any]) -> str:
    """The main metrics of :meth:`ServerMetrics.snapshot` in Prometheus' text exposition format."""
    lines = [
        "# TYPE firm_requests_total counter",
        *(
            f'firm_requests_total{{route="{route}",status="{status}"}} {count}'
            for route, by_status in snapshot["requests"].items()
            for status, count in by_status.items()
        ),
        "# TYPE firm_request_latency_ms summary",
        *(
            f'firm_request_latency_ms{{route="{route}",quantile="{q / 100:g}"}} {stats[f"p{q}"]}'
            for route, stats in snapshot["latency_ms"].items()
            for q in (50, 90, 99)
            if stats[f"p{q}"] is not None
        ),
        "# TYPE firm_batches_total counter",
        f"firm_batches_total {snapshot['batches']['count']}",
        "# TYPE firm_batch_size_total counter",
        *(f'firm_batch_size_total{{size="{s}"}} {c}' for s, c in snapshot["batches"]["sizes"].items()),
        "# TYPE firm_items_judged_total counter",
        f"firm_items_judged_total {snapshot['items']['judged']}",
        "# TYPE firm_items_cached_total counter",
        f"firm_items_cached_total {snapshot['items']['answered_from_cache']}",
        "# TYPE firm_verdicts_total counter",
        *(
            f'firm_verdicts_total{{dimension="{dim}",valid="{kind == "valid"}"}} {count}'
            for dim, counts in snapshot["verdicts"]["by_dimension"].items()
            for kind, count in counts.items()
        ),
        "# TYPE firm_queue_pending gauge",
        f"firm_queue_pending {snapshot.get('queue', {}).get('pending', 0)}",
    ]
    return "\n".join(lines) + "\n"


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)

"""Server metrics: percentiles, batch sizes and the invalid-verdict rate."""

from __future__ import annotations

import math

from firm.critics.base import Verdict
from firm.serving.metrics import ServerMetrics, percentile, prometheus_text


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0 and math.isnan(percentile([], 50))


def test_snapshot_counts_requests_batches_and_invalid_verdicts() -> None:
    metrics = ServerMetrics(window=3)
    for seconds in (0.010, 0.020, 0.030, 0.040):  # the window keeps the last three
        metrics.record_request("/v1/judge", 200, seconds)
    metrics.record_request("/v1/judge", 400, 0.001)
    good, bad = Verdict("execution", 4), Verdict.invalid("execution", "no score")
    metrics.record_batch(3, 0.5, [good, good, bad])
    metrics.record_batch(1, 0.1, [Verdict("consistency", 5)])
    metrics.record_batch(2, 0.1, None)
    snap = metrics.snapshot({"queue": {"pending": 7}})
    assert snap["requests"] == {"/v1/judge": {"200": 4, "400": 1}}
    assert snap["latency_ms"]["/v1/judge"]["count"] == 3 and snap["latency_ms"]["/v1/judge"]["max"] == 40.0
    assert snap["batches"] == {
        "count": 3,
        "failed": 1,
        "mean_size": 2.0,
        "max_size": 3,
        "sizes": {"1": 1, "2": 1, "3": 1},
        "busy_s": 0.7,
    }
    assert snap["items"]["judged"] == 4
    assert snap["verdicts"]["invalid"] == 1 and snap["verdicts"]["invalid_rate"] == 0.25
    assert snap["verdicts"]["by_dimension"]["execution"] == {"valid": 2, "invalid": 1}
    text = prometheus_text(snap)
    assert 'firm_requests_total{route="/v1/judge",status="400"} 1' in text
    assert 'firm_verdicts_total{dimension="execution",valid="False"} 1' in text
    assert "firm_queue_pending 7" in text


def test_an_idle_server_reports_no_rates_rather_than_zeros() -> None:
    snap = ServerMetrics().snapshot()
    assert snap["verdicts"]["invalid_rate"] is None and snap["batches"]["mean_size"] is None

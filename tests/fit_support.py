"""What tests that run ``firm fit`` recipes as subprocesses share: a working folder like a fresh clone, the
environment of the process, and the metrics Lightning's CSV logger wrote."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def workdir(root: Path) -> Path:
    """A folder where a recipe's relative paths (runs/, data/, recipes/) resolve, as in a fresh clone."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipes").symlink_to(REPO / "recipes")
    return root


def fit_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (the ``deepspeed_env`` fixture) with one thread per process: on two cores, a second thread per
    process only contends with the dataloader workers and the other ranks."""
    return {**base, "OMP_NUM_THREADS": "1"}


def metrics(log_dir: Path) -> list[dict[str, str]]:
    """The rows of ``metrics.csv`` in a CSVLogger folder."""
    with (log_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))

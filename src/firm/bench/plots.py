"""PNG plots of a bench run (matplotlib, drawn off-screen with the object API, no display or pyplot state).

- ``confusion_<critic>.png``: per critic, one heatmap per dimension of human score (rows) against predicted score
  (columns, the last one "invalid"); colour is the share of the row, the number the count.
- ``error_by_score.png``: per dimension, MAE against the human score, one bar per critic; left over valid verdicts,
  right with invalid verdicts counted as misses.
- ``histograms.png``: per critic and dimension, how often each score was given, by the humans and by the critic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from firm.bench.metrics import human_classes
from firm.bench.result import CriticResult
from firm.bench.sample import Bench

__all__ = ["plot_confusion", "plot_error_by_score", "plot_histograms", "slug", "write_plots"]


def slug(name: str) -> str:
    """A file-name-safe form of a critic name."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "critic"


def _score_labels(bench: Bench) -> list[str]:
    return [str(s) for s in range(bench.score_range.low, bench.score_range.high + 1)]


def plot_confusion(bench: Bench, result: CriticResult, path: Path) -> Path:
    """Heatmaps of human against predicted score for one critic, one panel per dimension."""
    dims = list(result.confusion)
    side = 1.8 + 0.3 * (bench.score_range.size + 1)  # 3.6 in for FIRM's 1-5; room for the counts of longer scales
    fig = Figure(figsize=(side * len(dims) + 0.6, side), layout="constrained")
    axes = fig.subplots(1, len(dims), squeeze=False)[0]
    labels = _score_labels(bench)
    for ax, dim in zip(axes, dims, strict=True):
        counts = result.confusion[dim].numpy()
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for (row, col), count in np.ndenumerate(counts):
            colour = "white" if shares[row, col] > 0.6 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=8)
        ax.set_xticks(range(len(labels) + 1), [*labels, "inv"])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted score")
        ax.set_ylabel("human score")
        ax.set_title(f"{dim} (n={int(counts.sum())})", fontsize=10)
    fig.suptitle(f"{result.name}: human vs predicted", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


def plot_error_by_score(bench: Bench, results: Sequence[CriticResult], path: Path) -> Path:
    """MAE per human score, one bar per critic; valid-only on the left, invalid-as-miss on the right."""
    dims = list(results[0].by_score)
    fig = Figure(figsize=(11, 3.2 * len(dims) + 0.6), layout="constrained")
    axes = fig.subplots(len(dims), 2, squeeze=False)
    labels = _score_labels(bench)
    x = np.arange(len(labels))
    width = 0.8 / len(results)
    for row, dim in enumerate(dims):
        for col, (title, attr) in enumerate((("MAE, valid verdicts", "mae"), ("MAE, invalid=miss", "penalised_mae"))):
            ax = axes[row][col]
            for i, result in enumerate(results):
                values = np.array([getattr(e, attr) for e in result.by_score[dim]], dtype=float)
                at = x - 0.4 + width * (i + 0.5)
                bars = ax.bar(at, np.nan_to_num(values, nan=0.0), width, label=result.name)
                # No valid verdict in a bucket: mark it, so it does not read as a perfect score.
                undefined = np.isnan(values) & np.array([e.n > 0 for e in result.by_score[dim]])
                ax.plot(at[undefined], np.full(undefined.sum(), 0.1), "x", color=bars.patches[0].get_facecolor())
            counts = [e.n for e in results[0].by_score[dim]]
            ax.set_xticks(x, [f"{s}\n(n={n})" for s, n in zip(labels, counts, strict=True)])
            ax.set_xlabel("human score")
            ax.set_ylabel("MAE")
            ax.set_ylim(0, bench.score_range.high - bench.score_range.low + 0.2)
            ax.set_title(f"{dim}: {title}", fontsize=10)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(results), 6), fontsize=8)
    fig.suptitle("Error by human score (lower is better; x: no valid verdict)", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


def plot_histograms(bench: Bench, results: Sequence[CriticResult], path: Path) -> Path:
    """Score histograms, human against critic, one row per critic and one column per dimension."""
    dims = list(results[0].by_score)
    fig = Figure(figsize=(3.8 * len(dims) + 0.6, 2.3 * len(results) + 0.6), layout="constrained")
    axes = fig.subplots(len(results), len(dims), squeeze=False)
    labels = [*_score_labels(bench), "inv"]
    x = np.arange(len(labels))
    for col, dim in enumerate(dims):
        idx = [i for i, s in enumerate(bench.samples) if s.dimension == dim]
        human = human_classes(torch.tensor([bench.samples[i].human for i in idx]), bench.score_range)
        human_counts = np.bincount(human.numpy() - bench.score_range.low, minlength=len(labels))
        for row, result in enumerate(results):
            # The confusion matrix's column sums are the critic's score counts, invalid last.
            critic_counts = result.confusion[dim].numpy().sum(axis=0)
            ax = axes[row][col]
            ax.bar(x - 0.2, human_counts, 0.4, label="human", color="0.6")
            ax.bar(x + 0.2, critic_counts, 0.4, label="critic", color="tab:blue")
            ax.set_xticks(x, labels)
            ax.set_title(f"{result.name} — {dim}", fontsize=9)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if col == 0:
                ax.set_ylabel("samples")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Score histograms: human vs critic", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


def write_plots(folder: Path, bench: Bench, results: Sequence[CriticResult]) -> dict[str, list[Path]]:
    """Draw every plot into ``folder``; returns plot title -> files, for the report."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "Confusion matrices": [plot_confusion(bench, r, folder / f"confusion_{slug(r.name)}.png") for r in results],
        "Error by human score": [plot_error_by_score(bench, results, folder / "error_by_score.png")],
        "Score histograms": [plot_histograms(bench, results, folder / "histograms.png")],
    }

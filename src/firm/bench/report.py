"""The bench report: a Markdown table shaped like FIRM's Tables 1-2 (one row per critic), details, and metrics JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from firm.bench.metrics import miss_error
from firm.bench.result import CriticResult, GroupMetrics
from firm.bench.sample import Bench
from firm.critics.base import DIMENSIONS

__all__ = ["markdown_table", "metrics_json", "table_columns", "write_metrics", "write_report"]

Column = tuple[str, Callable[[CriticResult], str]]


def _num(value: float, digits: int = 3) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}"


def _metric(label: str, pick: Callable[[GroupMetrics], float], pct: bool = False) -> Callable[[CriticResult], str]:
    def cell(result: CriticResult) -> str:
        group = result.groups.get(label)
        if group is None:
            return "—"
        return _pct(pick(group)) if pct else _num(pick(group))

    return cell


def _ordered_dimensions(bench: Bench) -> list[str]:
    known = [d for d in DIMENSIONS if d in bench.dimensions]
    return known + [d for d in bench.dimensions if d not in DIMENSIONS]


def _difficulties(bench: Bench, dimension: str) -> list[str]:
    found = {s.difficulty for s in bench.samples if s.dimension == dimension and s.difficulty is not None}
    return [d for d in ("easy", "hard") if d in found] + sorted(found - {"easy", "hard"})


def table_columns(bench: Bench) -> list[Column]:
    """The columns of the main table for this bench: MAE per dimension (and difficulty), then the pooled metrics."""
    columns: list[Column] = []
    for dim in _ordered_dimensions(bench):
        for difficulty in _difficulties(bench, dim):
            columns.append((f"{dim.capitalize()} MAE {difficulty}", _metric(f"{dim}/{difficulty}", lambda g: g.mae)))
        columns.append((f"{dim.capitalize()} MAE", _metric(dim, lambda g: g.mae)))
    if len(bench.dimensions) > 1:
        columns.append(("Overall MAE", _metric("all", lambda g: g.mae)))
    columns += [
        ("MAE, invalid=miss", _metric("all", lambda g: g.penalised_mae)),
        ("Invalid %", _metric("all", lambda g: g.invalid_rate, pct=True)),
        ("Pearson", _metric("all", lambda g: g.correlations.pearson)),
        ("Spearman", _metric("all", lambda g: g.correlations.spearman)),
        ("Kendall", _metric("all", lambda g: g.correlations.kendall)),
        ("Pair acc", _metric("all", lambda g: g.pairs.strict)),
        ("Pair acc (ties)", _metric("all", lambda g: g.pairs.with_ties)),
    ]
    return columns


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join(("-" * (w + 1)) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(bench: Bench, results: Sequence[CriticResult]) -> str:
    """The main table: one row per critic, MAE per dimension like FIRM's Tables 1-2, then pooled metrics."""
    columns = table_columns(bench)
    rows = [[r.name, *(cell(r) for _, cell in columns)] for r in results]
    return _table(["Critic", *(h for h, _ in columns)], rows)


def _detail_table(results: Sequence[CriticResult], label: str) -> str:
    header = ["Critic", "n", "invalid", "MAE", "MAE, invalid=miss", "Pearson", "Spearman", "Kendall", "Pair acc"]
    rows = []
    for r in results:
        g = r.groups[label]
        c = g.correlations
        pairs = f"{_num(g.pairs.strict)} ({g.pairs.n_strict})"
        errors = [str(g.n), str(g.n_invalid), _num(g.mae), _num(g.penalised_mae)]
        rows.append([r.name, *errors, _num(c.pearson), _num(c.spearman), _num(c.kendall), pairs])
    return _table(header, rows)


def _bench_summary(bench: Bench) -> list[str]:
    parts = []
    for dim in _ordered_dimensions(bench):
        n = sum(s.dimension == dim for s in bench.samples)
        split = ", ".join(
            f"{d} {sum(s.dimension == dim and s.difficulty == d for s in bench.samples)}"
            for d in _difficulties(bench, dim)
        )
        parts.append(f"{dim} {n}" + (f" ({split})" if split else ""))
    lines = [
        f"{len(bench.samples)} samples: {'; '.join(parts)}. Score scale {bench.score_range.low}-"
        f"{bench.score_range.high}.",
    ]
    if bench.skipped:
        lines.append(f"{len(bench.skipped)} records skipped while reading the bench:")
        lines += [f"- {s.where}: {s.reason}" for s in bench.skipped[:20]]
        if len(bench.skipped) > 20:
            lines.append(f"- ... and {len(bench.skipped) - 20} more")
    return lines


def write_report(
    path: Path, bench: Bench, results: Sequence[CriticResult], plots: Mapping[str, Sequence[Path]], pair_by: str
) -> str:
    """Write the Markdown report and return its main table.

    Args:
        path: the report file (``report.md``); plot paths are written relative to its folder.
        bench: the bench.
        results: one per critic row, in row order.
        plots: plot title -> image files.
        pair_by: what pairwise accuracy compared ("group" or "dimension"), for the legend.
    """
    table = markdown_table(bench, results)
    miss = miss_error(bench.score_range)
    pairs = "candidates for the same input" if pair_by == "group" else "any two samples of a dimension"
    lines = [f"# firm bench: {bench.name}", "", *_bench_summary(bench), "", "## Results", "", table, ""]
    lines += [
        "Lower MAE is better. MAE columns average over *valid* verdicts only; `MAE, invalid=miss` averages over every "
        f"sample with an invalid or missing verdict counted as an error of {miss:g} (the span of the scale); "
        "`Invalid %` is the share of invalid or missing verdicts. Correlations are over valid verdicts (Kendall: "
        f"tau-b). Pair acc: share of pairs of {pairs} with different human scores that the critic orders the same "
        "way (a tie or an invalid verdict is wrong); `(ties)` counts all pairs, a human tie needing a predicted tie.",
        "",
    ]
    n_pairs = results[0].groups["all"].pairs.n_pairs if results else 0
    if n_pairs == 0:
        lines += [
            "No input of this bench has two candidates, so there are no pairs to compare; `--pairs dimension` "
            "compares any two samples of a dimension.",
            "",
        ]
    for dim in _ordered_dimensions(bench):
        lines += [f"## {dim.capitalize()}", "", _detail_table(results, dim), ""]
        for difficulty in _difficulties(bench, dim):
            lines += [f"### {dim.capitalize()}, {difficulty}", "", _detail_table(results, f"{dim}/{difficulty}"), ""]
    models = sorted({s.model for s in bench.samples if s.model is not None})
    if models:
        lines += ["## Correlation per generating model", "", "Pearson / Spearman / Kendall over valid verdicts.", ""]
        rows = []
        for r in results:
            cells = []
            for m in models:
                c = r.groups[f"model={m}"].correlations
                cells.append(f"{_num(c.pearson, 2)} / {_num(c.spearman, 2)} / {_num(c.kendall, 2)}")
            rows.append([r.name, *cells])
        lines += [_table(["Critic", *models], rows), ""]
    lines += ["## Invalid verdicts", ""]
    for r in results:
        total = sum(r.invalid_reasons.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in r.invalid_reasons.most_common()) or "none"
        lines.append(f"- **{r.name}** ({r.kind}): {total} invalid of {len(r.verdicts)}; {reasons}")
        lines += [f"  - {note}" for note in r.notes]
    lines += ["", "## Plots", ""]
    for title, files in plots.items():
        lines.append(f"### {title}")
        lines.append("")
        lines += [f"![{title}]({f.relative_to(path.parent).as_posix()})" for f in files]
        lines.append("")
    lines += ["## How the bench was read", ""]
    lines += [f"- `{k}`: `{v}`" for k, v in bench.fields.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


def metrics_json(bench: Bench, results: Sequence[CriticResult]) -> dict[str, Any]:
    """Every number of the report, machine-readable."""
    return {
        "bench": bench.name,
        "samples": len(bench.samples),
        "skipped": len(bench.skipped),
        "score_range": [bench.score_range.low, bench.score_range.high],
        "critics": [
            {
                "name": r.name,
                "kind": r.kind,
                "groups": {label: g.to_dict() for label, g in r.groups.items()},
                "confusion": {dim: m.tolist() for dim, m in r.confusion.items()},
                "error_by_human_score": {
                    dim: [
                        {"score": e.score, "n": e.n, "n_invalid": e.n_invalid, "mae": _round(e.mae)}
                        | {"penalised_mae": _round(e.penalised_mae)}
                        for e in errors
                    ]
                    for dim, errors in r.by_score.items()
                },
                "invalid_reasons": dict(r.invalid_reasons),
                "notes": list(r.notes),
            }
            for r in results
        ],
    }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def write_metrics(path: Path, bench: Bench, results: Sequence[CriticResult]) -> None:
    """Write :func:`metrics_json` as indented JSON."""
    path.write_text(json.dumps(metrics_json(bench, results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

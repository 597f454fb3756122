"""The Markdown report (a table shaped like FIRM's Tables 1-2), metrics.json and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from firm.bench import Bench, BenchSample, evaluate
from firm.bench.plots import slug, write_plots
from firm.bench.report import markdown_table, metrics_json, write_metrics, write_report
from firm.critics.base import Verdict


def _edit_bench() -> Bench:
    samples = [BenchSample(f"e{i}", "execution", h, model="m1") for i, h in enumerate([5, 4, 2, 1])]
    samples += [BenchSample(f"e{i}", "consistency", h, model="m2") for i, h in enumerate([5, 3])]
    return Bench("edit", samples)


def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]


def test_edit_table_has_execution_consistency_overall_then_pooled_columns() -> None:
    bench = _edit_bench()
    verdicts = {
        ("e0", "execution"): Verdict("execution", 5),
        ("e1", "execution"): Verdict("execution", 3),
        ("e2", "execution"): Verdict("execution", 2),
        ("e3", "execution"): Verdict.invalid("execution", "no score: x"),
        ("e0", "consistency"): Verdict("consistency", 4),
        ("e1", "consistency"): Verdict("consistency", 3),
    }
    rows = _rows(markdown_table(bench, [evaluate(bench, "mine", verdicts)]))
    assert rows[0] == [
        "Critic",
        "Execution MAE",
        "Consistency MAE",
        "Overall MAE",
        "MAE, invalid=miss",
        "Invalid %",
        "Pearson",
        "Spearman",
        "Kendall",
        "Pair acc",
        "Pair acc (ties)",
    ]
    # execution errors 0, 1, 0 (+ one invalid); consistency 1, 0 -> overall 2/5; penalised (2 + 4) / 6
    assert rows[2][:6] == ["mine", "0.333", "0.500", "0.400", "1.000", "16.7"]


def test_gen_table_splits_easy_and_hard() -> None:
    samples = [
        BenchSample("a", "instruction", 5, difficulty="easy"),
        BenchSample("b", "instruction", 1, difficulty="hard"),
    ]
    bench = Bench("gen", samples)
    result = evaluate(bench, "c", {("a", "instruction"): Verdict("instruction", 4)})
    rows = _rows(markdown_table(bench, [result]))
    assert rows[0][:5] == [
        "Critic",
        "Instruction MAE easy",
        "Instruction MAE hard",
        "Instruction MAE",
        "MAE, invalid=miss",
    ]
    assert rows[2][:5] == ["c", "1.000", "—", "1.000", "2.500"]  # hard has no valid verdict: no MAE, but a miss


def test_report_metrics_and_plots(tmp_path: Path) -> None:
    bench = _edit_bench()
    good = evaluate(bench, "good critic", {s.key: Verdict(s.dimension, round(s.human)) for s in bench.samples})
    none = evaluate(bench, "silent/critic", {})
    plots = write_plots(tmp_path / "plots", bench, [good, none])
    files = [p for paths in plots.values() for p in paths]
    assert sorted(p.name for p in files) == [
        "confusion_good-critic.png",
        "confusion_silent-critic.png",
        "error_by_score.png",
        "histograms.png",
    ]
    with Image.open(tmp_path / "plots" / "confusion_good-critic.png") as img:
        assert img.format == "PNG" and img.width > 2 * img.height  # two dimension panels side by side
    with Image.open(tmp_path / "plots" / "histograms.png") as img:
        assert img.height > 400  # one row per critic

    table = write_report(tmp_path / "report.md", bench, [good, none], plots, "group")
    text = (tmp_path / "report.md").read_text()
    assert table in text
    assert "![Confusion matrices](plots/confusion_good-critic.png)" in text
    assert "- **silent/critic** (critic): 6 invalid of 6; missing prediction: 6" in text
    assert "## Correlation per generating model" in text

    write_metrics(tmp_path / "metrics.json", bench, [good, none])
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data == json.loads(json.dumps(metrics_json(bench, [good, none])))
    first = data["critics"][0]
    assert first["groups"]["all"]["mae"] == 0.0 and first["groups"]["all"]["pearson"] == 1.0
    assert first["confusion"]["execution"][0] == [1, 0, 0, 0, 0, 0]  # human 1 judged 1
    assert data["critics"][1]["groups"]["all"]["mae"] is None  # no valid verdict: no MAE (NaN written as null)


def test_slug() -> None:
    assert slug("random (seed 0)") == "random-seed-0"
    assert slug("FIRM-Edit-8B") == "firm-edit-8b"
    assert slug("???") == "critic"

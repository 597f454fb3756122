"""``firm bench`` end to end on a ShapesWorld bench: two tiny critics, a hosted critic's predictions, references.

The untrained tiny generative judge writes gibberish, so its verdicts are invalid (and reported as such); the tiny
score-token judge always gives a score. A run killed after its first chunk resumes from the verdict cache.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from firm.cli import main
from firm.critics.base import JudgeRequest, Verdict
from firm.critics.transformers import GenerativeJudge
from firm.worlds.shapes.export import write_bench
from firm.worlds.shapes.world import ShapesWorld

#: Set by the test: DyingJudge raises KeyboardInterrupt (as Ctrl-C would) at this judge call; None to live.
kill_switch: dict[str, int | None] = {"call": None}
#: The texts of every request a DyingJudge was given, in order.
seen_texts: list[str] = []


class DyingJudge(GenerativeJudge):
    """The tiny generative judge, killable at a chosen call (a setting outside its config, so the cache matches)."""

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        kill_switch["calls"] = (kill_switch.get("calls") or 0) + 1
        if kill_switch["call"] is not None and kill_switch["calls"] >= kill_switch["call"]:
            raise KeyboardInterrupt
        seen_texts.extend(r.text for r in requests)
        return super().judge(requests)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_critic_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bench")
    bench = write_bench(ShapesWorld(size=64, split="bench", seed=0), 3, root / "shapes", ["execution", "instruction"])
    model = tiny_critic_dir
    # A hosted critic's predictions: the ground truth, off by one now and then, with one refusal.
    rng = random.Random(0)
    lines = [json.loads(line) for line in bench.read_text().splitlines()]
    with (root / "hosted.jsonl").open("w") as f:
        for i, line in enumerate(lines):
            score = None if i == 0 else min(5, max(1, line["score"] + rng.choice([-1, 0, 0, 1])))
            f.write(json.dumps({"id": line["id"], "dimension": line["dimension"], "score": score}) + "\n")
    dying = {
        "name": "tiny-generative",
        "class_path": f"{__name__}.DyingJudge",
        "init_args": {"model": str(model), "device": "cpu", "max_new_tokens": 8, "max_new_tokens_per_dimension": {}},
    }
    (root / "dying.json").write_text(json.dumps(dying))
    # min_digit_mass 0: the random tiny critic's digit mass is far below the default, and this row is to have scores.
    score_token = {
        "name": "tiny-score-token",
        "class_path": "score_token",
        "init_args": {"model": str(model), "min_digit_mass": 0.0},
    }
    (root / "score_token.json").write_text(json.dumps(score_token))
    return {"root": root, "bench": bench, "lines": lines}


def _argv(setup: dict[str, Any], out: Path) -> list[str]:
    root = setup["root"]
    return [
        "bench",
        "--bench",
        str(setup["bench"]),
        "--critic-config",
        str(root / "dying.json"),
        "--critic-config",
        str(root / "score_token.json"),
        "--predictions",
        f"hosted={root / 'hosted.jsonl'}",
        "--chunk",
        "2",
        "--out",
        str(out),
    ]


@pytest.mark.slow
def test_bench_writes_report_plots_and_predictions_and_resumes_after_a_kill(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup["root"] / "run"
    texts = [line["text"] for line in setup["lines"]]

    kill_switch.update(call=2, calls=0)
    assert main(_argv(setup, out)) == 130  # killed during its second chunk
    assert "interrupted" in capsys.readouterr().err
    assert seen_texts == texts[:2]
    cached = (out / "cache" / "tiny-generative.jsonl").read_text().splitlines()
    assert len(cached) == 1 + 2  # the header and the first chunk's verdicts

    kill_switch.update(call=None, calls=0)
    seen_texts.clear()
    assert main(_argv(setup, out)) == 0
    printed = capsys.readouterr().out
    assert seen_texts == texts[2:]  # only what the killed run had not judged

    rows = [line.split("|")[1].strip() for line in printed.splitlines() if line.startswith("|")][2:]
    assert rows == ["tiny-generative", "tiny-score-token", "hosted", "constant 3", "best constant", "random (seed 0)"]
    report = (out / "report.md").read_text()
    assert printed.strip() in report
    assert "2 verdicts reused from the cache, 4 judged now" in report
    assert "| Execution MAE easy" in printed or "| Execution MAE " in printed
    for name in ("tiny-generative", "tiny-score-token", "hosted", "constant-3", "best-constant", "random-seed-0"):
        assert (out / "plots" / f"confusion_{name}.png").stat().st_size > 5000
        predictions = (out / "predictions" / f"{name}.jsonl").read_text().splitlines()
        assert len(predictions) == 6
    assert (out / "plots" / "error_by_score.png").is_file() and (out / "plots" / "histograms.png").is_file()

    metrics = {c["name"]: c for c in json.loads((out / "metrics.json").read_text())["critics"]}
    hosted = metrics["hosted"]["groups"]["all"]
    given = [json.loads(line) for line in (setup["root"] / "hosted.jsonl").read_text().splitlines()]
    errors = [
        abs(g["score"] - t["score"]) for g, t in zip(given, setup["lines"], strict=True) if g["score"] is not None
    ]
    assert hosted["n_invalid"] == 1  # the refusal is counted, not dropped
    assert hosted["mae"] == pytest.approx(sum(errors) / 5) and hosted["penalised_mae"] == pytest.approx(
        (sum(errors) + 4) / 6
    )
    assert metrics["tiny-score-token"]["groups"]["all"]["n_invalid"] == 0
    assert metrics["best constant"]["groups"]["all"]["mae"] <= metrics["constant 3"]["groups"]["all"]["mae"]

    seen_texts.clear()
    assert main(_argv(setup, out)) == 0  # everything is cached now: no model is loaded, nothing judged
    assert seen_texts == []
    assert "6 verdicts reused from the cache, 0 judged now" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "cpu"], "critic flags (--device) need --model or --critic"),
        (["--predictions", "oops"], "--predictions takes NAME=PATH"),
        (["--predictions", "constant 3=x.jsonl"], "two rows would be named 'constant 3'"),
        (["--field", "colour=x"], "unknown field key"),
        (["--format", "table"], "--dimension"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["bench", "--bench", str(setup["bench"]), "--out", str(setup["root"] / "bad"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("firm bench: error:") and message in err and "\n" not in err


VIESCORE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "viescore"


@pytest.mark.slow
@pytest.mark.skipif(not VIESCORE.is_dir(), reason="shared/fixtures/viescore is not present")
def test_bench_on_a_human_rated_table_with_hosted_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gzip

    # GPT-4o's VIEScore semantic consistency (min of its sub-scores, 0-10) as a hosted critic's predictions file.
    with (tmp_path / "gpt4o.jsonl").open("w") as f:
        for judged in sorted(VIESCORE.glob("gpt4o_0shot_*_SC.json.gz")):
            model = judged.name.removeprefix("gpt4o_0shot_").removesuffix("_SC.json.gz")
            for uid, record in json.loads(gzip.decompress(judged.read_bytes())).items():
                f.write(json.dumps({"id": f"{uid}/{model}", "score": min(record["score"])}) + "\n")
    raters = [str(VIESCORE / f"Text-Guided_IE_rater{i}.tsv") for i in (1, 2, 3)]
    argv = ["bench", "--format", "table", "--dimension", "semantic_consistency", "--layout", "wide"]
    argv += ["--element", "0", "--field", "id=uid", "--bench", *raters, "--score-range", "0,10"]
    argv += [
        "--human-range",
        "0,1",
        "--predictions",
        f"gpt-4o={tmp_path / 'gpt4o.jsonl'}",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    header, _, gpt4o, *_ = (line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines())
    row = dict(zip([h.strip() for h in header], [c.strip() for c in gpt4o], strict=True))
    assert row["Critic"] == "gpt-4o"
    assert row["Invalid %"] == "11.1"  # Imagic has human ratings but no judge outputs: 179 of 1611 samples missing
    assert float(row["Pearson"]) > 0.5
    report = (tmp_path / "o" / "report.md").read_text()
    assert "## Correlation per generating model" in report and "| Pix2PixZero" in report

"""VIEScore's GPT-4o judge against ImagenHub's three human raters, per editing model (shared/fixtures/viescore).

The bench is read with firm's table reader (three rater files, wide layout, ``[SC, PQ]`` cells) and measured with
:func:`firm.bench.result`; the expected correlations are computed here independently, in plain Python.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from firm.bench import Bench, CriticResult, ReadOptions, evaluate, read_bench
from firm.critics.base import ScoreRange, Verdict

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "viescore"
RATERS = [FIXTURES / f"Text-Guided_IE_rater{i}.tsv" for i in (1, 2, 3)]
MODELS = ["CycleDiffusion", "DiffEdit", "InstructPix2Pix", "MagicBrush", "Pix2PixZero", "Prompt2prompt", "SDEdit"]
MODELS.append("Text2Live")  # the eight models with GPT-4o judge outputs; Imagic has human ratings only

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/viescore is not present")


def _gpt4o_sc(model: str) -> dict[str, float]:
    """VIEScore's semantic consistency per uid: the minimum of GPT-4o's sub-scores (0-10)."""
    with gzip.open(FIXTURES / f"gpt4o_0shot_{model}_SC.json.gz", "rt", encoding="utf-8") as f:
        return {uid: min(record["score"]) for uid, record in json.load(f).items()}


def _human_sc() -> dict[tuple[str, str], float]:
    """Mean of the three raters' SC (first value of each ``[SC, PQ]`` cell), read without firm's reader."""
    ratings: dict[tuple[str, str], list[float]] = {}
    for path in RATERS:
        header, *rows = path.read_text(encoding="utf-8").splitlines()
        columns = header.split("\t")
        for row in rows:
            cells = row.split("\t")
            for model, cell in zip(columns[1:], cells[1:], strict=True):
                ratings.setdefault((cells[0], model), []).append(json.loads(cell)[0])
    return {key: sum(values) / len(values) for key, values in ratings.items()}


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def _ranks(x: list[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # tied values share their average rank
        i = j + 1
    return ranks


def _kendall_tau_b(x: list[float], y: list[float]) -> float:
    concordant = discordant = tied_x = tied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / math.sqrt(
        (concordant + discordant + tied_x) * (concordant + discordant + tied_y)
    )


@pytest.fixture(scope="module")
def bench_and_result() -> tuple[Bench, CriticResult]:
    options = ReadOptions(
        fields={"id": "uid"},
        layout="wide",
        element=0,
        dimension="semantic_consistency",
        score_range=ScoreRange(0, 10),
        human_range=(0.0, 1.0),
        check_images=False,
    )
    bench = read_bench("table", RATERS, options)
    verdicts = {
        (f"{uid}/{model}", "semantic_consistency"): Verdict("semantic_consistency", int(score))
        for model in MODELS
        for uid, score in _gpt4o_sc(model).items()
    }
    return bench, evaluate(bench, "gpt-4o 0-shot", verdicts, kind="predictions")


def test_reader_gives_the_mean_of_three_raters_on_the_bench_scale(bench_and_result: tuple[Bench, CriticResult]) -> None:
    bench, _ = bench_and_result
    human = _human_sc()
    assert len(bench.samples) == 179 * 9 == len(human)
    assert not bench.skipped
    for sample in bench.samples:
        uid, model = sample.id.rsplit("/", 1)
        assert sample.model == model
        assert len(sample.raters) == 3
        assert sample.human == pytest.approx(10 * human[(uid, model)])  # 0-1 rescaled to 0-10


def test_gpt4o_correlations_per_editing_model_match_an_independent_computation(
    bench_and_result: tuple[Bench, CriticResult],
) -> None:
    _, result = bench_and_result
    human = _human_sc()
    for model in MODELS:
        judge = _gpt4o_sc(model)
        uids = sorted(judge)
        x = [float(judge[u]) for u in uids]
        y = [human[(u, model)] for u in uids]
        got = result.groups[f"model={model}"].correlations
        assert got.n == 179
        assert got.pearson == pytest.approx(_pearson(x, y), abs=1e-9)
        # torchmetrics ranks and counts pairs in float32 (and Spearman adds 1e-6 to its denominator): the rank
        # coefficients agree to 1e-6, not to float64 precision.
        assert got.spearman == pytest.approx(_pearson(_ranks(x), _ranks(y)), abs=1e-6)
        assert got.kendall == pytest.approx(_kendall_tau_b(x, y), abs=1e-6)
        print(f"{model}: pearson {got.pearson:.4f} spearman {got.spearman:.4f} kendall {got.kendall:.4f}")


def test_the_model_without_judge_outputs_is_counted_as_missing_not_dropped(
    bench_and_result: tuple[Bench, CriticResult],
) -> None:
    _, result = bench_and_result
    assert result.n_missing == 179
    assert result.groups["model=Imagic"].invalid_rate == 1.0
    assert result.groups["all"].n == 179 * 9
    assert result.groups["all"].invalid_rate == pytest.approx(1 / 9)


def test_pooled_correlation_over_the_eight_models(bench_and_result: tuple[Bench, CriticResult]) -> None:
    _, result = bench_and_result
    human = _human_sc()
    pairs = [(float(s), human[(u, m)]) for m in MODELS for u, s in _gpt4o_sc(m).items()]
    pooled = result.groups["all"].correlations
    assert pooled.n == 179 * 8
    assert pooled.pearson == pytest.approx(_pearson([p for p, _ in pairs], [h for _, h in pairs]), abs=1e-9)
    assert pooled.pearson > 0.5  # GPT-4o's SC agrees with the raters' SC, far more than with chance

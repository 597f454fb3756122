"""Running critics on a bench: chunked calls, a verdict cache that survives a kill, reference rows, evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from firm.bench import Bench, BenchSample, VerdictCache, evaluate, judge_bench
from firm.bench.runner import best_constant_verdicts, constant_verdicts, random_verdicts
from firm.critics.base import Critic, JudgeRequest, Verdict


class RedCritic(Critic):
    """Scores an image by its red channel (1 for black, 5 for full red); can be told to die after some calls."""

    def __init__(self, die_after: int | None = None) -> None:
        self.die_after = die_after
        self.calls: list[list[str]] = []

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        if self.die_after is not None and len(self.calls) == self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls.append([r.text for r in requests])
        return [Verdict(r.dimension, 1 + round(r.image.getpixel((0, 0))[0] / 255 * 4)) for r in requests]


def _bench(tmp_path: Path, n: int = 10) -> Bench:
    samples = []
    for i in range(n):
        red = round(255 * (i % 5) / 4)
        Image.new("RGB", (4, 4), (red, 0, 0)).save(tmp_path / f"{i}.png")
        Image.new("RGB", (4, 4), (0, 0, 0)).save(tmp_path / f"{i}_src.png")
        samples.append(
            BenchSample(
                id=f"s{i}",
                dimension="execution",
                human=float(1 + i % 5),
                text=f"edit {i}",
                image=tmp_path / f"{i}.png",
                source=tmp_path / f"{i}_src.png",
            )
        )
    return Bench("toy", samples)


def test_a_killed_run_resumes_from_the_cache_and_judges_only_the_rest(tmp_path: Path) -> None:
    bench = _bench(tmp_path, n=10)
    cache_path = tmp_path / "out" / "cache.jsonl"
    dying = RedCritic(die_after=2)
    with pytest.raises(KeyboardInterrupt):
        judge_bench(dying, bench.samples, VerdictCache(cache_path, "red", {}), chunk=3, progress=False)
    assert dying.calls == [["edit 0", "edit 1", "edit 2"], ["edit 3", "edit 4", "edit 5"]]

    fresh = RedCritic()
    reopened = VerdictCache(cache_path, "red", {})
    assert len(reopened) == 6
    verdicts, stats = judge_bench(fresh, bench.samples, reopened, chunk=3, progress=False)
    assert fresh.calls == [["edit 6", "edit 7", "edit 8"], ["edit 9"]]
    assert (stats.reused, stats.judged) == (6, 4)
    assert [verdicts[s.key].score for s in bench.samples] == [1, 2, 3, 4, 5] * 2


def test_a_line_cut_by_a_kill_is_judged_again(tmp_path: Path) -> None:
    bench = _bench(tmp_path, n=3)
    cache_path = tmp_path / "cache.jsonl"
    judge_bench(RedCritic(), bench.samples[:2], VerdictCache(cache_path, "red", {}), chunk=2, progress=False)
    text = cache_path.read_text()
    cache_path.write_text(text[: len(text) - 20])  # the last verdict's line is cut mid-write
    critic = RedCritic()
    judge_bench(critic, bench.samples, VerdictCache(cache_path, "red", {}), chunk=5, progress=False)
    assert critic.calls == [["edit 1", "edit 2"]]
    assert len(VerdictCache(cache_path, "red", {})) == 3  # the verdicts after the cut line are all readable
    # The cut line was removed before appending: every line whole, one verdict per sample, none twice.
    header, *lines = (json.loads(line) for line in cache_path.read_text().splitlines())
    assert header == {"critic": "red", "config": {}}
    assert sorted(line["id"] for line in lines) == ["s0", "s1", "s2"]


def test_an_unreadable_image_is_that_sample_s_invalid_verdict_and_the_run_goes_on(tmp_path: Path) -> None:
    bench = _bench(tmp_path, n=4)
    (tmp_path / "1.png").write_bytes(b"not a png at all")
    Image.new("1", (20_000, 20_000)).save(tmp_path / "2_src.png")  # a decompression bomb as a source image
    cache = VerdictCache(tmp_path / "cache.jsonl", "red", {})
    critic = RedCritic()
    verdicts, stats = judge_bench(critic, bench.samples, cache, chunk=4, progress=False)
    assert critic.calls == [["edit 0", "edit 3"]]
    assert (stats.judged, stats.unreadable) == (2, 2)
    assert verdicts[("s1", "execution")].invalid_reason.startswith("unreadable image: cannot read image")
    assert "2_src.png" in verdicts[("s2", "execution")].invalid_reason
    assert len(cache) == 2  # not cached: a fixed image is judged on the next run


def test_the_cache_refuses_verdicts_of_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    VerdictCache(path, "red", {"model": "a"})
    with pytest.raises(ValueError, match="holds verdicts of 'red'"):
        VerdictCache(path, "red", {"model": "b"})


def test_a_critic_breaking_its_contract_is_an_error(tmp_path: Path) -> None:
    class Short(RedCritic):
        def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
            return super().judge(requests)[:-1]

    bench = _bench(tmp_path, n=2)
    with pytest.raises(RuntimeError, match="returned 1 verdicts for 2"):
        judge_bench(Short(), bench.samples, VerdictCache(tmp_path / "c.jsonl", "s", {}), progress=False)


def test_reference_rows(tmp_path: Path) -> None:
    bench = Bench(
        "toy",
        [BenchSample(f"e{i}", "execution", h) for i, h in enumerate([1, 1, 2, 5, 5])]
        + [BenchSample(f"c{i}", "consistency", h) for i, h in enumerate([4, 5, 5])],
    )
    assert {v.score for v in constant_verdicts(bench, 3).values()} == {3}
    best, chosen = best_constant_verdicts(bench)
    assert chosen == {"execution": 2, "consistency": 5}
    assert best[("c0", "consistency")].score == 5
    draws = random_verdicts(bench, seed=7)
    assert draws == random_verdicts(bench, seed=7)
    assert draws != random_verdicts(bench, seed=8)
    assert all(1 <= v.score <= 5 for v in draws.values() if v.score is not None)


def test_evaluate_slices_and_counts_missing_predictions_as_invalid() -> None:
    samples = [
        BenchSample("a", "instruction", 5, difficulty="easy", model="m1", group="p1"),
        BenchSample("b", "instruction", 2, difficulty="easy", model="m2", group="p1"),
        BenchSample("c", "instruction", 1, difficulty="hard", model="m1", group="p2"),
        BenchSample("d", "instruction", 4, difficulty="hard", model="m2", group="p2"),
    ]
    bench = Bench("gen", samples)
    verdicts = {
        ("a", "instruction"): Verdict("instruction", 4),
        ("b", "instruction"): Verdict("instruction", 2),
        ("c", "instruction"): Verdict.invalid("instruction", "no score: nothing found"),
    }  # d has no prediction at all
    result = evaluate(bench, "x", verdicts)
    assert result.n_missing == 1
    assert result.invalid_reasons == {"no score": 1, "missing prediction": 1}
    easy, hard, whole = result.groups["instruction/easy"], result.groups["instruction/hard"], result.groups["all"]
    assert (easy.mae, easy.invalid_rate) == (0.5, 0.0)
    assert math.isnan(hard.mae) and hard.penalised_mae == 4.0 and hard.invalid_rate == 1.0
    assert whole.penalised_mae == pytest.approx((1 + 0 + 4 + 4) / 4)
    assert whole.pairs.n_pairs == 2  # a-b and c-d; the groups keep a from being compared with c
    assert whole.pairs.strict == 0.5  # a-b right, c-d invalid
    assert set(result.groups) >= {"model=m1", "instruction/model=m2"}
    assert result.confusion["instruction"][4, 3] == 1  # human 5 judged 4
    assert result.confusion["instruction"][:, 5].sum() == 2  # invalid column: c and d
    assert evaluate(bench, "x", verdicts, pair_by="dimension").groups["all"].pairs.n_pairs == 6


def test_cache_lines_are_verdict_dicts(tmp_path: Path) -> None:
    cache = VerdictCache(tmp_path / "c.jsonl", "red", {"k": 1})
    cache.add([(("s1", "execution"), Verdict.invalid("execution", "no score: x", raw="???"))])
    header, line = (json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines())
    assert header == {"critic": "red", "config": {"k": 1}}
    assert line["id"] == "s1" and line["valid"] is False and line["invalid_reason"] == "no score: x"
    assert VerdictCache(tmp_path / "c.jsonl", "red", {"k": 1})[("s1", "execution")].raw == "???"

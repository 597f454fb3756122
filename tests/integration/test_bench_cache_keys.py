"""``firm bench`` verdict caches are keyed by every setting that changes a verdict: a rerun into the same ``--out``
with ``--samples`` (avg@n) never reuses the greedy verdicts of an earlier run (the bug this guards against)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firm.cli import main
from firm.worlds.shapes.export import write_bench
from firm.worlds.shapes.world import ShapesWorld

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(bench: Path, model: Path, out: Path, *extra: str) -> list[str]:
    flags = ["--model", str(model), "--device", "cpu", "--max-new-tokens", "4", "--max-pixels", "4096"]
    return ["bench", "--bench", str(bench), *flags, "--out", str(out), *extra]


def test_a_samples_rerun_never_reuses_greedy_verdicts(
    tmp_path: Path, tiny_critic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = ShapesWorld(size=32, split="bench", seed=0)
    bench = write_bench(world, 2, tmp_path / "shapes", ["execution"], progress=False)
    out = tmp_path / "run"

    assert main(_run(bench, tiny_critic_dir, out)) == 0
    assert "0 verdicts reused from the cache, 2 judged now" in (out / "report.md").read_text()
    cache = out / "cache" / f"{tiny_critic_dir.name}.jsonl"
    greedy = cache.read_text()
    assert main(_run(bench, tiny_critic_dir, out)) == 0  # the same settings: everything from the cache
    assert "2 verdicts reused from the cache, 0 judged now" in (out / "report.md").read_text()
    capsys.readouterr()

    assert main(_run(bench, tiny_critic_dir, out, "--samples", "2", "--temperature", "0.7")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'samples': 2" in err and "choose another --out or critic name" in err
    assert cache.read_text() == greedy  # refused before anything was judged or written

    assert main(_run(bench, tiny_critic_dir, out, "--samples", "2", "--critic-name", "avg2")) == 0
    report = (out / "report.md").read_text()
    assert "0 verdicts reused from the cache, 2 judged now" in report
    assert (out / "cache" / "avg2.jsonl").is_file() and cache.read_text() == greedy

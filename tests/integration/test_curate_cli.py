"""``firm curate`` as users run it: the command line, its errors, and a run killed with SIGKILL then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from curation_support import write_edit_inputs
from webdataset.tariterators import tarfile_samples

from firm.cli import main
from firm.data.schema import from_wds

TESTS = Path(__file__).resolve().parents[1]
ANNOTATOR = "curation_support.PixelAnnotator"


def shard_keys(out: Path) -> list[str]:
    return [s["__key__"] for p in sorted(out.glob("curated-*.tar")) for s in tarfile_samples([{"url": str(p)}])]


def test_curate_cli_writes_shards_manifest_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pairs = write_edit_inputs(tmp_path / "in", [0, 60, 110, 160, 220])
    out = tmp_path / "out"
    code = main(["curate", "edit", "--input", str(pairs), "--output", str(out), "--annotator", ANNOTATOR,
                 "--annotator-set", "reject_always=[in0003]", "--no-progress",
                 "--target-histogram", "1,1,1,1,1"])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "curated 5 inputs" in err and "4 labelled, 1 rejected" in err and "manifest.json" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["annotator"]["reject_always"] == ["in0003"]
    assert manifest["settings"]["target_histogram"] == [1.0] * 5
    samples = [from_wds(s) for p in sorted(out.glob("curated-*.tar")) for s in tarfile_samples([{"url": str(p)}])]
    assert sorted(s.key for s in samples) == sorted(
        f"in{i:04d}-{d}" for i in (0, 1, 2, 4) for d in ("execution", "consistency")
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--annotator", "nobody"], "no annotator named 'nobody'"),
        (["--annotator", ANNOTATOR, "--annotator-set", "colour=red"], "has no setting 'colour'; it takes: "),
        (["--annotator", ANNOTATOR, "--annotator-set", "novalue"], "must look like key=value"),
        (["--annotator", ANNOTATOR, "--target-histogram", "1,2"], "five non-negative weights"),
        (["--annotator", ANNOTATOR, "--planner-set", "a=1"], "need --planner NAME"),
        (["--annotator", ANNOTATOR, "--dimensions", "quality"], "not judged on edit inputs"),
    ],
)
def test_curate_cli_mistakes_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    pairs = write_edit_inputs(tmp_path / "in", [0])
    code = main(["curate", "edit", "--input", str(pairs), "--output", str(tmp_path / "out"), "--no-progress", *extra])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("firm curate: error:") and message in err and "\n" not in err


def test_curate_cli_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["curate", "gen", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"),
                 "--annotator", ANNOTATOR])  # fmt: skip
    assert code == 2 and "input not found" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_every_input_exactly_once(tmp_path: Path) -> None:
    n = 40
    pairs = write_edit_inputs(tmp_path / "in", [(37 * i) % 256 for i in range(n)])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "firm.cli", "curate", "edit", "--input", str(pairs), "--output", str(out),
               "--annotator", ANNOTATOR, "--annotator-set", "delay_s=0.15", "--batch-size", "2", "--shard-size", "7",
               "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    labels = out / "labels.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once a few batches are in, well before the end
        if labels.is_file() and labels.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done_before = labels.read_text().count("\n")
    assert 6 <= done_before < n, "the kill must land mid-run"
    assert not list(out.glob("curated-*.tar")), "shards are written only after labelling, never half"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    keys = shard_keys(out)
    assert len(keys) == len(set(keys)) == 2 * n
    assert sorted({k.rsplit("-", 1)[0] for k in keys}) == [f"in{i:04d}" for i in range(n)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["this_run"]["skipped"] >= done_before - 1  # a torn last line is labelled again
    assert manifest["counts"]["inputs"] == n
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]

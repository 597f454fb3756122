"""ShapesWorld shards are written aside and renamed when complete: a killed or failed write never leaves a truncated
``.tar`` under its final name, and the next run clears what a killed one left aside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset as wds

from firm.worlds.shapes.export import write_shards
from firm.worlds.shapes.world import ShapesWorld


class FailingWorld(ShapesWorld):
    """Fails while rendering its ``fail_at``-th sample, as a full disk or a bug would."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(size=32, split="train", seed=0)
        self.fail_at = fail_at
        self.made = 0

    def sample(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.made += 1
        if self.made == self.fail_at:
            raise OSError("no space left on device")
        return super().sample(*args, **kwargs)  # type: ignore[arg-type]


def test_a_failed_shard_leaves_nothing_under_its_name_and_completed_shards_stay(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="no space left"):
        write_shards(FailingWorld(fail_at=7), "execution", 10, tmp_path, shard_size=5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes-train-execution-000000.tar"]
    assert sum(1 for _ in wds.WebDataset(str(tmp_path / "shapes-train-execution-000000.tar"), shardshuffle=False)) == 5


def test_a_sigkilled_world_shards_run_leaves_no_final_shard_and_a_rerun_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "firm.cli", "world", "shards", "--dimension", "execution", "--size", "32"]
    command += ["--shard-size", "5000", "--out", str(out), "--no-progress"]
    child = subprocess.Popen([*command, "-n", "5000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while sum(p.stat().st_size for p in out.glob(".*.partial")) < 4096:
            assert child.poll() is None, f"the writer ended before it could be killed: {child.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the writer never started its shard"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()  # type: ignore[union-attr]
    assert not list(out.glob("*.tar")), "a killed run left a shard under its final name"
    assert len(list(out.glob(".*.partial"))) == 1

    done = subprocess.run([*command, "-n", "4"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["shapes-train-execution-000000.tar"]

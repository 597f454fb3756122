"""``firm fit`` with the critic recipes, end to end: every recipe parses; the debug recipe trains, validates and
exports a critic that ``firm score`` loads; a run killed with SIGKILL mid-epoch continues with ``--ckpt_path last``
and ends exactly where an uninterrupted run ends.

Each run is a fresh ``python -m firm.fit`` process (about 30-60 s on two CPU cores, the debug recipe's budget).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from fit_support import fit_env, metrics, workdir
from safetensors.torch import load_file
from vllm_support import vllm_missing, vllm_server

from firm.fit import FirmCLI

REPO = Path(__file__).resolve().parents[2]
RECIPE = "recipes/debug/critic_sft_tiny.yaml"
RUN = Path("runs/critic_sft_tiny")
STEPS = 40  # 160 ShapesWorld samples / batch 4, one epoch


class _ParseOnly(FirmCLI):
    """Parses and type-checks a recipe without building anything (8B recipes would fetch processors)."""

    def instantiate_classes(self) -> None:
        return None


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").rglob("*.yaml")))
def test_every_recipe_parses(recipe: str) -> None:
    cli = _ParseOnly(args=["--config", str(REPO / recipe)], run=False)
    assert cli.config["model"]["class_path"].startswith("firm.tasks.")
    # The datamodule is one of firm's, by a path that imports (not a moved module's old name).
    data_path = cli.config["data"]["class_path"]
    assert data_path.startswith(("firm.data.", "firm.worlds."))
    module, _, name = data_path.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), name), pl.LightningDataModule)


def _fit(cwd: Path, env: Mapping[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firm.fit", "fit", "-c", RECIPE, *extra],
        cwd=cwd,
        env=fit_env(env),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory, deepspeed_env: Mapping[str, str]) -> Path:
    """The debug recipe run once, uninterrupted, in a fresh working folder."""
    cwd = workdir(tmp_path_factory.mktemp("fresh"))
    done = _fit(cwd, deepspeed_env)
    assert done.returncode == 0, done.stderr[-4000:]
    return cwd


def test_debug_recipe_trains_validates_and_exports_for_firm_score(
    debug_run: Path, short_templates: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = metrics(debug_run / RUN / "logs" / "version_0")
    losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert losses[-1] < losses[0] - 1.0
    final = next(r for r in rows if r["val/loss"])
    assert float(final["val/judged"]) == 16 and 0.0 <= float(final["val/invalid_rate"]) <= 1.0
    assert torch.load(debug_run / RUN / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == STEPS

    from firm.cli import main as firm
    from firm.worlds.shapes.world import ShapesWorld

    sample = ShapesWorld(size=64, split="test").sample("execution", 0)
    sample.source.save(debug_run / "src.png")
    sample.image.save(debug_run / "out.png")
    template = short_templates["execution"]
    code = firm(
        [
            "score", "--model", str(debug_run / RUN / "hf"), "--device", "cpu", "--max-new-tokens", "48",
            "--source", str(debug_run / "src.png"), "--image", str(debug_run / "out.png"),
            "--instruction", sample.text, "--dimensions", "execution", "--reward", "none",
            "--template", f"execution={template}",
        ]
    )  # fmt: skip
    assert code == 0
    verdict = json.loads(capsys.readouterr().out)["verdicts"]["execution"]
    assert verdict["dimension"] == "execution"
    # Forty steps teach the opening of the answer format (an untrained critic writes random bytes), not yet a score.
    assert verdict["raw"].startswith('{"re')


def test_firm_test_scores_the_last_checkpoint_on_the_held_out_split(
    debug_run: Path, deepspeed_env: Mapping[str, str]
) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "firm.fit", "test", "-c", RECIPE, "--ckpt_path", "last",
            "--data.init_args.test_samples", "8", "--model.init_args.evaluation.max_new_tokens", "16",
        ],
        cwd=debug_run, env=fit_env(deepspeed_env), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "last.ckpt" in done.stderr + done.stdout  # Lightning names the checkpoint it restored
    logs = sorted((debug_run / RUN / "logs").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    (row,) = [r for r in metrics(logs[-1]) if r.get("test/judged")]
    assert float(row["test/judged"]) == 8
    assert float(row["test/loss"]) > 0 and 0.0 <= float(row["test/invalid_rate"]) <= 1.0
    assert (debug_run / "runs" / "data" / "shapesworld" / "size64-seed0" / "test-execution-n8").is_dir()


def test_sigkill_mid_epoch_then_ckpt_path_last_finishes_like_an_uninterrupted_run(
    debug_run: Path, tmp_path: Path, deepspeed_env: Mapping[str, str]
) -> None:
    cwd = workdir(tmp_path / "killed")
    (cwd / "runs").mkdir()
    (cwd / "runs" / "data").symlink_to(debug_run / "runs" / "data")  # the same ShapesWorld shards, already written
    last = cwd / RUN / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-m", "firm.fit", "fit", "-c", RECIPE],
        cwd=cwd,
        env=fit_env(deepspeed_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=False)["global_step"]
    assert 0 < killed_at < STEPS

    done = _fit(cwd, deepspeed_env, "--ckpt_path", "last")
    assert done.returncode == 0, done.stderr[-4000:]
    final = torch.load(last, weights_only=False)
    assert final["global_step"] == STEPS
    optimizer_steps = final["loops"]["fit_loop"]["epoch_loop.automatic_optimization.optim_progress"]
    assert optimizer_steps["optimizer"]["step"]["total"]["completed"] == STEPS
    resumed_rows = metrics(cwd / RUN / "logs" / "version_1")
    assert min(int(r["step"]) for r in resumed_rows if r["train/loss"]) >= killed_at  # continued, not restarted
    # Same data, same order, same optimizer and schedule state: the same weights as the uninterrupted run.
    resumed = load_file(cwd / RUN / "hf" / "model.safetensors")
    uninterrupted = load_file(debug_run / RUN / "hf" / "model.safetensors")
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)


@pytest.mark.vllm
@pytest.mark.skipif(vllm_missing() is not None, reason=str(vllm_missing()))
def test_vllm_serves_the_export_with_the_answers_transformers_gives(
    debug_run: Path, short_templates: dict[str, str], tmp_path: Path
) -> None:
    from firm.critics.base import JudgeRequest
    from firm.critics.openai import OpenAICompatibleCritic
    from firm.critics.transformers import GenerativeJudge
    from firm.worlds.shapes.world import ShapesWorld

    export = debug_run / RUN / "hf"
    templates = {"execution": short_templates["execution"]}
    samples = [ShapesWorld(size=64, split="test").sample("execution", i) for i in range(3)]
    requests = [JudgeRequest("execution", s.text, s.image, s.source) for s in samples]
    local = GenerativeJudge(str(export), templates=templates, max_new_tokens=48, batch_size=1, device="cpu")
    with vllm_server(export, log_path=tmp_path / "vllm.log") as server:
        served = OpenAICompatibleCritic(
            server.base_url, server.model, api_key_env=None, templates=templates, max_tokens=48
        ).judge(requests)
    # Same greedy answers; an answer cut inside a multi-byte character differs only in how that tail is decoded.
    assert [v.raw.rstrip("\ufffd") for v in served] == [v.raw.rstrip("\ufffd") for v in local.judge(requests)]

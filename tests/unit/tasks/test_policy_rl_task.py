"""PolicyRLTask on a tiny real SD3 pipeline: a step of each algorithm runs, logs, draws grids, checkpoints only the
adapters and exports them; invalid rewards never enter the advantages."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from firm.data import RLPromptDataModule
from firm.policies import RolloutSettings, SD3Generator, TinySD3
from firm.rewards import MeanColour
from firm.tasks.policy_rl import NFT, FlowGRPO, PolicyRLTask
from firm.training.export import export_checkpoint, read_checkpoint

ROLLOUT = RolloutSettings(height=32, width=32, num_steps=3)


def _prompts(folder: Path) -> Path:
    path = folder / "prompts.jsonl"
    lines = ["a red circle", "two blue squares", "a green star", "a big red disc"]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in lines))
    return path


def _task(algorithm: NFT | FlowGRPO) -> PolicyRLTask:
    return PolicyRLTask(
        SD3Generator(tiny=TinySD3()), MeanColour(), algorithm, ROLLOUT, group_size=2, grid_every=1, train_batch_size=3
    )


def _fit(task: PolicyRLTask, root: Path, prompts: Path, steps: int) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=steps, val_check_interval=steps, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, log_every_n_steps=1, enable_progress_bar=False, default_root_dir=root,
        logger=pl.loggers.CSVLogger(root, name="logs"),
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", save_last=True)],
    )  # fmt: skip
    data = RLPromptDataModule(train=str(prompts), eval=str(prompts), eval_prompts=2, prompts_per_step=2)
    trainer.fit(task, data)
    return trainer


@pytest.mark.parametrize("algorithm", [NFT(), FlowGRPO()], ids=["nft", "grpo"])
def test_a_step_runs_logs_and_checkpoints_only_the_adapters(tmp_path: Path, algorithm: NFT | FlowGRPO) -> None:
    task = _task(algorithm)
    before = [p.detach().clone() for p in task.policy.adapter_parameters()]
    trainer = _fit(task, tmp_path, _prompts(tmp_path), steps=2)
    assert trainer.global_step == 2
    assert any((a - p).abs().max() > 0 for a, p in zip(before, task.policy.adapter_parameters(), strict=True))

    logs = Path(trainer.log_dir or "")
    rows = list(csv.DictReader((logs / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v}
    expected = {"train/reward", "train/reward_MeanColour", "train/invalid_rate", "train/zero_spread_fraction",
                "train/loss", "time/rollout", "time/score", "time/train", "eval/reward"}  # fmt: skip
    nft = {"train/optimality", "train/kl"}
    expected |= nft if isinstance(algorithm, NFT) else {"train/ratio", "train/clip_fraction"}
    assert expected <= logged, expected - logged
    assert (logs / "reward_curve.png").is_file()
    grids = {p.name for p in (logs / "grids").iterdir()}
    assert {"eval_step000000.png", "eval_step000002.png", "train_step000000.png", "train_step000001.png"} <= grids
    steps = [json.loads(line) for line in (logs / "rollouts" / "rank0.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1] and all(len(s["rewards"]) == 4 for s in steps)

    state, rest = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert state and all(".lora_" in key for key in state)
    assert any(".trained." in key for key in state) and any(".old." in key for key in state)
    assert rest["RLPromptDataModule"]["position"] == 2  # the data position a resumed run continues from
    out = export_checkpoint(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "lora", adapter=True)
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    # Merged: the tiny base rebuilt from the checkpoint's record, the adapter fused in; it samples as the policy does.
    merged = export_checkpoint(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "merged")
    settings = RolloutSettings(height=32, width=32, num_steps=3, sampler="euler")
    expected = task.policy.sample(["a red circle"], settings, seeds=[4]).images
    got = SD3Generator(model=str(merged)).sample(["a red circle"], settings, seeds=[4]).images
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_invalid_rewards_get_weight_zero_and_leave_the_others_unchanged() -> None:
    task = _task(NFT())
    keys = torch.tensor([7, 7, 7, 9, 9, 9])
    clean = torch.tensor([0.1, 0.5, 0.9, 0.2, 0.4, 0.6])
    _, weights, stats = task._advantages(clean, keys)
    with_nan = clean.clone()
    with_nan[[0, 4]] = math.nan
    masked, masked_weights, masked_stats = task._advantages(with_nan, keys)
    assert weights.tolist() == [1.0] * 6
    assert masked_weights.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert masked[0] == 0 and masked[4] == 0
    # Each group's statistics are those of its valid rewards only: [0.5, 0.9] and [0.2, 0.6].
    torch.testing.assert_close(masked[[1, 2, 3, 5]], torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-3, rtol=0)
    assert masked_stats["invalid_rate"] == pytest.approx(2 / 6) and stats["invalid_rate"] == 0


def test_settings_that_cannot_work_are_refused() -> None:
    policy = SD3Generator(tiny=TinySD3())
    with pytest.raises(ValueError, match="group_size"):
        PolicyRLTask(policy, MeanColour(), group_size=1)
    with pytest.raises(ValueError, match="callable"):
        PolicyRLTask(policy, "qma")
    with pytest.raises(ValueError, match="timestep_fraction"):
        NFT(timestep_fraction=0.0)
    assert FlowGRPO().rollout_settings(ROLLOUT).sampler == "sde"

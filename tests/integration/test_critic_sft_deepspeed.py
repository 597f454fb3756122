"""Critic SFT under DeepSpeed ZeRO on CPU processes: train, checkpoint, resume, convert to a Hugging Face folder.

``test_zero3_two_processes_*`` launches ``python -m firm.fit`` with two ranks (Lightning re-launches the command for
rank 1), so it costs two interpreter starts per run; it is marked slow. The single-process ZeRO-2 test runs in the
default suite.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from critic_sft_support import DISTRIBUTED_ENV
from lightning.pytorch.callbacks import ModelCheckpoint

from firm.cli import main as firm
from firm.critics.hf import load_vlm
from firm.data.critic_sft import CriticSFTDataModule
from firm.tasks import CriticSFTTask, EvalSettings, OptimizerSettings, TinyVLM
from firm.testing import critic_sample, write_shards
from firm.testing.deepspeed import CPUDeepSpeedStrategy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TESTS = Path(__file__).resolve().parents[1]
MIXED = ("execution", "consistency", "instruction")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, deepspeed_env: Mapping[str, str]) -> Iterator[None]:
    # DeepSpeed compiles a small C++ op on first start; cache it where `make` does.
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", deepspeed_env["TORCH_EXTENSIONS_DIR"])
    # An in-process run sets the rank variables in os.environ; have them removed again after the test.
    for name in DISTRIBUTED_ENV:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    yield
    # The one-rank gloo group an in-process run creates stays: DeepSpeed caches it, and destroying it would break
    # the next in-process DeepSpeed run.


def _shards(root: Path, n_train: int) -> tuple[str, str]:
    train, _ = write_shards(root, [critic_sample(i, MIXED[i % 3]) for i in range(n_train)], per_shard=8)
    val, _ = write_shards(root, [critic_sample(100 + i, MIXED[i % 3]) for i in range(6)], per_shard=6, prefix="val")
    return train, val


def _val_logits(model: Any, data: CriticSFTDataModule) -> torch.Tensor:
    batch = next(iter(data.val_dataloader()))
    model.eval()
    with torch.no_grad():
        return model(**batch["inputs"]).logits


def test_zero2_trains_resumes_and_converts_in_one_process(tmp_path: Path, short_templates: dict[str, str]) -> None:
    train, val = _shards(tmp_path, 16)

    def data() -> CriticSFTDataModule:
        return CriticSFTDataModule(train, val, batch_size=2, val_batch_size=6, num_workers=0, templates=short_templates)

    def fit(ckpt_path: Path | None = None) -> CriticSFTTask:
        task = CriticSFTTask(TinyVLM(), optimizer=OptimizerSettings(lr=3e-3), evaluation=EvalSettings(generate=False))
        checkpoints = ModelCheckpoint(
            dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=4, save_top_k=-1
        )
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            strategy=CPUDeepSpeedStrategy(stage=2),
            max_epochs=1,
            logger=False,
            callbacks=[checkpoints],
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(task, data(), ckpt_path=ckpt_path)
        assert trainer.global_step == 8
        return task

    whole = fit()
    assert (tmp_path / "ckpt" / "step=4.ckpt").is_dir()  # DeepSpeed writes a folder per checkpoint
    resumed = fit(tmp_path / "ckpt" / "step=4.ckpt")
    probe = data()
    probe.use_processor(whole.processor)
    expected = _val_logits(whole.model, probe)
    torch.testing.assert_close(_val_logits(resumed.model, probe), expected)
    assert firm(["export", str(tmp_path / "ckpt" / "step=8.ckpt"), str(tmp_path / "hf"), "--trust-checkpoint"]) == 0
    converted, _ = load_vlm(tmp_path / "hf", device="cpu")
    torch.testing.assert_close(_val_logits(converted, probe), expected)


@pytest.mark.slow
def test_zero2_optimizer_offload_trains_like_plain_adamw(tmp_path: Path, short_templates: dict[str, str]) -> None:
    # DeepSpeed's CPU Adam is compiled on first use (about two minutes on two cores, then cached).
    train, val = _shards(tmp_path, 16)
    weights = []
    for strategy in ("auto", CPUDeepSpeedStrategy(stage=2, offload_optimizer=True)):
        task = CriticSFTTask(
            TinyVLM(),
            optimizer=OptimizerSettings(lr=1e-3, weight_decay=0.01),
            evaluation=EvalSettings(generate=False),
        )
        data = CriticSFTDataModule(train, val, batch_size=2, num_workers=0, templates=short_templates)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, strategy=strategy, max_epochs=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        )  # fmt: skip
        trainer.fit(task, data)
        weights.append({k: v.detach().clone() for k, v in task.model.state_dict().items()})
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-4, atol=1e-6, msg=name)


def _zero3_config(
    tmp_path: Path, train: str, val: str, run: str, templates: dict[str, str], lora: dict[str, Any] | None = None
) -> Path:
    config = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu",
            "devices": 2,
            "strategy": {"class_path": "firm.testing.deepspeed.CPUDeepSpeedStrategy", "init_args": {"stage": 3}},
            "max_epochs": 1,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / run), "name": "logs"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(tmp_path / run / "ckpt"),
                        "filename": "{step}",
                        "every_n_train_steps": 2,
                        "save_top_k": -1,
                        "save_last": True,
                    },
                },
                {"class_path": "critic_sft_support.DumpLogits", "init_args": {"path": str(tmp_path / f"{run}.pt")}},
                {
                    "class_path": "firm.training.callbacks.HFExport",
                    "init_args": {"dirpath": str(tmp_path / run / "hf")},
                },
            ],
        },
        "model": {
            "class_path": "firm.tasks.CriticSFTTask",
            "init_args": {
                "critic": {"class_path": "firm.tasks.TinyVLM"},
                "optimizer": {"lr": 3e-3},
                "evaluation": {"max_new_tokens": 8},
                **({"lora": lora} if lora else {}),
            },
        },
        "data": {
            "class_path": "firm.data.critic_sft.CriticSFTDataModule",
            "init_args": {
                "train": train,
                "val": val,
                "batch_size": 2,
                "val_batch_size": 2,
                "num_workers": 1,
                "templates": templates,
            },
        },
    }
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _firm_fit(config: Path, env: Mapping[str, str], *extra: str) -> None:
    # tests/ on the path: the config names critic_sft_support.DumpLogits.
    env = {**env, "PYTHONPATH": f"{TESTS}:{env.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "firm.fit", "fit", "--config", str(config), *extra],
        env=env,
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
def test_zero3_two_processes_validate_resume_and_convert(
    tmp_path: Path, short_templates: dict[str, str], deepspeed_env: Mapping[str, str]
) -> None:
    train, val = _shards(tmp_path, 32)  # 8 steps of 2 ranks x 2 samples
    _firm_fit(_zero3_config(tmp_path, train, val, "whole", short_templates), deepspeed_env)
    whole = torch.load(tmp_path / "whole.pt")
    assert whole["step"] == 8
    # Both ranks generated verdicts for their half of the six validation samples, whose dimensions differ per rank.
    with (tmp_path / "whole" / "logs" / "version_0" / "metrics.csv").open() as f:
        validation = [row for row in csv.DictReader(f) if row["val/judged"]]
    assert [float(row["val/judged"]) for row in validation] == [6.0]
    assert (tmp_path / "whole" / "ckpt" / "step=4.ckpt").is_dir()

    # Continue the mid-epoch checkpoint with two ranks: the same final model as the uninterrupted run.
    _firm_fit(
        _zero3_config(tmp_path, train, val, "resumed", short_templates),
        deepspeed_env,
        "--ckpt_path",
        str(tmp_path / "whole" / "ckpt" / "step=4.ckpt"),
    )
    resumed = torch.load(tmp_path / "resumed.pt")
    assert resumed["step"] == 8
    torch.testing.assert_close(resumed["logits"], whole["logits"])

    # The ZeRO-3 partitions, converted to a Hugging Face folder from the checkpoint (firm export) or gathered at the
    # end of fit (HFExport), give the pre-conversion model's outputs.
    assert (
        firm(["export", str(tmp_path / "whole" / "ckpt" / "last.ckpt"), str(tmp_path / "hf"), "--trust-checkpoint"])
        == 0
    )
    for folder in (tmp_path / "hf", tmp_path / "whole" / "hf"):
        converted, _ = load_vlm(folder, device="cpu")
        with torch.no_grad():
            torch.testing.assert_close(converted(**whole["inputs"]).logits, whole["logits"])


@pytest.mark.slow
def test_zero3_two_processes_train_lora_adapters_and_convert_merged(
    tmp_path: Path, short_templates: dict[str, str], deepspeed_env: Mapping[str, str]
) -> None:
    train, val = _shards(tmp_path, 16)  # 4 steps of 2 ranks x 2 samples
    _firm_fit(_zero3_config(tmp_path, train, val, "lora", short_templates, lora={"r": 4, "alpha": 8}), deepspeed_env)
    trained = torch.load(tmp_path / "lora.pt")
    assert trained["step"] == 4
    untrained = TinyVLM().build_model().eval()
    with torch.no_grad():
        before = untrained(**trained["inputs"]).logits
    # The adapters trained (LoRA's B starts at zero, so an untrained adapter would leave the outputs unchanged).
    assert (trained["logits"] - before).abs().max() > 1e-3

    # The ZeRO-3 partitions of base weights and adapters, merged into one Hugging Face folder from the checkpoint
    # (firm export) or at the end of fit (HFExport), give the trained model's outputs.
    assert (
        firm(["export", str(tmp_path / "lora" / "ckpt" / "last.ckpt"), str(tmp_path / "hf"), "--trust-checkpoint"]) == 0
    )
    for folder in (tmp_path / "hf", tmp_path / "lora" / "hf"):
        converted, _ = load_vlm(folder, device="cpu")
        assert not any("lora" in name for name in converted.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(converted(**trained["inputs"]).logits, trained["logits"])

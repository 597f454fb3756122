"""CriticSFTTask on the tiny critic, in process: learning, schedule, exact resume, validation quality, LoRA, export."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from firm.critics.base import Verdict
from firm.critics.hf import load_vlm
from firm.data.critic_sft import CriticSFTDataModule
from firm.errors import InputError
from firm.tasks import CriticSFTTask, EvalSettings, LoraSettings, OptimizerSettings, PretrainedVLM, TinyVLM
from firm.tasks.critic_sft import verdict_totals
from firm.testing import critic_sample, save_tiny_critic, write_shards
from firm.training.callbacks import HFExport
from firm.training.export import export_checkpoint
from firm.training.schedule import warmup_cosine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PEAK_LR = 3e-3


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """24 training samples in 3 shards, 6 validation samples: execution judgements."""
    root = tmp_path_factory.mktemp("shards")
    train, _ = write_shards(root, [critic_sample(i) for i in range(24)], per_shard=8)
    val, _ = write_shards(root, [critic_sample(100 + i) for i in range(6)], per_shard=6, prefix="val")
    return train, val


def _data(shards: tuple[str, str], templates: dict[str, str], workers: int = 0, **kwargs: Any) -> CriticSFTDataModule:
    return CriticSFTDataModule(
        train=shards[0],
        val=shards[1],
        batch_size=4,
        val_batch_size=6,
        num_workers=workers,
        shuffle_buffer=8,
        templates=templates,
        **kwargs,
    )


def _task(critic: Any = None, **kwargs: Any) -> CriticSFTTask:
    kwargs.setdefault("optimizer", OptimizerSettings(lr=PEAK_LR, warmup_ratio=0.25))
    kwargs.setdefault("evaluation", EvalSettings(generate=False))
    return CriticSFTTask(critic or TinyVLM(), **kwargs)


def _trainer(**kwargs: Any) -> pl.Trainer:
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
    }
    settings.update(kwargs)
    return pl.Trainer(**settings)


class _Record(pl.Callback):
    """Learning rate and loss of every optimizer step."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, *args: Any) -> None:
        self.losses.append(float(outputs["loss"]))


def _logits(model: Any, data: CriticSFTDataModule) -> torch.Tensor:
    batch = next(iter(data.val_dataloader()))
    model.eval()
    with torch.no_grad():
        return model(**batch["inputs"]).logits


# -- settings and pure parts ------------------------------------------------------------------------------------------


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="optimizer.lr"):
        OptimizerSettings(lr=0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        OptimizerSettings(warmup_ratio=1.0)
    with pytest.raises(ValueError, match="lora.r"):
        LoraSettings(r=0)
    with pytest.raises(ValueError, match="freeze_vision"):
        CriticSFTTask(TinyVLM(), lora=LoraSettings(), freeze_vision=True)


def test_a_sized_tiny_critic_is_read_back_from_a_checkpoint_with_weights_only(tmp_path: Path) -> None:
    # Checkpoints keep the task's hyperparameters (the critic source among them) and resuming reads them with
    # torch.load(weights_only=True): every value a TinyVLM holds must pass that loader.
    critic = TinyVLM(hidden_size=96, layers=3, vision_hidden_size=48, patch_size=8)
    torch.save({"critic": critic}, tmp_path / "hparams.pt")
    loaded = torch.load(tmp_path / "hparams.pt", weights_only=True)["critic"]
    assert loaded.size == critic.size
    with pytest.raises(ValueError, match="multiple of 32"):
        TinyVLM(hidden_size=100)


def test_verdict_totals_count_invalid_verdicts_without_scoring_them() -> None:
    verdicts = [Verdict("execution", 3), Verdict.invalid("execution", "no score"), Verdict("execution", 5)]
    assert verdict_totals(verdicts, [4, 2, 1], [True, True, True]) == (3, 2, 5)
    assert verdict_totals(verdicts, [4, 2, 1], [True, True, False]) == (2, 1, 1)


# -- training ---------------------------------------------------------------------------------------------------------


def test_training_lowers_the_loss_with_warmup_then_cosine(
    shards: tuple[str, str], short_templates: dict[str, str]
) -> None:
    record = _Record()
    trainer = _trainer(max_epochs=2, callbacks=[record])
    trainer.fit(_task(), _data(shards, short_templates))
    assert trainer.global_step == 12  # 24 samples / batch 4, two epochs
    expected = [PEAK_LR * warmup_cosine(s, total_steps=12, warmup=3) for s in range(12)]
    assert record.lrs == pytest.approx(expected)
    assert sum(record.losses[-3:]) < sum(record.losses[:3]) - 1.0


def test_resuming_a_mid_epoch_checkpoint_reproduces_the_uninterrupted_run(
    shards: tuple[str, str], short_templates: dict[str, str], tmp_path: Path
) -> None:
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2, save_top_k=-1)
    whole = _task()
    trainer = _trainer(max_epochs=2, callbacks=[checkpoints], enable_checkpointing=True)
    trainer.fit(whole, _data(shards, short_templates, workers=2))

    resumed = _task()
    trainer = _trainer(max_epochs=2, callbacks=[_Record()])
    data = _data(shards, short_templates, workers=2)
    trainer.fit(resumed, data, ckpt_path=tmp_path / "step=4.ckpt")  # mid first epoch
    assert trainer.global_step == 12
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 12
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_validation_generates_verdicts_and_logs_critic_quality(
    shards: tuple[str, str], short_templates: dict[str, str]
) -> None:
    task = _task(evaluation=EvalSettings(max_new_tokens=4))
    trainer = _trainer(limit_val_batches=None)
    trainer.fit(task, _data(shards, short_templates))
    metrics = trainer.callback_metrics
    assert metrics["val/judged"] == 6
    # Four new tokens cannot finish an answer: every verdict is invalid, and none gets a made-up score.
    assert metrics["val/invalid_rate"] == 1.0
    assert torch.isnan(metrics["val/mae"])
    assert metrics["val/loss"] > 0
    assert metrics["data/val_skipped_corrupt_image"] == 0


def test_firm_test_evaluates_the_test_shards_like_validation(
    shards: tuple[str, str], short_templates: dict[str, str]
) -> None:
    # The test shards are the validation shards here, so the test loop must report exactly what validation does.
    task = _task(evaluation=EvalSettings(max_new_tokens=24))
    data = _data(shards, short_templates, test=shards[1])
    trainer = _trainer(limit_val_batches=None, limit_test_batches=None)
    validated = trainer.validate(task, data, verbose=False)[0]
    tested = trainer.test(task, data, verbose=False)[0]
    assert tested["test/judged"] == validated["val/judged"] == 6
    for name in ("loss", "invalid_rate"):
        assert tested[f"test/{name}"] == pytest.approx(validated[f"val/{name}"]), name
    assert tested["data/test_skipped_corrupt_image"] == 0


def test_firm_test_without_test_shards_says_what_to_set(
    shards: tuple[str, str], short_templates: dict[str, str]
) -> None:
    with pytest.raises(InputError, match=r"no test data: give test shards, e.g. --data.init_args.test"):
        _trainer().test(_task(), _data(shards, short_templates), verbose=False)


def test_firm_predict_points_to_exporting_and_scoring(shards: tuple[str, str], short_templates: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="export the trained critic"):
        _trainer().predict(_task(), _data(shards, short_templates))


def test_gradient_checkpointing_changes_memory_not_results_and_frozen_vision_stays(
    shards: tuple[str, str], short_templates: dict[str, str]
) -> None:
    tasks = {
        "plain": _task(),
        "checkpointing": _task(gradient_checkpointing=True),
        "frozen": _task(freeze_vision=True),
    }
    for task in tasks.values():
        _trainer(max_steps=3).fit(task, _data(shards, short_templates))
    plain, checkpointed = tasks["plain"].model.state_dict(), tasks["checkpointing"].model.state_dict()
    for name, value in plain.items():
        torch.testing.assert_close(checkpointed[name], value, msg=name)
    start = TinyVLM().build_model().state_dict()
    frozen = tasks["frozen"].model.state_dict()
    assert all(torch.equal(frozen[n], v) for n, v in start.items() if ".visual." in n or n.startswith("visual."))
    assert not torch.equal(
        frozen["model.language_model.layers.0.mlp.up_proj.weight"],
        start["model.language_model.layers.0.mlp.up_proj.weight"],
    )


def test_critic_learns_to_score_from_the_image(tmp_path: Path, short_templates: dict[str, str]) -> None:
    # The score is the colour of the edited image (red 1 ... blue 5) and the instruction is the same for every
    # sample: only a critic that reads the image can beat the constant baseline (MAE 1.2 on uniform scores).
    def sample(i: int) -> Any:
        return dataclasses.replace(critic_sample(i), text="paint the square")

    train, _ = write_shards(tmp_path, [sample(i) for i in range(200)], per_shard=100)
    val, _ = write_shards(tmp_path, [sample(1000 + i) for i in range(20)], per_shard=20, prefix="val")
    task = _task(evaluation=EvalSettings(max_new_tokens=64))
    data = CriticSFTDataModule(train, val, batch_size=8, val_batch_size=20, num_workers=0, templates=short_templates)
    untrained = _trainer(limit_val_batches=None)
    untrained.validate(task, data, verbose=False)
    assert untrained.callback_metrics["val/invalid_rate"] == 1.0  # random weights write no readable score
    trainer = _trainer(max_epochs=4, check_val_every_n_epoch=4, limit_val_batches=None)
    trainer.fit(task, data)
    assert trainer.callback_metrics["val/invalid_rate"] <= 0.1
    assert trainer.callback_metrics["val/mae"] < 0.6


# -- export -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_exported_folder_loads_and_matches_the_trained_model(
    shards: tuple[str, str], short_templates: dict[str, str], tmp_path: Path, family: str
) -> None:
    task = _task(TinyVLM(family))
    data = _data(shards, short_templates)
    trainer = _trainer(
        callbacks=[HFExport(tmp_path / "hf"), ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        enable_checkpointing=True,
    )
    trainer.fit(task, data)
    live = _logits(task.model, data)
    model, processor = load_vlm(tmp_path / "hf", device="cpu")
    torch.testing.assert_close(_logits(model, data), live)
    assert processor.image_processor.size["longest_edge"] == 64 * 64
    export_checkpoint(tmp_path / "ckpt" / "last.ckpt", tmp_path / "from_ckpt")
    model, _ = load_vlm(tmp_path / "from_ckpt", device="cpu")
    torch.testing.assert_close(_logits(model, data), live)


def test_lora_trains_adapters_only_and_exports_merged_or_as_adapter(
    shards: tuple[str, str], short_templates: dict[str, str], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = save_tiny_critic(tmp_path / "base")
    task = _task(PretrainedVLM(str(base)), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    data = _data(shards, short_templates)
    trainer = _trainer(callbacks=[HFExport(tmp_path / "merged"), HFExport(tmp_path / "adapter", adapter=True)])
    trainer.fit(task, data)
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and "visual" not in n for n in trainable)
    live = _logits(task.model, data)
    merged, _ = load_vlm(tmp_path / "merged", device="cpu")
    torch.testing.assert_close(_logits(merged, data), live, rtol=1e-4, atol=1e-5)
    adapted = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), tmp_path / "adapter")
    torch.testing.assert_close(_logits(adapted, data), live, rtol=1e-4, atol=1e-5)
    untouched, _ = load_vlm(base, device="cpu")
    assert not torch.allclose(_logits(untouched, data), live)

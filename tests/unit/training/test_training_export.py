"""Export refuses what it cannot write, naming the problem."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from firm.commands import UsageError
from firm.commands import export as export_command
from firm.tasks import CriticSFTTask, LoraSettings, TinyVLM
from firm.tasks.critic_sft.export import write_critic_folder
from firm.training.export import export_checkpoint


def test_adapter_export_needs_lora(tmp_path: Path) -> None:
    task = CriticSFTTask(TinyVLM())
    with pytest.raises(ValueError, match="fully fine-tuned"):
        write_critic_folder({}, task, {}, tmp_path, adapter=True)


def test_adapter_export_needs_a_base_on_disk(tmp_path: Path) -> None:
    task = CriticSFTTask(TinyVLM(), lora=LoraSettings(r=2))
    task.configure_model()
    state = {f"model.{k}": v for k, v in task.model.state_dict().items()}
    with pytest.raises(ValueError, match="export it merged"):
        write_critic_folder(state, task, task.export_meta(), tmp_path / "out", adapter=True)


def test_checkpoint_without_critic_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, path)
    with pytest.raises(ValueError, match="not written by a firm task that exports a model"):
        export_checkpoint(path, tmp_path / "out")


def test_firm_export_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    args = argparse.Namespace(checkpoint=tmp_path / "missing.ckpt", output=tmp_path / "out", adapter=False, dtype=None)
    with pytest.raises(UsageError, match="checkpoint not found"):
        export_command.run(args)

"""Export refuses what it cannot write, naming the problem."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from firm.cli import main as firm_main
from firm.commands import UsageError
from firm.commands import export as export_command
from firm.tasks import CriticSFTTask, LoraSettings, TinyVLM
from firm.tasks.critic_sft.export import write_critic_folder
from firm.training.export import CheckpointError, export_checkpoint


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


class _RunsCode:
    """Unpickling this runs ``open(marker, "w")``, creating the file, as a malicious checkpoint runs os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _RunsCode(marker)}}, path)
    assert not marker.exists()
    assert firm_main(["export", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "firm does not unpickle checkpoints" in err
    assert not marker.exists(), "unpickling ran the checkpoint's code"
    assert not (tmp_path / "out").exists()


def test_files_that_are_not_checkpoints_and_untrusted_folders_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    (tmp_path / "zero.ckpt").mkdir()
    for target, message in [
        ("notes.txt", "is not a checkpoint"),
        ("plain.pt", "is not a Lightning checkpoint (no state_dict)"),
        ("zero.ckpt", "is a DeepSpeed checkpoint folder; converting it unpickles"),
    ]:
        assert firm_main(["export", str(tmp_path / target), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_a_task_outside_firm_is_imported_only_from_a_trusted_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other-task.ckpt"
    torch.save({"state_dict": {}, "firm_export": {"task": "os.path.join", "meta": {}}}, path)
    with pytest.raises(CheckpointError, match="not one of firm's"):
        export_checkpoint(path, tmp_path / "out")
    with pytest.raises(CheckpointError, match="cannot export a model"):
        export_checkpoint(path, tmp_path / "out", trust=True)


def test_checkpoint_without_critic_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, path)
    with pytest.raises(ValueError, match="not written by a firm task that exports a model"):
        export_checkpoint(path, tmp_path / "out")


def test_firm_export_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    args = argparse.Namespace(checkpoint=tmp_path / "missing.ckpt", output=tmp_path / "out", adapter=False, dtype=None)
    with pytest.raises(UsageError, match="checkpoint not found"):
        export_command.run(args)

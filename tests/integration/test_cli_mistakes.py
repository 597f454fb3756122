"""Everyday mistakes get one line that names the problem and the fix, and exit code 2 (never a traceback)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from firm.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "debug" / "critic_sft_tiny.yaml"


def error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The one ``firm <command>: error: ...`` line; Lightning's own info lines (seed, accelerator) may precede it."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("firm ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"firm {command}: error: "), lines[0]
    return lines[0]


@pytest.fixture
def lightning_logs_here() -> None:
    """Lightning's log handlers keep the stderr of the test that first imported it, which pytest has closed since;
    point them at this test's captured stderr (a test-run artifact: a real process has one stderr)."""
    import sys

    for logger in list(logging.Logger.manager.loggerDict.values()):
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it flushes the closed one first


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["world", "sheet", "--task", "edit", "--out", "{d}/adir"], "is a directory; give the image file to write"),
        (["world", "sheet", "--task", "edit", "--out", "{d}/sheet.unknown"], "unknown image extension '.unknown'"),
        (["world", "shards", "--dimension", "execution", "-n", "2", "--out", "{d}/afile"], "is a file; give a folder"),
        (["world", "bench", "-n", "1", "--out", "{d}/afile"], "is a file; give a folder"),
        (["bench", "--bench", "{d}/adir", "--out", "{d}/o"], "bench file {d}/adir is a directory, not a file"),
        (["serve", "--model", "m", "--token-file", "{d}/adir"], "--token-file {d}/adir is a directory, not a file"),
        (
            ["score", "--model", "m", "--input", "{d}/adir", "--output", "{d}/o.jsonl"],
            "--input {d}/adir is a directory",
        ),
        (["export", "{d}/afile", "{d}/out"], "{d}/afile is not a checkpoint"),
    ],
)
def test_files_and_folders_mixed_up(
    folders: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [a.replace("{d}", str(folders)) for a in argv]
    assert main(argv) == 2
    assert message.replace("{d}", str(folders)) in error_line(capsys, argv[0])


def test_world_shards_never_mix_a_rerun_with_an_earlier_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["world", "shards", "--dimension", "execution", "--size", "32", "--shard-size", "2", "--no-progress"]
    assert main([*base, "-n", "6", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*base, "-n", "3", "--out", str(tmp_path)]) == 2
    assert "already holds 3 train execution shard(s)" in error_line(capsys, "world")
    assert len(list(tmp_path.glob("*.tar"))) == 3  # untouched
    assert main([*base, "-n", "3", "--out", str(tmp_path), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
        "shapes-train-execution-000000.tar",
        "shapes-train-execution-000001.tar",
    ]


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU build of torch")
def test_cuda_on_a_cpu_build_of_torch(folders: Path, tiny_critic_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["score", "--model", str(tiny_critic_dir), "--device", "cuda", "--image", str(folders / "ok.png")]
    assert main([*argv, "--prompt", "a square"]) == 2
    assert "this torch" in (line := error_line(capsys, "score")) and "--device cpu" in line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model.init_args.optimizer.lr", "-1"], "model (firm.tasks.CriticSFTTask): optimizer.lr must be positive"),
        (["--data.init_args.batch_size", "-4"], "data (firm.worlds.shapes.sft.ShapesWorldSFTDataModule): batch sizes"),
        (["--data.init_args.dimensions", "[beauty]"], "unknown dimension 'beauty'; choose one of execution"),
    ],
)
@pytest.mark.usefixtures("lightning_logs_here")
def test_recipe_values_a_settings_check_refuses_name_the_key(
    capsys: pytest.CaptureFixture[str], override: list[str], message: str
) -> None:
    assert main(["fit", "-c", str(RECIPE), *override]) == 2
    assert message in error_line(capsys, "fit")


@pytest.mark.usefixtures("lightning_logs_here")
def test_firm_test_without_test_data_says_the_datamodules_own_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    small = ["--data.init_args.train_samples", "4", "--data.init_args.val_samples", "0"]
    assert main(["test", "-c", str(RECIPE), *small]) == 2
    assert "--data.init_args.test_samples" in error_line(capsys, "test")


def test_predict_is_not_offered_and_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "-c", str(RECIPE)]) == 2
    assert "firm export CHECKPOINT OUT" in error_line(capsys, "predict")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "predict" not in capsys.readouterr().out


def test_an_allow_list_naming_a_missing_distribution(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIRM_LOAD_PLUGINS", "firm-exmaple")
    assert main(["plugins"]) == 2
    line = error_line(capsys, "plugins")
    assert "names firm-exmaple, which is not installed" in line and "firm-example" in line


def test_a_dead_critic_url_says_so_at_once_and_gives_up_in_seconds(folders: Path, tiny_critic_dir: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from firm.serving.app import bind

    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    for critic, extra in [("remote", []), ("openai", ["--model", "judge"])]:
        argv = [sys.executable, "-m", "firm.cli", "score", "--critic", critic, "--base-url", url, "--retries", "2"]
        argv += [*extra, "--image", str(folders / "ok.png"), "--prompt", "a square", "--dimensions", "quality"]
        started = time.monotonic()
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env={**os.environ, "OPENAI_API_KEY": ""}
        )
        assert done.returncode == 1 and time.monotonic() - started < 60, done.stderr
        lines = [line for line in done.stderr.splitlines() if "real_accelerator" not in line]
        assert [line.split("retrying ")[1][:5] for line in lines[:2]] == ["(1/2)", "(2/2)"], done.stderr
        assert all("cannot reach" in line for line in lines[:2]) and "Traceback" not in done.stderr
        assert lines[-1].startswith("firm score: error: cannot ") and url in lines[-1], done.stderr

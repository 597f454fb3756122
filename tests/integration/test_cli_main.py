import pytest

from firm.cli import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "score", "plugins", "world", "bench", "serve", "export"):
        assert f"    {command} " in out


def test_fit_goes_to_the_lightning_cli(capsys):
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--trainer.num_nodes" in out and "--ckpt_path" in out

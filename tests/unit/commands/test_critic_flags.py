"""The command layer: one set of critic flags on score, bench and serve, turned into the same CriticSpec; library
input errors print as one line with exit code 2; every subcommand is mounted from firm.commands."""

from __future__ import annotations

import argparse

import pytest

from firm import cli
from firm.commands import UsageError, bench, score, serve
from firm.commands.critic_flags import critic_spec
from firm.critics.factory import CRITIC_FLAGS
from firm.errors import InputError


def parse(module: object, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="firm")
    module.add_parser(parser.add_subparsers(dest="command"))  # type: ignore[attr-defined]
    name = {score: "score", bench: "bench", serve: "serve"}[module]  # type: ignore[index]
    required = ["--bench", "b.jsonl", "--out", "o"] if module is bench else []
    return parser.parse_args([name, *required, *argv])


CRITIC_ARGV = ["--model", "m", "--max-new-tokens", "9", "--samples", "4", "--temperature", "0.5"]
CRITIC_ARGV += ["--template", "execution=./e.txt", "--batch-size", "2", "--device", "cpu", "--dtype", "float32"]
CRITIC_ARGV += ["--max-pixels", "4096"]


@pytest.mark.parametrize("module", [score, bench, serve], ids=["score", "bench", "serve"])
def test_score_bench_and_serve_take_every_critic_flag_into_the_same_spec(module: object) -> None:
    args = parse(module, *CRITIC_ARGV)
    for flag in CRITIC_FLAGS:
        assert hasattr(args, flag.name), f"{flag.option} missing"
    spec = critic_spec(args, critic="generative")
    assert dict(spec.settings) == {
        "model": "m",
        "max_new_tokens": 9,
        "max_new_tokens_per_dimension": {},
        "samples": 4,
        "temperature": 0.5,
        "templates": {"execution": "./e.txt"},
        "batch_size": 2,
        "device": "cpu",
        "dtype": "float32",
        "max_pixels": 4096,
    }


def test_a_refused_flag_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match="does not take --samples"):
        critic_spec(parse(score, "--critic", "score_token", "--model", "m", "--samples", "2"))


def test_bench_critic_flags_need_a_critic() -> None:
    with pytest.raises(UsageError, match=r"critic flags \(--samples, --template\) need --model or --critic"):
        bench.run(parse(bench, "--samples", "2", "--template", "execution=x.txt"))


def test_every_subcommand_lives_in_firm_commands() -> None:
    assert all(name.startswith("firm.commands.") for name in cli.COMMANDS)
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"score", "bench", "serve", "world", "export", "plugins", "fit"} <= set(subcommands)


def test_library_input_errors_are_one_line_and_exit_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    # A SampleInputError from firm.data.samples, through the command: no traceback, the library's message.
    assert cli.main(["score", "--model", str(tmp_path), "--image", str(tmp_path), "--prompt", "p"]) == 2
    err = capsys.readouterr().err
    assert err == f"firm score: error: image {tmp_path} is a directory, not a file\n"
    assert issubclass(UsageError, InputError)

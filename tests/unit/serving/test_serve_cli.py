"""``firm serve`` flags: exposure without a token, token sources and bad input fail fast, before any model loads."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from firm.commands import UsageError
from firm.commands import serve as cli
from firm.errors import InputError
from firm.serving.app import bind, check_exposure, is_loopback


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("::", False),
        ("critic.example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_defaults_bind_loopback_with_batching_on() -> None:
    args = parse("--model", "./critic")
    assert (args.host, args.port, args.max_batch_size, args.max_wait_ms) == ("127.0.0.1", 8700, 16, 50.0)


def test_templates_reach_build_critic_under_the_name_it_reads() -> None:
    from firm.commands.critic_flags import critic_spec

    args = parse("--model", "./critic", "--template", "execution=./a.txt", "--template", "quality=./b.txt")
    assert args.templates == ["execution=./a.txt", "quality=./b.txt"]
    spec = critic_spec(args)
    assert spec.settings["templates"] == {"execution": "./a.txt", "quality": "./b.txt"}


def test_binding_beyond_loopback_without_a_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRM_SERVE_TOKEN", raising=False)
    with pytest.raises(
        UsageError, match=r"binding 0\.0\.0\.0 exposes the critic .* --token-file or set FIRM_SERVE_TOKEN"
    ):
        cli.run(parse("--host", "0.0.0.0", "--model", "./critic"))
    check_exposure("0.0.0.0", "a-token")  # with a token it may


def test_token_comes_from_the_file_else_the_environment(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    assert cli.read_token(tmp_path / "token", None) == "from-file"
    assert cli.read_token(None, " from-env ") == "from-env"
    assert cli.read_token(None, "") is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        cli.read_token(tmp_path / "empty", None)
    with pytest.raises(UsageError, match="--token-file not found"):
        cli.read_token(tmp_path / "missing", None)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--port", "70000"], "--port must be 0-65535"),
        (["--max-batch-size", "0"], "--max-batch-size >= 1"),
        (["--max-items", "0"], "--max-items must be at least 1"),
        (["--reward", "no_such_reward"], "no_such_reward"),
        (["--critic", "no_such_critic"], "no_such_critic"),
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], match: str) -> None:
    with pytest.raises(InputError, match=match):
        cli.run(parse("--model", "./critic", *argv))


def test_a_port_in_use_fails_before_the_model_loads() -> None:
    taken = bind("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{taken.getsockname()[1]}"):
            cli.run(parse("--model", "./no-such-folder", "--port", str(taken.getsockname()[1])))
    finally:
        taken.close()

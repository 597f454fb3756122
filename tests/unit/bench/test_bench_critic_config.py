"""Critics for ``firm bench`` from config files: class path or registered name, typed init_args, clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from firm.bench.cli import _config_critic, instantiate_critic
from firm.commands import UsageError
from firm.critics.base import FIRM_RANGE, Critic, JudgeRequest, ScoreRange, Verdict


class FixedCritic(Critic):
    """Answers ``score`` for everything, on a configurable scale."""

    def __init__(self, score: int = 3, score_range: ScoreRange = FIRM_RANGE) -> None:
        self.score = score
        self.score_range = score_range

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        return [Verdict(r.dimension, self.score) for r in requests]


CLASS_PATH = f"{__name__}.FixedCritic"


def test_init_args_are_typed_from_plain_data() -> None:
    critic = instantiate_critic(CLASS_PATH, {"score": "7", "score_range": {"low": 0, "high": 10}})
    assert isinstance(critic, FixedCritic)
    assert critic.score == 7 and critic.score_range == ScoreRange(0, 10)


def test_unknown_argument_and_non_critic_class_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="cannot build .*colour"):
        instantiate_critic(CLASS_PATH, {"colour": "red"})
    with pytest.raises(UsageError, match="not a firm critic"):
        instantiate_critic("firm.bench.sample.Bench", {})
    with pytest.raises(UsageError, match="no critic named 'nope'"):
        instantiate_critic("nope", {})


def test_config_file_name_defaults_to_the_file_and_keys_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "fixed-four.yaml"
    path.write_text(f"class_path: {CLASS_PATH}\ninit_args:\n  score: 4\n")
    spec = _config_critic(path)
    assert spec.name == "fixed-four"
    assert spec.config == {"class_path": CLASS_PATH, "init_args": {"score": 4}}
    assert spec.build().score == 4
    (tmp_path / "bad.json").write_text('{"class_path": "generative", "init": {}}')
    with pytest.raises(UsageError, match="unknown key"):
        _config_critic(tmp_path / "bad.json")

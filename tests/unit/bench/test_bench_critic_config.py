"""Critics for ``firm bench`` from config files: class path or registered name, typed init_args, clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from firm.critics.base import FIRM_RANGE, Critic, JudgeRequest, ScoreRange, Verdict
from firm.critics.factory import CriticSpec, CriticSpecError, build_critic


class FixedCritic(Critic):
    """Answers ``score`` for everything, on a configurable scale."""

    def __init__(self, score: int = 3, score_range: ScoreRange = FIRM_RANGE) -> None:
        self.score = score
        self.score_range = score_range

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        return [Verdict(r.dimension, self.score) for r in requests]


CLASS_PATH = f"{__name__}.FixedCritic"


def test_init_args_are_typed_from_plain_data() -> None:
    critic = build_critic(CriticSpec(CLASS_PATH, {"score": "7", "score_range": {"low": 0, "high": 10}}))
    assert isinstance(critic, FixedCritic)
    assert critic.score == 7 and critic.score_range == ScoreRange(0, 10)


def test_unknown_argument_and_non_critic_class_are_spec_errors() -> None:
    with pytest.raises(CriticSpecError, match="cannot build .*colour"):
        build_critic(CriticSpec(CLASS_PATH, {"colour": "red"}))
    with pytest.raises(CriticSpecError, match="not a firm critic"):
        build_critic(CriticSpec("firm.bench.sample.Bench"))
    with pytest.raises(CriticSpecError, match="no critic named 'nope'"):
        build_critic(CriticSpec("nope"))


def test_config_file_name_defaults_to_the_file_and_keys_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "fixed-four.yaml"
    path.write_text(f"class_path: {CLASS_PATH}\ninit_args:\n  score: 4\n")
    spec = CriticSpec.from_file(path)
    assert spec.row_name == "fixed-four"
    assert spec.key() == {"critic": CLASS_PATH, "settings": {"score": 4}}
    critic = build_critic(spec)
    assert isinstance(critic, FixedCritic) and critic.score == 4
    (tmp_path / "bad.json").write_text('{"class_path": "generative", "init": {}}')
    with pytest.raises(CriticSpecError, match="unknown key"):
        CriticSpec.from_file(tmp_path / "bad.json")

"""CriticReward: images in, the strategy's dimensions judged in one critic call, rewards and verdicts out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
import torch
from PIL import Image

from firm.critics.base import Critic, JudgeRequest, Verdict
from firm.errors import InputError
from firm.rewards import ConsistencyModulatedExecution, QualityModulatedAlignment, WeightedSum
from firm.rewards.critic_reward import CriticReward, RewardSample, reward_dict, strategy_for


class ColourCritic(Critic):
    """Execution from the edited image's red channel, consistency from its green, quality from its blue (1-5); a
    text containing "garbled" gets an invalid verdict. Records every call."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str]]] = []

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        self.calls.append([(r.dimension, r.text) for r in requests])
        channel = {"execution": 0, "consistency": 1, "instruction": 0, "quality": 2}
        out = []
        for r in requests:
            if "garbled" in r.text:
                out.append(Verdict.invalid(r.dimension, "no score found"))
            else:
                value = r.image.getpixel((0, 0))[channel[r.dimension]]  # type: ignore[index]
                out.append(Verdict(r.dimension, 1 + round(4 * value / 255)))
        return out


def rgb(r: int, g: int, b: int) -> Image.Image:
    return Image.new("RGB", (4, 4), (r, g, b))


SOURCE = rgb(0, 0, 0)


def test_edits_get_cme_from_one_critic_call_on_exactly_its_dimensions() -> None:
    critic = ColourCritic()
    reward = CriticReward(critic, ConsistencyModulatedExecution(), "cme")
    scored = reward.score(["a", "b"], [rgb(255, 255, 0), rgb(255, 0, 0)], sources=[SOURCE, SOURCE])
    assert critic.calls == [[("execution", "a"), ("consistency", "a"), ("execution", "b"), ("consistency", "b")]]
    # E=5, C=5 -> 1.0 * (0.6 + 0.4 * 1.0); E=5, C=1 -> 1.0 * (0.6 + 0.0)
    assert torch.allclose(scored.output.total, torch.tensor([1.0, 0.6]))
    assert [v["consistency"].score for v in scored.verdicts] == [5, 1]
    assert scored.reward_json(1) == {
        "total": pytest.approx(0.6),
        "valid": True,
        "components": {"execution": 1.0, "consistency": 0.0},
    }


def test_an_invalid_verdict_gives_an_invalid_reward_written_as_null() -> None:
    reward = CriticReward(ColourCritic(), QualityModulatedAlignment(), "qma")
    scored = reward([RewardSample("garbled prompt", rgb(255, 0, 255)), RewardSample("a prompt", rgb(255, 0, 255))])
    assert math.isnan(float(scored.output.total[0])) and not bool(scored.output.valid[0])
    view = scored.to_json()
    assert view[0]["reward"]["total"] is None and view[0]["reward"]["valid"] is False
    assert view[0]["verdicts"]["instruction"]["valid"] is False
    assert view[1]["reward"] == {"total": 1.0, "valid": True, "components": {"instruction": 1.0, "quality": 1.0}}
    json.dumps(view)  # the one JSON view is JSON: no NaN leaks into it


def test_combine_reads_only_the_strategy_dimensions_from_verdicts_judged_elsewhere() -> None:
    reward = CriticReward(ColourCritic(), WeightedSum({"execution": 1.0}), "exec")
    verdicts = [{"execution": Verdict("execution", 3), "consistency": Verdict("consistency", 1)}]
    scored = reward.combine(verdicts)
    assert reward_dict(scored.output, 0)["total"] == pytest.approx(0.5)
    assert scored.verdicts == verdicts  # the extra dimension is kept for the caller, not used
    with pytest.raises(KeyError):
        reward.combine([{"consistency": Verdict("consistency", 1)}])


def test_mismatched_inputs_and_mixed_strategies_are_refused() -> None:
    reward = CriticReward(ColourCritic(), ConsistencyModulatedExecution())
    assert reward.name == "ConsistencyModulatedExecution" and reward.task == "edit"
    with pytest.raises(ValueError, match="differ in length"):
        reward.score(["a", "b"], [rgb(1, 1, 1)], sources=[SOURCE, SOURCE])
    with pytest.raises(ValueError, match="needs the source image"):
        reward.score(["a"], [rgb(1, 1, 1)])  # an edit reward on a generation
    with pytest.raises(ValueError, match="mixes edit and generation"):
        CriticReward(ColourCritic(), WeightedSum({"execution": 1.0, "quality": 1.0}), "mixed")


class Liar(ColourCritic):
    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        return super().judge(requests)[:-1]


def test_a_critic_that_breaks_its_contract_is_an_error_not_a_reward() -> None:
    with pytest.raises(RuntimeError, match="returned 1 verdicts for 2"):
        CriticReward(Liar(), ConsistencyModulatedExecution()).score(["a"], [rgb(1, 1, 1)], sources=[SOURCE])


def test_strategies_resolve_by_name_or_class_path_with_clear_errors() -> None:
    assert isinstance(strategy_for("cme"), ConsistencyModulatedExecution)
    assert isinstance(strategy_for("firm.rewards.QualityModulatedAlignment"), QualityModulatedAlignment)
    with pytest.raises(InputError, match="no reward named 'nope'"):
        strategy_for("nope")

import math

import pytest
import torch

from firm import plugins
from firm.critics import ScoreRange, Verdict
from firm.rewards import (
    ConsistencyModulatedExecution,
    LogitExpectation,
    QualityModulatedAlignment,
    RewardInput,
    RewardStrategy,
    SingleDimension,
    WeightedSum,
)


def _verdicts(dim, scores):
    return [
        Verdict(dim, s, raw=str(s)) if s is not None else Verdict.invalid(dim, "no score found", raw="???")
        for s in scores
    ]


def test_cme_from_verdicts_marks_invalid_samples():
    inputs = RewardInput.from_verdicts(
        {"execution": _verdicts("execution", [5, None, 3]), "consistency": _verdicts("consistency", [5, 4, None])}
    )
    out = ConsistencyModulatedExecution()(inputs)
    assert out.valid.tolist() == [True, False, False]
    assert out.total[0].item() == pytest.approx(1.0)
    assert torch.isnan(out.total[1:]).all()
    assert set(out.components) == {"execution", "consistency"}
    assert out.components["execution"][0].item() == 1.0


def test_cme_never_pays_a_lazy_copy_unlike_an_even_weighted_sum():
    # An editor that returns its input (E=1, C=5) against an honest, mediocre edit (E=3, C=3).
    inputs = RewardInput({"execution": torch.tensor([1.0, 3.0]), "consistency": torch.tensor([5.0, 3.0])})
    lazy, mediocre = ConsistencyModulatedExecution()(inputs).total.tolist()
    assert lazy == 0.0 and mediocre == pytest.approx(0.5 * (0.6 + 0.4 * 0.5))
    even = WeightedSum({"execution": 0.5, "consistency": 0.5})(inputs).total.tolist()
    assert even == pytest.approx([0.5, 0.5])  # the copy earns as much as real work: FIRM's "lazy editor"


def test_qma_needs_quality():
    inputs = RewardInput({"instruction": torch.tensor([5.0])})
    with pytest.raises(KeyError, match="'quality'"):
        QualityModulatedAlignment()(inputs)


def test_single_dimension_and_score_range():
    inputs = RewardInput({"execution": torch.tensor([0.0, 10.0, 5.0])}, score_range=ScoreRange(0, 10))
    assert SingleDimension("execution")(inputs).total.tolist() == pytest.approx([0.0, 1.0, 0.5])


def test_logit_expectation_reads_expected_scores():
    verdicts = [
        Verdict("execution", 4, distribution=(0.0, 0.0, 0.2, 0.6, 0.2), expected=4.0),
        Verdict("execution", 2, distribution=(0.5, 0.5, 0.0, 0.0, 0.0), expected=1.5),
    ]
    inputs = RewardInput.from_verdicts({"execution": verdicts})
    out = LogitExpectation()(inputs)
    assert out.total.tolist() == pytest.approx([0.75, 0.125])
    with pytest.raises(KeyError, match="score-token judge"):
        LogitExpectation()(RewardInput({"execution": torch.tensor([4.0])}))


def test_strategies_validate_their_settings_at_construction():
    with pytest.raises(ValueError, match="unknown dimension"):
        SingleDimension("aesthetics")
    with pytest.raises(ValueError, match="w1=-0.1"):
        ConsistencyModulatedExecution(w1=-0.1)
    with pytest.raises(ValueError, match="positive sum"):
        WeightedSum({"execution": 0.0})


def test_mismatched_batch_sizes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        RewardInput({"execution": torch.ones(2), "consistency": torch.ones(3)})


@pytest.mark.parametrize("plugin", plugins.discover("firm.rewards"), ids=lambda p: p.name)
def test_every_registered_reward_runs_with_defaults(plugin):
    """Conformance: every registered reward builds with its defaults and rewards a batch in [0, 1]."""
    strategy = plugin.load()()
    assert isinstance(strategy, RewardStrategy)
    scores = {dim: torch.tensor([1.0, 3.0, 5.0, math.nan]) for dim in strategy.dimensions}
    inputs = RewardInput(scores, expected=scores if strategy.uses_expected else {})
    out = strategy(inputs)
    assert out.total.shape == (4,)
    assert out.valid.tolist() == [True, True, True, False]
    assert out.total[:3].min() >= 0 and out.total[:3].max() <= 1
    assert out.total[2].item() == pytest.approx(1.0)  # top scores everywhere earn the full reward

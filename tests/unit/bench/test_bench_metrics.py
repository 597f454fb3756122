"""Bench metrics on hand-computed cases: MAE both ways, correlations, pairwise accuracy, confusion matrix."""

from __future__ import annotations

import math

import pytest
import torch

from firm.bench.metrics import (
    best_constant,
    confusion_matrix,
    correlations,
    error_by_human_score,
    human_classes,
    invalid_rate,
    mae,
    miss_error,
    pairwise_accuracy,
    penalised_mae,
)
from firm.critics.base import FIRM_RANGE, ScoreRange

NAN = math.nan


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_mae_over_valid_only_and_penalised_with_the_span_of_the_scale() -> None:
    pred, human = t(1, 3, NAN, 5), t(2, 3, 4, 1)
    assert mae(pred, human) == pytest.approx((1 + 0 + 4) / 3)
    assert miss_error(FIRM_RANGE) == 4
    assert penalised_mae(pred, human, miss_error(FIRM_RANGE)) == pytest.approx((1 + 0 + 4 + 4) / 4)
    assert invalid_rate(pred) == 0.25


def test_mae_is_nan_without_a_valid_prediction_but_the_penalised_one_is_not() -> None:
    pred, human = t(NAN, NAN), t(1, 5)
    assert math.isnan(mae(pred, human))
    assert penalised_mae(pred, human, 4.0) == 4.0
    assert invalid_rate(pred) == 1.0


def test_mae_accepts_rater_means() -> None:
    assert mae(t(3, 4), t(2.5, 4 + 1 / 3)) == pytest.approx((0.5 + 1 / 3) / 2)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        mae(t(1, 2), t(1))


def test_correlations_match_hand_computation() -> None:
    # deviations (-2,-1,0,1,2) and (-1,-2,1,0,2): covariance 8, variances 10 and 10 -> r = 0.8; ranks are the values,
    # so Spearman is 0.8 too; 8 concordant and 2 discordant pairs of 10 -> Kendall 0.6.
    c = correlations(t(1, 2, 3, 4, 5), t(2, 1, 4, 3, 5))
    assert (c.pearson, c.spearman, c.kendall, c.n) == (pytest.approx(0.8), pytest.approx(0.8), pytest.approx(0.6), 5)


def test_correlations_with_ties_use_average_ranks_and_tau_b() -> None:
    # pred ranks (1.5, 1.5, 3, 4), human ranks (1, 2.5, 2.5, 4): rank covariance 3.75, variances 4.5 -> 0.8333.
    # Pairs: 4 concordant, 0 discordant, one tied only in pred, one tied only in human -> tau_b = 4 / sqrt(5 * 5).
    c = correlations(t(1, 1, 2, 3), t(1, 2, 2, 3))
    assert c.spearman == pytest.approx(3.75 / 4.5)
    assert c.kendall == pytest.approx(0.8)


def test_correlations_skip_invalid_and_are_undefined_for_a_constant_side() -> None:
    c = correlations(t(1, NAN, 3, 4, 5), t(2, 5, 4, 3, 5))
    assert c.n == 4
    assert c.pearson == pytest.approx(correlations(t(1, 3, 4, 5), t(2, 4, 3, 5)).pearson)
    constant = correlations(t(3, 3, 3), t(1, 2, 3))
    assert math.isnan(constant.pearson) and math.isnan(constant.spearman) and math.isnan(constant.kendall)
    assert math.isnan(correlations(t(1, NAN), t(1, 2)).pearson)


def test_pairwise_accuracy_strict_and_with_ties_within_groups() -> None:
    # group 0: humans (5, 3, 3), critic (4, 2, 2): pairs (0,1) right, (0,2) right, (1,2) human tie predicted tie.
    # group 1: humans (2, 4), critic (3, 3): a predicted tie where humans differ -> wrong.
    # group 2: humans (1, 2), critic (NaN, 5): invalid -> wrong.
    # Samples of different groups are never paired.
    pred = t(4, 2, 2, 3, 3, NAN, 5)
    human = t(5, 3, 3, 2, 4, 1, 2)
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    acc = pairwise_accuracy(pred, human, group)
    assert (acc.n_pairs, acc.n_strict) == (5, 4)
    assert acc.strict == pytest.approx(2 / 4)
    assert acc.with_ties == pytest.approx(3 / 5)


def test_pairwise_accuracy_without_pairs_is_nan() -> None:
    acc = pairwise_accuracy(t(1, 2), t(1, 2), torch.tensor([0, 1]))
    assert acc.n_pairs == 0 and math.isnan(acc.strict) and math.isnan(acc.with_ties)
    assert pairwise_accuracy(t(1, 2), t(1, 2)).strict == 1.0  # one group by default


def test_confusion_matrix_has_an_invalid_column_and_rounds_rater_means_half_up() -> None:
    pred = t(1, 5, NAN, 3, 7, 2)
    human = t(1, 5, 2, 2.5, 4, 1.4)
    m = confusion_matrix(pred, human, FIRM_RANGE)
    expected = torch.zeros(5, 6, dtype=torch.long)
    expected[0, 0] = 1  # human 1, predicted 1
    expected[4, 4] = 1  # human 5, predicted 5
    expected[1, 5] = 1  # human 2, invalid
    expected[2, 2] = 1  # human 2.5 -> 3, predicted 3
    expected[3, 5] = 1  # human 4, predicted 7: off the scale, counted as invalid
    expected[0, 1] = 1  # human 1.4 -> 1, predicted 2
    assert torch.equal(m, expected)
    assert m.sum() == 6


def test_confusion_matrix_on_another_scale() -> None:
    m = confusion_matrix(t(0, 10), t(0, 10), ScoreRange(0, 10))
    assert m.shape == (11, 12) and m[0, 0] == 1 and m[10, 10] == 1


def test_human_classes_clamp_to_the_scale() -> None:
    assert human_classes(t(0.2, 1.5, 4.49, 5.0), FIRM_RANGE).tolist() == [1, 2, 4, 5]


def test_error_by_human_score() -> None:
    errors = error_by_human_score(t(1, 3, NAN, 5), t(1, 1, 4, 4), FIRM_RANGE)
    assert [e.score for e in errors] == [1, 2, 3, 4, 5]
    one, four = errors[0], errors[3]
    assert (one.n, one.n_invalid, one.mae, one.penalised_mae) == (2, 0, 1.0, 1.0)
    assert (four.n, four.n_invalid, four.mae, four.penalised_mae) == (2, 1, 1.0, 2.5)
    assert errors[1].n == 0 and math.isnan(errors[1].mae)


def test_best_constant_is_the_median_and_the_lower_one_on_ties() -> None:
    assert best_constant(t(1, 1, 2, 5, 5), FIRM_RANGE) == 2  # MAE 1.6 against 1.8 for 1 and 3
    assert best_constant(t(1, 2, 4, 5), FIRM_RANGE) == 2  # 2, 3 and 4 all give MAE 1.5
    assert best_constant(t(4.6, 5, 5), FIRM_RANGE) == 5
    with pytest.raises(ValueError):
        best_constant(t(), FIRM_RANGE)

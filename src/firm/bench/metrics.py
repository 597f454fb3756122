"""Agreement between a critic's scores and human scores: plain functions on tensors.

Predictions are a float tensor in which NaN marks an *invalid* verdict (no score could be read, or no prediction was
given for the sample). Every function says what it does with them; none drops them quietly:

- MAE comes two ways: :func:`mae` over valid predictions only, and :func:`penalised_mae`, where an invalid verdict
  counts as a miss with the largest error the scale allows (4 on FIRM's 1-5), worse than any answer the critic could
  have given. :func:`invalid_rate` is reported beside both.
- Correlations are computed over the valid pairs and say how many there were.
- In pairwise accuracy a pair with an invalid prediction counts as wrong.
- The confusion matrix has one extra predicted column for invalid verdicts.

Human scores may be means of several raters (not integers); where a metric needs a human *class* (the confusion
matrix, error per human score) the mean is rounded half up to the nearest score of the scale.

Shapes: N samples, K scores on the scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics.functional import (
    kendall_rank_corrcoef,
    mean_absolute_error,
    pearson_corrcoef,
    spearman_corrcoef,
)
from torchmetrics.functional.classification import multiclass_confusion_matrix

from firm.critics.base import ScoreRange

__all__ = [
    "Correlations",
    "PairwiseAccuracy",
    "ScoreError",
    "best_constant",
    "confusion_matrix",
    "correlations",
    "error_by_human_score",
    "human_classes",
    "invalid_rate",
    "mae",
    "miss_error",
    "pairwise_accuracy",
    "penalised_mae",
]


def _check(pred_N: Tensor, human_N: Tensor) -> None:
    if pred_N.shape != human_N.shape or pred_N.dim() != 1:
        raise ValueError(f"predictions and human scores must be 1-D of one length, got {pred_N.shape} {human_N.shape}")
    if torch.isnan(human_N).any():
        raise ValueError("human scores contain NaN; every bench sample needs a human score")


def miss_error(score_range: ScoreRange) -> float:
    """The error an invalid verdict counts as in :func:`penalised_mae`: the span of the scale (4 on 1-5)."""
    return float(score_range.high - score_range.low)


def invalid_rate(pred_N: Tensor) -> float:
    """The fraction of predictions that are invalid (NaN); NaN for no samples."""
    if pred_N.numel() == 0:
        return math.nan
    return float(torch.isnan(pred_N).double().mean())


def mae(pred_N: Tensor, human_N: Tensor) -> float:
    """Mean absolute error over the valid predictions only; NaN when none is valid."""
    _check(pred_N, human_N)
    valid_N = ~torch.isnan(pred_N)
    if not valid_N.any():
        return math.nan
    return float(mean_absolute_error(pred_N[valid_N].double(), human_N[valid_N].double()))


def penalised_mae(pred_N: Tensor, human_N: Tensor, miss: float) -> float:
    """Mean absolute error over every sample, an invalid prediction counting as an error of ``miss``.

    Args:
        pred_N: predictions, NaN for invalid.
        human_N: human scores.
        miss: the error an invalid prediction costs, usually :func:`miss_error` of the scale.

    Returns:
        The mean error; NaN for no samples.
    """
    _check(pred_N, human_N)
    if pred_N.numel() == 0:
        return math.nan
    err_N = (pred_N.double() - human_N.double()).abs()
    return float(torch.where(torch.isnan(err_N), torch.full_like(err_N, miss), err_N).mean())


@dataclass(frozen=True)
class Correlations:
    """Pearson, Spearman and Kendall (tau-b, tie-corrected) correlation over ``n`` valid pairs.

    A coefficient is NaN when it is undefined: fewer than two valid pairs, or one side constant.
    """

    pearson: float
    spearman: float
    kendall: float
    n: int


def correlations(pred_N: Tensor, human_N: Tensor) -> Correlations:
    """Correlations between valid predictions and human scores (torchmetrics, in float64)."""
    _check(pred_N, human_N)
    valid_N = ~torch.isnan(pred_N)
    p_V, h_V = pred_N[valid_N].double(), human_N[valid_N].double()
    n = int(p_V.numel())
    # A constant side has no defined correlation; torchmetrics would warn and return NaN or 0 depending on the
    # coefficient, so answer NaN for all three here.
    if n < 2 or bool((p_V == p_V[0]).all()) or bool((h_V == h_V[0]).all()):
        return Correlations(math.nan, math.nan, math.nan, n)
    tau = kendall_rank_corrcoef(p_V, h_V, variant="b")
    assert isinstance(tau, Tensor)  # a tuple only with t_test=True
    return Correlations(
        pearson=float(pearson_corrcoef(p_V, h_V)),
        spearman=float(spearman_corrcoef(p_V, h_V)),
        kendall=float(tau),
        n=n,
    )


@dataclass(frozen=True)
class PairwiseAccuracy:
    """How often a critic orders two candidates of the same group as the humans do.

    Attributes:
        strict: over pairs whose human scores differ, the fraction the critic orders the same way; a predicted tie
            or an invalid prediction is wrong. NaN without such pairs.
        with_ties: over all pairs, the fraction where the critic's order (higher, lower or tied) equals the humans';
            an invalid prediction is wrong. NaN without pairs.
        n_strict: pairs whose human scores differ.
        n_pairs: all pairs.
    """

    strict: float
    with_ties: float
    n_strict: int
    n_pairs: int


def pairwise_accuracy(pred_N: Tensor, human_N: Tensor, group_N: Tensor | None = None) -> PairwiseAccuracy:
    """Pairwise ordering accuracy over every pair of samples in the same group.

    Args:
        pred_N: predictions, NaN for invalid.
        human_N: human scores.
        group_N: integer group of each sample (e.g. the same instruction and source); pairs are formed only within a
            group. None puts every sample in one group.
    """
    _check(pred_N, human_N)
    n = pred_N.numel()
    group_N = torch.zeros(n, dtype=torch.long) if group_N is None else group_N
    p_N, h_N, col_N = pred_N.double(), human_N.double(), torch.arange(n)
    hits_strict = hits_ties = n_strict = n_pairs = 0
    # Row blocks of the N x N pair matrix keep memory bounded (about 4M cells a block) on large benches.
    block = max(1, 4_000_000 // max(n, 1))
    for start in range(0, n, block):
        row_R = col_N[start : start + block]
        pair_RN = (group_N[row_R, None] == group_N[None, :]) & (col_N[None, :] > row_R[:, None])
        dh_RN = torch.sign(h_N[row_R, None] - h_N[None, :])
        dp_RN = torch.sign(p_N[row_R, None] - p_N[None, :])  # NaN where either side is invalid: never equal to dh
        agree_RN = (dp_RN == dh_RN) & pair_RN
        differ_RN = pair_RN & (dh_RN != 0)
        n_pairs += int(pair_RN.sum())
        n_strict += int(differ_RN.sum())
        hits_ties += int(agree_RN.sum())
        hits_strict += int((agree_RN & differ_RN).sum())
    return PairwiseAccuracy(
        strict=hits_strict / n_strict if n_strict else math.nan,
        with_ties=hits_ties / n_pairs if n_pairs else math.nan,
        n_strict=n_strict,
        n_pairs=n_pairs,
    )


def human_classes(human_N: Tensor, score_range: ScoreRange) -> Tensor:
    """Human scores as integer scores of the scale: rounded half up (a rater mean of 2.5 is 3), clamped to the range."""
    return torch.floor(human_N.double() + 0.5).clamp(score_range.low, score_range.high).long()


def confusion_matrix(pred_N: Tensor, human_N: Tensor, score_range: ScoreRange) -> Tensor:
    """Counts of (human score, predicted score), with invalid predictions in an extra last column.

    Returns:
        ``[K, K + 1]`` integer tensor: row k is human score ``low + k``, column j < K predicted score ``low + j``,
        column K invalid. A valid prediction outside the scale is counted as invalid.
    """
    _check(pred_N, human_N)
    k = score_range.size
    if pred_N.numel() == 0:
        return torch.zeros(k, k + 1, dtype=torch.long)
    target_N = human_classes(human_N, score_range) - score_range.low
    in_range_N = (pred_N >= score_range.low) & (pred_N <= score_range.high) & (pred_N == torch.round(pred_N))
    pred_class_N = torch.where(in_range_N, torch.nan_to_num(pred_N) - score_range.low, torch.full_like(pred_N, k))
    matrix = multiclass_confusion_matrix(pred_class_N.long(), target_N, num_classes=k + 1)
    return matrix[:k]  # the extra class is never a human score


@dataclass(frozen=True)
class ScoreError:
    """Error on the samples whose (rounded) human score is ``score``."""

    score: int
    n: int
    n_invalid: int
    mae: float
    penalised_mae: float


def error_by_human_score(pred_N: Tensor, human_N: Tensor, score_range: ScoreRange) -> list[ScoreError]:
    """MAE (valid only, and penalised) per human score of the scale, low to high; NaN for an empty bucket."""
    _check(pred_N, human_N)
    classes_N = human_classes(human_N, score_range)
    out = []
    for score in range(score_range.low, score_range.high + 1):
        in_N = classes_N == score
        p, h = pred_N[in_N], human_N[in_N]
        out.append(
            ScoreError(
                score=score,
                n=int(in_N.sum()),
                n_invalid=int(torch.isnan(p).sum()),
                mae=mae(p, h),
                penalised_mae=penalised_mae(p, h, miss_error(score_range)),
            )
        )
    return out


def best_constant(human_N: Tensor, score_range: ScoreRange) -> int:
    """The score of the scale that, answered for every sample, has the lowest MAE (a median; the lower on ties).

    Raises:
        ValueError: for no human scores.
    """
    if human_N.numel() == 0:
        raise ValueError("no human scores to fit a constant to")
    scores_K = torch.arange(score_range.low, score_range.high + 1, dtype=torch.float64)
    err_K = (scores_K[:, None] - human_N.double()[None, :]).abs().mean(dim=1)
    return int(scores_K[int(torch.argmin(err_K))])  # argmin returns the first minimum: the lower score

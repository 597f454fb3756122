"""One critic's verdicts on a bench, measured: metrics for the whole bench and for each slice of it.

Slices (keys of :attr:`CriticResult.groups`): ``all``; each dimension (``execution``); each dimension and difficulty
(``instruction/easy``); each generating model (``model=FLUX``) and each dimension and model
(``execution/model=FLUX``). A sample without a verdict counts as invalid ("missing prediction").
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from firm.bench.metrics import (
    Correlations,
    PairwiseAccuracy,
    ScoreError,
    confusion_matrix,
    correlations,
    error_by_human_score,
    invalid_rate,
    mae,
    miss_error,
    pairwise_accuracy,
    penalised_mae,
)
from firm.bench.predictions import Key
from firm.bench.sample import Bench, BenchSample
from firm.critics.base import Verdict
from firm.critics.parsing import reason_category

__all__ = ["CriticResult", "GroupMetrics", "PairBy", "evaluate", "group_metrics"]

#: Which samples pairwise accuracy compares: candidates for the same input ("group"), or any two samples of a
#: dimension ("dimension").
PairBy = Literal["group", "dimension"]

MISSING = "missing prediction"


@dataclass(frozen=True)
class GroupMetrics:
    """The metrics of one slice of the bench (see :mod:`firm.bench.metrics` for each definition)."""

    n: int
    n_invalid: int
    invalid_rate: float
    mae: float
    penalised_mae: float
    correlations: Correlations
    pairs: PairwiseAccuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_invalid": self.n_invalid,
            "invalid_rate": _json(self.invalid_rate),
            "mae": _json(self.mae),
            "penalised_mae": _json(self.penalised_mae),
            "pearson": _json(self.correlations.pearson),
            "spearman": _json(self.correlations.spearman),
            "kendall": _json(self.correlations.kendall),
            "n_correlated": self.correlations.n,
            "pair_accuracy": _json(self.pairs.strict),
            "pair_accuracy_with_ties": _json(self.pairs.with_ties),
            "n_pairs_strict": self.pairs.n_strict,
            "n_pairs": self.pairs.n_pairs,
        }


def _json(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def group_metrics(pred_N: Tensor, human_N: Tensor, pair_group_N: Tensor, miss: float) -> GroupMetrics:
    """Every metric of one slice.

    Args:
        pred_N: predictions, NaN for invalid.
        human_N: human scores.
        pair_group_N: integer pairing group per sample (pairwise accuracy compares samples of one group).
        miss: the error an invalid prediction counts as in the penalised MAE.
    """
    return GroupMetrics(
        n=int(pred_N.numel()),
        n_invalid=int(torch.isnan(pred_N).sum()),
        invalid_rate=invalid_rate(pred_N),
        mae=mae(pred_N, human_N),
        penalised_mae=penalised_mae(pred_N, human_N, miss),
        correlations=correlations(pred_N, human_N),
        pairs=pairwise_accuracy(pred_N, human_N, pair_group_N),
    )


@dataclass(frozen=True)
class CriticResult:
    """A critic measured on a bench.

    Attributes:
        name: the critic's row name.
        kind: ``critic`` (run here), ``predictions`` (read from a file) or ``reference``.
        verdicts: one per bench sample, in bench order (a missing one is invalid, reason "missing prediction").
        pred_N: the scores as floats, NaN for invalid.
        groups: metrics per slice, ``all`` first.
        confusion: per dimension, the ``[K, K + 1]`` human x predicted counts (last column: invalid).
        by_score: per dimension, the error per human score.
        invalid_reasons: invalid verdicts counted by reason category.
        notes: extra facts for the report (cache reuse, the constant chosen, unmatched prediction lines).
    """

    name: str
    kind: str
    verdicts: list[Verdict]
    pred_N: Tensor
    groups: dict[str, GroupMetrics]
    confusion: dict[str, Tensor]
    by_score: dict[str, list[ScoreError]]
    invalid_reasons: Counter[str]
    notes: tuple[str, ...] = ()

    @property
    def n_missing(self) -> int:
        return self.invalid_reasons.get(MISSING, 0)


def evaluate(
    bench: Bench,
    name: str,
    verdicts: Mapping[Key, Verdict],
    kind: str = "critic",
    pair_by: PairBy = "group",
    notes: tuple[str, ...] = (),
) -> CriticResult:
    """Measure one critic's verdicts against the bench's human scores.

    Args:
        bench: the bench.
        name: the critic's row name.
        verdicts: verdicts by (id, dimension); samples without one count as invalid.
        kind: ``critic``, ``predictions`` or ``reference``.
        pair_by: which samples pairwise accuracy compares (see :data:`PairBy`).
        notes: extra lines for the report.
    """
    ordered = [verdicts.get(s.key) or Verdict.invalid(s.dimension, MISSING) for s in bench.samples]
    pred_N = torch.tensor([math.nan if v.score is None else float(v.score) for v in ordered], dtype=torch.float64)
    human_N = torch.tensor([s.human for s in bench.samples], dtype=torch.float64)
    pair_keys = [_pair_key(s, pair_by) for s in bench.samples]
    codes = {key: i for i, key in enumerate(dict.fromkeys(pair_keys))}
    pair_N = torch.tensor([codes[k] for k in pair_keys], dtype=torch.long)
    miss = miss_error(bench.score_range)
    groups: dict[str, GroupMetrics] = {}
    for label, index in _slices(bench).items():
        idx = torch.tensor(index, dtype=torch.long)
        groups[label] = group_metrics(pred_N[idx], human_N[idx], pair_N[idx], miss)
    confusion, by_score = {}, {}
    for dim in bench.dimensions:
        idx = torch.tensor([i for i, s in enumerate(bench.samples) if s.dimension == dim], dtype=torch.long)
        confusion[dim] = confusion_matrix(pred_N[idx], human_N[idx], bench.score_range)
        by_score[dim] = error_by_human_score(pred_N[idx], human_N[idx], bench.score_range)
    reasons = Counter(reason_category(v.invalid_reason) for v in ordered if v.invalid_reason is not None)
    return CriticResult(name, kind, ordered, pred_N, groups, confusion, by_score, reasons, notes)


def _pair_key(sample: BenchSample, pair_by: PairBy) -> tuple[str, str]:
    if pair_by == "dimension":
        return (sample.dimension, "")
    # A sample without a group has no other candidate to be compared with: a group of its own.
    return (sample.dimension, sample.group if sample.group is not None else "\x00" + sample.id)


def _slices(bench: Bench) -> dict[str, list[int]]:
    slices: dict[str, list[int]] = {"all": list(range(len(bench.samples)))}
    for i, sample in enumerate(bench.samples):
        labels = [sample.dimension]
        if sample.difficulty is not None:
            labels.append(f"{sample.dimension}/{sample.difficulty}")
        if sample.model is not None:
            labels += [f"model={sample.model}", f"{sample.dimension}/model={sample.model}"]
        for label in labels:
            slices.setdefault(label, []).append(i)
    return slices

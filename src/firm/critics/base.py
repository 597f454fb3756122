"""The critic contract: requests in, verdicts out.

A critic judges one *dimension* of an image edit or generation and answers with a :class:`Verdict`. A verdict whose
answer could not be read is *invalid*: it carries no score and says why. firm never invents a score.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from PIL import Image

Task = Literal["edit", "gen"]

#: The dimension each task is judged on, in the order critics and rewards list them.
DIMENSIONS: dict[str, Task] = {
    "execution": "edit",
    "consistency": "edit",
    "instruction": "gen",
    "quality": "gen",
}


def task_of(dimension: str) -> Task:
    """The task ("edit" or "gen") a dimension belongs to.

    Raises:
        ValueError: for an unknown dimension, listing the known ones.
    """
    try:
        return DIMENSIONS[dimension]
    except KeyError:
        raise ValueError(f"unknown dimension {dimension!r}; choose one of {', '.join(DIMENSIONS)}") from None


def dimensions_of(task: str) -> tuple[str, ...]:
    """The dimensions a task ("edit" or "gen") is judged on, in :data:`DIMENSIONS` order.

    Raises:
        ValueError: for an unknown task.
    """
    if task not in ("edit", "gen"):
        raise ValueError(f"unknown task {task!r}; choose edit or gen")
    return tuple(dim for dim, owner in DIMENSIONS.items() if owner == task)


@dataclass(frozen=True)
class ScoreRange:
    """The integer scale a critic answers on. FIRM uses 1-5; VIEScore 0-10; EditScore 0-25."""

    low: int = 1
    high: int = 5

    def __post_init__(self) -> None:
        if self.high <= self.low:
            raise ValueError(f"score range needs low < high, got low={self.low} high={self.high}")

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def normalise(self, score: float) -> float:
        """Map a score on this range to [0, 1]; NaN stays NaN."""
        if math.isnan(score):
            return score
        return (score - self.low) / (self.high - self.low)


FIRM_RANGE = ScoreRange(1, 5)


@dataclass(frozen=True)
class JudgeRequest:
    """One thing to judge.

    Attributes:
        dimension: execution, consistency (edits) or instruction, quality (generations).
        text: the edit instruction or the generation prompt.
        image: the edited or generated image.
        source: the source image of an edit; required for execution and consistency.
        requirement: an optional extra constraint passed to templates that use it.
    """

    dimension: str
    text: str
    image: Image.Image
    source: Image.Image | None = None
    requirement: str = ""

    def __post_init__(self) -> None:
        task = task_of(self.dimension)
        if task == "edit" and self.source is None:
            raise ValueError(f"a {self.dimension} request judges an edit and needs the source image")
        if task == "gen" and self.source is not None:
            raise ValueError(f"a {self.dimension} request judges a generation and takes no source image")

    @property
    def task(self) -> Task:
        return task_of(self.dimension)

    @property
    def images(self) -> list[Image.Image]:
        """Images in the order the critic sees them: source first for edits."""
        return [self.image] if self.source is None else [self.source, self.image]


@dataclass(frozen=True)
class Verdict:
    """A critic's answer to one request.

    Attributes:
        dimension: the dimension judged.
        score: the integer score, or None when the verdict is invalid.
        reasoning: the critic's reasoning text (empty when it gave none).
        raw: the full raw answer, kept for audit.
        invalid_reason: why no score could be read; None for a valid verdict.
        sub_scores: the individual scores when a dimension has several (quality: aesthetics, technical, structure).
        distribution: probabilities over the score range (score-token judge), low to high.
        expected: the expected score under ``distribution`` (score-token judge).
    """

    dimension: str
    score: int | None
    reasoning: str = ""
    raw: str = ""
    invalid_reason: str | None = None
    sub_scores: tuple[int, ...] | None = None
    distribution: tuple[float, ...] | None = None
    expected: float | None = None

    def __post_init__(self) -> None:
        if (self.score is None) == (self.invalid_reason is None):
            raise ValueError("a verdict has a score or an invalid_reason, exactly one of them")

    @property
    def valid(self) -> bool:
        return self.score is not None

    @classmethod
    def invalid(cls, dimension: str, reason: str, raw: str = "", reasoning: str = "") -> Verdict:
        return cls(dimension=dimension, score=None, raw=raw, reasoning=reasoning, invalid_reason=reason)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; the wire format of `firm score` and `firm serve`."""
        out: dict[str, object] = {
            "dimension": self.dimension,
            "score": self.score,
            "valid": self.valid,
            "reasoning": self.reasoning,
            "raw": self.raw,
        }
        if self.invalid_reason is not None:
            out["invalid_reason"] = self.invalid_reason
        if self.sub_scores is not None:
            out["sub_scores"] = list(self.sub_scores)
        if self.distribution is not None:
            out["distribution"] = list(self.distribution)
        if self.expected is not None:
            out["expected"] = self.expected
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Verdict:
        """Inverse of :meth:`to_dict`."""
        sub = data.get("sub_scores")
        dist = data.get("distribution")
        score = data.get("score")
        expected = data.get("expected")
        return cls(
            dimension=str(data["dimension"]),
            score=int(score) if isinstance(score, int) else None,
            reasoning=str(data.get("reasoning", "")),
            raw=str(data.get("raw", "")),
            invalid_reason=None if isinstance(score, int) else str(data.get("invalid_reason") or "invalid"),
            sub_scores=tuple(int(s) for s in sub) if isinstance(sub, list) else None,
            distribution=tuple(float(p) for p in dist) if isinstance(dist, list) else None,
            expected=float(expected) if isinstance(expected, (int, float)) else None,
        )


class Critic(ABC):
    """Base class of every critic: judges a batch of requests. Batching is the critic's job.

    Subclasses take their settings as typed ``__init__`` arguments (so YAML configs and ``--help`` work) and set
    ``score_range`` when they answer on another scale than FIRM's 1-5.
    """

    score_range: ScoreRange = FIRM_RANGE

    #: ``__init__`` arguments that change how requests travel (connections, timeouts, retries, credentials), never
    #: what a verdict says. Verdict caches leave them out of their keys, so that retuning them reuses the verdicts.
    transport_settings: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """Judge every request; one verdict per request, in order. Never raises for a malformed answer."""

    def close(self) -> None:  # noqa: B027 - optional hook, most critics hold nothing to release
        """Release held resources (connections, worker threads)."""

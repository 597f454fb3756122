"""The curation contract: items in, stage results out, and the annotators that answer the stages.

An *item* is one input to label: an edit (:class:`EditItem`: instruction, source image, edited image) or a generation
(:class:`GenItem`: prompt, image). An *annotator* answers the pipelines' stages for a batch of items at a time:

===================  =============================================  ===========================================
stage                method                                         result
===================  =============================================  ===========================================
describe (edit 1)    :meth:`Annotator.describe`                     :class:`DifferenceReport`
score (edit 2)       :meth:`Annotator.score_edit`                   :class:`Label` (execution or consistency)
plan (gen 1)         :meth:`Annotator.plan`                         :class:`Plan`
score (gen 2)        :meth:`Annotator.score_instruction`            :class:`Label` (instruction)
quality (gen, opt.)  :meth:`Annotator.score_quality`                :class:`Label` (quality, three sub-scores)
rewrite (balancing)  :meth:`Annotator.rewrite`                      a new instruction (str)
===================  =============================================  ===========================================

Every stage returns one result per item, in order; an answer that cannot be used is a :class:`Rejected` carrying
the reason and the raw text, never a guess. The pipeline retries rejected items (``attempt`` counts the tries, so
a sampling annotator can vary its answer) and records what is still rejected after the last try.

An annotator that cannot answer a stage (a text-only planner asked to score an image) raises
:class:`StageUnsupported` from it; the pipeline says which ``--annotator`` / ``--planner`` to give instead.
Annotators register under the ``firm.annotators`` entry-point group.
"""

from __future__ import annotations

import hashlib
from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from PIL import Image

from firm.critics.answer import QUALITY_ASPECTS
from firm.critics.base import FIRM_RANGE
from firm.errors import InputError

__all__ = [
    "DETAIL_CATEGORIES",
    "PLAN_GROUPS",
    "Annotator",
    "CurationError",
    "DifferenceReport",
    "EditItem",
    "GenItem",
    "Item",
    "Label",
    "Plan",
    "PlanItem",
    "Rejected",
    "StageUnsupported",
    "content_hash",
]

#: The detailed part of a difference report, in report order (FIRM's categories of detailed change).
DETAIL_CATEGORIES = (
    "quantity",
    "colour",
    "shape and form",
    "size",
    "position and layout",
    "texture and surface",
    "overall tone",
)

#: The groups of an analysis plan, in plan order; negative constraints only when the prompt has some.
PLAN_GROUPS = ("main subjects/elements", "attributes", "style/composition", "negative constraints")

Stage = Literal["describe", "score", "plan", "quality", "rewrite"]


@dataclass(frozen=True, eq=False)
class EditItem:
    """One edit to label.

    Attributes:
        key: unique id of the input (no dots: it becomes part of WebDataset keys).
        instruction: the edit instruction.
        source: the source image, RGB.
        image: the edited image, RGB.
        metadata: the input's own fields passed through untouched (a world's references, a dataset's ids); an
            annotator may read them (ShapesWorld's exact annotator finds its scene graphs there).
        origin: where the item was read, e.g. ``"pairs.jsonl:12"``.
    """

    key: str
    instruction: str
    source: Image.Image
    image: Image.Image
    metadata: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""

    task: ClassVar[str] = "edit"

    @property
    def text(self) -> str:
        return self.instruction


@dataclass(frozen=True, eq=False)
class GenItem:
    """One generation to label: the prompt and the generated image (fields as :class:`EditItem`)."""

    key: str
    prompt: str
    image: Image.Image
    metadata: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""

    task: ClassVar[str] = "gen"

    @property
    def text(self) -> str:
        return self.prompt


Item = EditItem | GenItem


def content_hash(item: Item) -> str:
    """A hash of what an item shows: task, text and pixels (not its key, origin or metadata).

    Two inputs with the same hash are the same labelling problem; the pipelines label only the first.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(item.task.encode())
    h.update(b"\0" + item.text.encode("utf-8") + b"\0")
    for image in (item.source, item.image) if isinstance(item, EditItem) else (item.image,):
        rgb = image.convert("RGB")
        h.update(f"{rgb.width}x{rgb.height}\0".encode())
        h.update(rgb.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Rejected:
    """A stage answer that cannot be used.

    Attributes:
        reason: why, for people (``"no JSON object in the answer"``).
        raw: the annotator's raw answer, kept for audit (empty when there was none).
    """

    reason: str
    raw: str = ""

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "raw": self.raw}


class CurationError(InputError):
    """A curation run that cannot go on as configured; the message says what to change."""


class StageUnsupported(NotImplementedError):
    """An annotator was asked for a stage it cannot answer."""


@dataclass(frozen=True)
class DifferenceReport:
    """Stage 1 of the edit pipeline: what differs between the source and the edited image, judged by nobody.

    Attributes:
        obvious: one line per subject that visibly changed, how it looks in each image (no comparison, no verdict).
        detailed: every change, small ones included, under the :data:`DETAIL_CATEGORIES` (all present, maybe empty).
    """

    obvious: tuple[str, ...]
    detailed: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DifferenceReport:
        """Read ``{"obvious": [...], "detailed": {category: [...]}}``; unknown categories are refused.

        Raises:
            ValueError: naming what is missing or of the wrong type.
        """
        obvious = data.get("obvious")
        detailed = data.get("detailed")
        if not isinstance(obvious, list) or not all(isinstance(line, str) for line in obvious):
            raise ValueError("'obvious' must be a list of strings")
        if not isinstance(detailed, Mapping):
            raise ValueError("'detailed' must be an object of category -> list of strings")
        unknown = sorted(set(detailed) - set(DETAIL_CATEGORIES))
        if unknown:
            raise ValueError(f"unknown detail categories {unknown}; use {', '.join(DETAIL_CATEGORIES)}")
        out: dict[str, tuple[str, ...]] = {}
        for category in DETAIL_CATEGORIES:
            lines = detailed.get(category, [])
            if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
                raise ValueError(f"detail category {category!r} must be a list of strings")
            out[category] = tuple(lines)
        return cls(tuple(obvious), out)

    def to_json(self) -> dict[str, Any]:
        """The report as stored in a sample's evidence, ShapesWorld's oracle format."""
        return {
            "obvious": list(self.obvious),
            "detailed": {c: list(self.detailed.get(c, ())) for c in DETAIL_CATEGORIES},
        }

    def text(self) -> str:
        """The report as the scoring prompt shows it."""
        lines = ["Obvious changes:"]
        lines += [f"- {line}" for line in self.obvious] or ["- none"]
        lines.append("Detailed changes:")
        for category in DETAIL_CATEGORIES:
            found = self.detailed.get(category, ())
            lines.append(f"- {category}: {'; '.join(found) if found else 'none'}")
        return "\n".join(lines)

    @property
    def empty(self) -> bool:
        return not self.obvious and not any(self.detailed.values())


@dataclass(frozen=True)
class PlanItem:
    """One yes/no question of an analysis plan, under one of :data:`PLAN_GROUPS`."""

    group: str
    question: str


@dataclass(frozen=True)
class Plan:
    """Stage 1 of the generation pipeline: the prompt as a numbered checklist of yes/no questions."""

    items: tuple[PlanItem, ...]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> Plan:
        """Read ``[{"group", "question", ...}, ...]`` (ShapesWorld's oracle format; other keys are ignored).

        Raises:
            ValueError: for an empty plan or an item without a group or question.
        """
        items = []
        for i, entry in enumerate(data, 1):
            group, question = entry.get("group"), entry.get("question")
            if not isinstance(group, str) or not isinstance(question, str) or not question.strip():
                raise ValueError(f"plan item {i} needs a 'group' and a non-empty 'question'")
            items.append(PlanItem(group, question.strip()))
        if not items:
            raise ValueError("a plan needs at least one question")
        return cls(tuple(items))

    def to_json(self) -> list[dict[str, Any]]:
        return [{"id": i, "group": item.group, "question": item.question} for i, item in enumerate(self.items, 1)]

    def text(self) -> str:
        """The plan as a planner writes it: group headings, then the numbered questions."""
        lines: list[str] = []
        for i, item in enumerate(self.items, 1):
            heading = f"{item.group[:1].upper()}{item.group[1:]}:"
            if heading not in lines:
                lines.append(heading)
            lines.append(f"{i}. {item.question}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Label:
    """A scored judgement that becomes one critic sample.

    Attributes:
        dimension: execution, consistency, instruction or quality.
        score: the integer score, 1-5.
        answer: the critic's target answer in firm's format (:func:`firm.critics.answer.format_answer`).
        sub_scores: quality only: aesthetics, technical and structure, whose min is ``score``.
        evidence: what the annotator adds to the sample's evidence (e.g. the plan with its per-item answers).
        raw: the annotator's raw answer, for audit.
    """

    dimension: str
    score: int
    answer: str
    sub_scores: tuple[int, ...] | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    raw: str = ""

    def __post_init__(self) -> None:
        if self.score not in FIRM_RANGE:
            raise ValueError(f"label score {self.score!r} is not an integer in 1-5")
        if self.dimension == "quality":
            subs = self.sub_scores
            if subs is None or len(subs) != len(QUALITY_ASPECTS) or min(subs) != self.score:
                raise ValueError(f"a quality label needs three sub-scores whose min is the score, got {subs}")


class Annotator(ABC):  # noqa: B024 - every stage is optional; an annotator overrides those it answers
    """Base of every annotator. Override the stages you answer; the others raise :class:`StageUnsupported`.

    Every stage takes a batch and returns one result per item, in order: the result, or :class:`Rejected`.
    ``attempt`` is 0 on the first try and counts the pipeline's retries of rejected items.

    Attributes:
        name: the annotator's registered name (``shapes``, ``mllm``, ``planner``), for the manifest.
    """

    name: ClassVar[str] = "annotator"

    def describe(self, items: Sequence[EditItem], attempt: int = 0) -> list[DifferenceReport | Rejected]:
        """Stage 1 of the edit pipeline: the difference report of each edit."""
        raise StageUnsupported(f"the {self.name!r} annotator cannot describe edits")

    def score_edit(
        self, items: Sequence[EditItem], dimension: str, reports: Sequence[DifferenceReport], attempt: int = 0
    ) -> list[Label | Rejected]:
        """Stage 2 of the edit pipeline: score ``dimension`` (execution or consistency) given each report."""
        raise StageUnsupported(f"the {self.name!r} annotator cannot score edits")

    def plan(self, items: Sequence[GenItem], attempt: int = 0) -> list[Plan | Rejected]:
        """Stage 1 of the generation pipeline: the analysis plan of each prompt (the image is not looked at)."""
        raise StageUnsupported(f"the {self.name!r} annotator cannot write analysis plans")

    def score_instruction(
        self, items: Sequence[GenItem], plans: Sequence[Plan], attempt: int = 0
    ) -> list[Label | Rejected]:
        """Stage 2 of the generation pipeline: instruction following, checked item by item against each plan."""
        raise StageUnsupported(f"the {self.name!r} annotator cannot score generations")

    def score_quality(self, items: Sequence[GenItem], attempt: int = 0) -> list[Label | Rejected]:
        """The optional quality pass: the three quality sub-scores of each generated image."""
        raise StageUnsupported(f"the {self.name!r} annotator cannot score image quality")

    def rewrite(self, items: Sequence[EditItem], attempt: int = 0) -> list[str | Rejected]:
        """Low-score balancing: an instruction that no longer matches the edit that was made."""
        raise StageUnsupported(f"the {self.name!r} annotator cannot rewrite instructions")

    def usage(self) -> Mapping[str, int]:
        """Running totals of what the annotator spent (``prompt_tokens``, ``completion_tokens``, ``requests``), for
        progress bars and the manifest; empty for annotators that spend no tokens."""
        return {}

    def describe_self(self) -> dict[str, Any]:
        """What the manifest records about this annotator: its name, settings and template versions."""
        return {"name": self.name}

    def identity(self) -> dict[str, Any]:
        """What decides the labels (the model, templates, budgets), not how they travel (URLs, concurrency, rate
        limits): a rerun into the same output folder must have the same identity. :meth:`describe_self` by default."""
        return self.describe_self()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release held resources (connections, models)."""

"""The critic-sample schema: one scored judgement of an edit or a generation, and its WebDataset form.

A critic sample is what critic SFT trains on and what the bench reader scores against: the text (edit instruction or
generation prompt), the image (and the source image for edits), the dimension judged, the ground-truth score, the
target answer in firm's answer format, plus the curation evidence and where the sample came from.

On disk a sample is one WebDataset key with these members::

    <key>.src.png   the source image (edits only)
    <key>.out.png   the edited or generated image
    <key>.json      every other field, as one UTF-8 JSON object

Example:
    >>> d = to_wds(sample)  # {"__key__": ..., "out.png": b"...", "json": b"..."}
    >>> from_wds(d) == sample  # images compare by pixels, see CriticSample.__eq__
    True
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from firm.critics.answer import QUALITY_ASPECTS
from firm.critics.base import DIMENSIONS, FIRM_RANGE, Task

#: Member names read for each image, in order of preference (PNG is what firm writes; JPEG is accepted).
IMAGE_MEMBERS = {"out": ("out.png", "out.jpg", "out.jpeg"), "src": ("src.png", "src.jpg", "src.jpeg")}


#: What can be wrong with a stored sample, as :attr:`SampleError.kind` names it.
SAMPLE_ERROR_KINDS = ("missing_member", "bad_json", "corrupt_image", "bad_score", "invalid_sample")


class SampleError(ValueError):
    """A stored critic sample that cannot be read: names the sample key and the problem.

    Attributes:
        key: the sample's key (``"<no key>"`` when it has none).
        problem: what is wrong, for people.
        kind: what is wrong, for programs: one of :data:`SAMPLE_ERROR_KINDS` (counters and metrics use it).
    """

    def __init__(self, key: str, problem: str, kind: str = "invalid_sample") -> None:
        super().__init__(f"sample {key!r}: {problem}")
        self.key = key
        self.problem = problem
        self.kind = kind


@dataclass(frozen=True, eq=False)
class CriticSample:
    """One scored judgement: what a critic sees, the score it should give and the answer it should write.

    Attributes:
        key: unique sample id; WebDataset forbids dots in keys, so none here either.
        task: "edit" or "gen"; must match the dimension.
        dimension: execution or consistency (edit), instruction or quality (gen).
        text: the edit instruction or the generation prompt.
        image: the edited or generated image.
        source: the source image of an edit; None for generations.
        score: the ground-truth score, an integer 1-5.
        answer: the target critic answer in firm's format (see :func:`firm.critics.answer.format_answer`).
        sub_scores: quality only: aesthetics, technical and structure, whose min is ``score``.
        evidence: curation evidence, ``{"differences": {"obvious": [...], "detailed": {...}}}`` for edits or
            ``{"plan": [...]}`` for generations.
        provenance: where the sample came from, e.g. ``{"world": "shapesworld", "seed": 3, "split": "train"}``.

    Raises:
        ValueError: when the fields contradict each other (see :meth:`problems`).
    """

    key: str
    task: Task
    dimension: str
    text: str
    image: Image.Image
    source: Image.Image | None
    score: int
    answer: str
    sub_scores: tuple[int, ...] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"sample {self.key!r}: {problems[0]}")

    def problems(self) -> list[str]:
        """Everything wrong with this sample's fields, most basic first; empty for a valid sample."""
        out: list[str] = []
        if not self.key or "." in self.key:
            out.append("key must be a non-empty string without dots")
        if self.dimension not in DIMENSIONS:
            out.append(f"unknown dimension {self.dimension!r}; choose one of {', '.join(DIMENSIONS)}")
        elif DIMENSIONS[self.dimension] != self.task:
            out.append(f"task {self.task!r} does not match dimension {self.dimension!r}")
        if self.score not in FIRM_RANGE:
            out.append(f"score {self.score!r} is not an integer in 1-5")
        if self.task == "edit" and self.source is None:
            out.append("an edit sample needs the source image")
        if self.task == "gen" and self.source is not None:
            out.append("a generation sample has no source image")
        if self.dimension == "quality":
            subs = self.sub_scores
            if subs is None or len(subs) != len(QUALITY_ASPECTS) or any(s not in FIRM_RANGE for s in subs):
                out.append(f"quality needs three sub-scores in 1-5, got {subs!r}")
            elif min(subs) != self.score:
                out.append(f"quality score {self.score} is not the min of its sub-scores {list(subs)}")
        elif self.sub_scores is not None:
            out.append(f"only quality samples carry sub-scores, not {self.dimension}")
        return out

    def metadata(self) -> dict[str, Any]:
        """Every non-image field, JSON-ready (what the ``json`` member holds)."""
        return {
            "key": self.key,
            "task": self.task,
            "dimension": self.dimension,
            "text": self.text,
            "score": self.score,
            "answer": self.answer,
            "sub_scores": None if self.sub_scores is None else list(self.sub_scores),
            "evidence": self.evidence,
            "provenance": self.provenance,
        }

    def __eq__(self, other: object) -> bool:
        # PIL images compare by object identity under the dataclass default; samples are equal when their pixels are.
        if not isinstance(other, CriticSample):
            return NotImplemented
        return (
            self.metadata() == other.metadata() and _same(self.image, other.image) and _same(self.source, other.source)
        )

    __hash__ = None  # type: ignore[assignment]  # equal by pixels, so not hashable


def _same(a: Image.Image | None, b: Image.Image | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def encode_png(image: Image.Image, compress_level: int = 1) -> bytes:
    """PNG bytes of an image; level 1 because shards are written often and read once per epoch."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def to_wds(sample: CriticSample, compress_level: int = 1) -> dict[str, Any]:
    """The WebDataset sample dict of a critic sample: ``__key__``, ``src.png`` (edits), ``out.png`` and ``json``."""
    out: dict[str, Any] = {"__key__": sample.key}
    if sample.source is not None:
        out["src.png"] = encode_png(sample.source, compress_level)
    out["out.png"] = encode_png(sample.image, compress_level)
    out["json"] = json.dumps(sample.metadata(), ensure_ascii=False, sort_keys=True).encode("utf-8")
    return out


def from_wds(d: Mapping[str, Any]) -> CriticSample:
    """Read a critic sample from a WebDataset sample dict (raw bytes, or already decoded by a ``decode`` stage).

    Raises:
        SampleError: naming the key and the problem: a missing member, an undecodable image or JSON, an unknown
            dimension, an out-of-range score or fields that contradict each other.
    """
    key = d.get("__key__")
    if not isinstance(key, str) or not key:
        raise SampleError("<no key>", "missing __key__")
    meta = _json_member(key, d)
    dimension = meta.get("dimension")
    if dimension not in DIMENSIONS:
        raise SampleError(key, f"unknown dimension {dimension!r}; choose one of {', '.join(DIMENSIONS)}")
    score = meta.get("score")
    if not isinstance(score, int) or score not in FIRM_RANGE:
        raise SampleError(key, f"score {score!r} is not an integer in 1-5", kind="bad_score")
    task = DIMENSIONS[dimension]
    image = _image_member(key, d, "out")
    source = _image_member(key, d, "src") if task == "edit" else None
    subs = meta.get("sub_scores")
    if subs is not None and not (isinstance(subs, list) and all(isinstance(s, int) for s in subs)):
        raise SampleError(key, f"sub_scores must be a list of integers, got {subs!r}")
    for name, kind in (("text", str), ("answer", str), ("evidence", dict), ("provenance", dict)):
        if not isinstance(meta.get(name, kind()), kind):
            raise SampleError(key, f"field {name!r} must be a {kind.__name__}")
    try:
        return CriticSample(
            key=key,
            task=task,
            dimension=dimension,
            text=meta.get("text", ""),
            image=image,
            source=source,
            score=score,
            answer=meta.get("answer", ""),
            sub_scores=None if subs is None else tuple(subs),
            evidence=meta.get("evidence", {}),
            provenance=meta.get("provenance", {}),
        )
    except ValueError as err:
        raise SampleError(key, str(err).split(": ", 1)[-1]) from None


def _json_member(key: str, d: Mapping[str, Any]) -> dict[str, Any]:
    if "json" not in d:
        raise SampleError(key, "missing member 'json'", kind="missing_member")
    raw = d["json"]
    if isinstance(raw, dict):
        return raw
    try:
        meta = json.loads(raw)
    except (ValueError, TypeError) as err:
        raise SampleError(key, f"member 'json' is not valid JSON ({err})", kind="bad_json") from None
    if not isinstance(meta, dict):
        raise SampleError(key, f"member 'json' holds a {type(meta).__name__}, not an object", kind="bad_json")
    return meta


def _image_member(key: str, d: Mapping[str, Any], role: str) -> Image.Image:
    names = IMAGE_MEMBERS[role]
    name = next((n for n in names if n in d), None)
    if name is None:
        raise SampleError(key, f"missing member {names[0]!r}", kind="missing_member")
    value = d[name]
    if isinstance(value, Image.Image):
        return value
    try:
        image = Image.open(io.BytesIO(value))
        image.load()
    except Exception as err:  # PIL raises several unrelated types for corrupt data
        problem = f"member {name!r} is not a decodable image ({type(err).__name__}: {err})"
        raise SampleError(key, problem, kind="corrupt_image") from None
    return image

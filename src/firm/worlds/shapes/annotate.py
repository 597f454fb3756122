"""ShapesWorld's exact annotator: every curation stage answered from the scene graph.

An item written by ``firm world pairs`` names its ShapesWorld case in ``metadata["shapesworld"]``
(``{"split", "seed", "size", "index", "stream"}``; the stream is ``edit`` / ``gen`` for the natural cases, or a
dimension with its ``score`` for the steered cases of that dimension's critic samples). When the item's images are
exactly the renders of that case (pixel for pixel), every stage is answered from the case itself, in the oracle's
words: the difference report, the execution and consistency answers, the analysis plan with its answers, the
quality sub-scores. These are the labels ShapesWorld's own samples carry, so a curation run over them can be
checked against the truth.

An item without that metadata, or whose images were changed (re-encoded, retouched), is read back from its pixels
the way :class:`~firm.worlds.shapes.judge.ShapesWorldJudge` reads it (``from_pixels=True``, the default), or
refused (``from_pixels=False``). Nothing is guessed: an image that cannot be read exactly, or text outside
ShapesWorld's grammar, gives :class:`~firm.curation.base.Rejected` with the reason.

An edit whose instruction is not its case's (rewritten for low-score balancing) is scored for the instruction it
has: the instruction is bound to the source scene and the edit judged again on the same two scenes
(:func:`~firm.worlds.shapes.compare.judge_edit`). :meth:`ShapesWorldAnnotator.rewrite` draws such instructions:
new operations on the source scene, kept only when the edit that was made scores 2 or less on them.

Registered as the ``shapes`` annotator (``firm.annotators`` entry point).
"""

from __future__ import annotations

import hashlib
import random
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from firm.critics.answer import format_answer
from firm.critics.base import DIMENSIONS, FIRM_RANGE
from firm.curation.base import Annotator, DifferenceReport, EditItem, GenItem, Label, Plan, PlanItem, Rejected
from firm.worlds.shapes.compare import _aligned, judge_edit, match
from firm.worlds.shapes.degrade import Degradation
from firm.worlds.shapes.edit import OP_COUNTS, EditCase, sample_ops
from firm.worlds.shapes.flaws import read_quality
from firm.worlds.shapes.gen import GenCase
from firm.worlds.shapes.grammar import GrammarError, instruction_ops, parse_prompt
from firm.worlds.shapes.judge import check_washed_out
from firm.worlds.shapes.ops import join_clauses
from firm.worlds.shapes.oracle import consistency_answer, difference_report, execution_answer
from firm.worlds.shapes.plan import analysis_plan, flaw_reasoning, instruction_answer, quality_answer
from firm.worlds.shapes.read import Unreadable, read_scene
from firm.worlds.shapes.rubric import quality_score
from firm.worlds.shapes.scene import Scene
from firm.worlds.shapes.spec import CATEGORY_TITLES, GenSpec, requirements, score_scene
from firm.worlds.shapes.world import ShapesWorld

__all__ = ["METADATA_KEY", "REWRITE_DRAWS", "REWRITE_MAX_SCORE", "ShapesWorldAnnotator"]

#: Where an item names its ShapesWorld case.
METADATA_KEY = "shapesworld"
#: A rewritten instruction must leave the edit that was made at this execution score or below.
REWRITE_MAX_SCORE = 2
#: Instructions drawn per rewrite attempt before giving up.
REWRITE_DRAWS = 20
#: Items whose readings are kept (the stages of one item run batch by batch, close together).
CACHE_ITEMS = 1024

T = TypeVar("T")
A = TypeVar("A")


@dataclass(frozen=True)
class _EditScenes:
    """The two scenes of an edit: from its ShapesWorld case (``case`` set) or read from the pixels (``case`` None)."""

    source: Scene
    edited: Scene
    case: EditCase | None


class _Rejection(Exception):
    """Internal: a stage cannot answer this item; becomes :class:`Rejected`."""


class _Cache:
    """Per-item results, valid only while the item shows the same pixels (least recently used dropped first).

    An entry remembers its item's images by weak reference and pixel digest: the same image objects hit at once,
    equal pixels hit after a digest, other pixels (a key reused for another picture) build afresh.
    """

    def __init__(self, limit: int = CACHE_ITEMS) -> None:
        self.limit = limit
        self._entries: OrderedDict[tuple[str, ...], tuple[tuple[_Seen, ...], object]] = OrderedDict()

    def get(self, key: tuple[str, ...], images: tuple[Image.Image, ...], build: Callable[[], T]) -> T:
        hit = self._entries.get(key)
        if (
            hit is not None
            and len(hit[0]) == len(images)
            and all(s.shows(i) for s, i in zip(hit[0], images, strict=True))
        ):
            self._entries.move_to_end(key)
            return hit[1]  # type: ignore[return-value]
        value = build()
        self._entries[key] = (tuple(_Seen.of(image) for image in images), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True)
class _Seen:
    """An image as a cache entry remembers it: a weak reference and a digest of its RGB pixels."""

    ref: weakref.ref[Image.Image]
    digest: bytes

    @classmethod
    def of(cls, image: Image.Image) -> _Seen:
        return cls(weakref.ref(image), _digest(image))

    def shows(self, image: Image.Image) -> bool:
        return self.ref() is image or self.digest == _digest(image)


def _digest(image: Image.Image) -> bytes:
    rgb = image.convert("RGB")
    h = hashlib.blake2b(f"{rgb.width}x{rgb.height}".encode(), digest_size=16)
    h.update(rgb.tobytes())
    return h.digest()


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    if a.size != b.size:
        return False
    return a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def _images(item: EditItem | GenItem) -> tuple[Image.Image, ...]:
    return (item.source, item.image) if isinstance(item, EditItem) else (item.image,)


class ShapesWorldAnnotator(Annotator):
    """Answers every curation stage exactly, from ShapesWorld's scene graphs.

    Args:
        from_pixels: read items without a (matching) ShapesWorld case from their pixels, like the ``shapes``
            critic. With False such items are rejected.
        seed: seeds :meth:`rewrite`'s draws (with the item key and the attempt), so reruns rewrite alike.
    """

    name = "shapes"

    def __init__(self, from_pixels: bool = True, seed: int = 0) -> None:
        self.from_pixels = from_pixels
        self.seed = seed
        self._cache = _Cache()

    def describe_self(self) -> dict[str, Any]:
        return {"name": self.name, "from_pixels": self.from_pixels, "seed": self.seed}

    def close(self) -> None:
        self._cache.clear()

    # -- stages --------------------------------------------------------------------------------------------------

    def describe(self, items: Sequence[EditItem], attempt: int = 0) -> list[DifferenceReport | Rejected]:
        return [_answer(self._describe, item) for item in items]

    def score_edit(
        self, items: Sequence[EditItem], dimension: str, reports: Sequence[DifferenceReport], attempt: int = 0
    ) -> list[Label | Rejected]:
        if dimension not in ("execution", "consistency"):
            raise ValueError(f"an edit is scored on execution or consistency, not {dimension!r}")
        return [_answer(lambda item: self._edit_label(item, dimension), item) for item in items]

    def plan(self, items: Sequence[GenItem], attempt: int = 0) -> list[Plan | Rejected]:
        return [_answer(_plan, item.prompt) for item in items]

    def score_instruction(
        self, items: Sequence[GenItem], plans: Sequence[Plan], attempt: int = 0
    ) -> list[Label | Rejected]:
        return [_answer(self._instruction_label, item) for item in items]

    def score_quality(self, items: Sequence[GenItem], attempt: int = 0) -> list[Label | Rejected]:
        return [_answer(self._quality_label, item) for item in items]

    def rewrite(self, items: Sequence[EditItem], attempt: int = 0) -> list[str | Rejected]:
        return [_answer(lambda item: self._rewrite(item, attempt), item) for item in items]

    # -- edits ---------------------------------------------------------------------------------------------------

    def _describe(self, item: EditItem) -> DifferenceReport:
        scenes = self._edit_scenes(item)
        if scenes.case is not None:
            source, edited = scenes.case.source, scenes.case.edited
        else:
            # Read scenes carry no ids: pair the shapes as the judge does (with the instruction's operations when
            # it reads, so an added shape is the one asked for; the report names new shapes by kind either way).
            try:
                edited = self._edit_case(item).edited
            except _Rejection:
                edited = _aligned(scenes.source, scenes.edited, match(scenes.source, scenes.edited))
            source = scenes.source
        return DifferenceReport.from_json(difference_report(source, edited))

    def _edit_label(self, item: EditItem, dimension: str) -> Label:
        case = self._edit_case(item)
        if dimension == "execution":
            score, answer = case.execution, execution_answer(case)
        else:
            score, answer = case.consistency, consistency_answer(case)
        return Label(dimension, score, answer, raw=answer)

    def _edit_case(self, item: EditItem) -> EditCase:
        """The edit case of ``item``'s own instruction: its ShapesWorld case, or the edit judged for that text."""
        scenes = self._edit_scenes(item)
        if scenes.case is not None and item.instruction == scenes.case.instruction:
            return scenes.case
        key = ("edit-case", item.key, item.instruction)
        return _unwrap(self._cache.get(key, _images(item), lambda: _attempt(lambda: _judged(scenes, item.instruction))))

    def _edit_scenes(self, item: EditItem) -> _EditScenes:
        def build() -> _EditScenes | _Rejection:
            try:
                return self._find_edit_scenes(item)
            except _Rejection as err:
                return err

        return _unwrap(self._cache.get(("edit", item.key), _images(item), build))

    def _find_edit_scenes(self, item: EditItem) -> _EditScenes:
        world, index, why = _world_of(item)
        if world is not None:
            case = _case_of(world, item, index)
            assert isinstance(case, EditCase)
            if _same_pixels(item.source, world.render(case.source)) and _same_pixels(
                item.image, world.render(case.edited)
            ):
                return _EditScenes(case.source, case.edited, case)
            why = f"its images are not the renders of ShapesWorld edit case {index} (re-encoded or changed?)"
        self._check_pixels_allowed(why)
        try:
            # as the judge reads an edit: colours exact (a fill read only as seen would count as a new shade)
            source = read_scene(item.source)
            _sound(source.reasons(exact_colours=True), "source")
            edited = read_scene(item.image, priors=source.scene.shapes)
            _sound(edited.reasons(exact_colours=True), "edited")
        except Unreadable as err:
            raise _Rejection(str(err)) from None
        return _EditScenes(source.scene, edited.scene, None)

    def _rewrite(self, item: EditItem, attempt: int) -> str:
        scenes = self._edit_scenes(item)
        source = scenes.source
        for draw in range(REWRITE_DRAWS):
            rng = random.Random(self._rewrite_seed(item.key, attempt, draw))
            ops = sample_ops(source, rng.choices([n for n, _ in OP_COUNTS], [w for _, w in OP_COUNTS])[0], rng)
            if ops is None:
                continue
            text = join_clauses([op.clause(rng) for op in ops], rng)
            if text == item.instruction:
                continue
            try:
                case = _judged(scenes, text)
            except _Rejection:  # a description that reads two ways on this scene
                continue
            if case.execution <= REWRITE_MAX_SCORE:
                return text
        raise _Rejection("no instruction found that this edit fails")

    def _rewrite_seed(self, key: str, attempt: int, draw: int) -> int:
        digest = hashlib.blake2b(f"shapes-rewrite/{self.seed}/{key}/{attempt}/{draw}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big")

    # -- generations ---------------------------------------------------------------------------------------------

    def _instruction_label(self, item: GenItem) -> Label:
        key = ("instruction", item.key, item.prompt)
        case = _unwrap(self._cache.get(key, _images(item), lambda: _attempt(lambda: self._instruction_case(item))))
        answer = instruction_answer(case)
        return Label(
            "instruction", case.instruction, answer, evidence={"plan": analysis_plan(case.answers)}, raw=answer
        )

    def _instruction_case(self, item: GenItem) -> GenCase:
        case = self._gen_case(item)
        if case is not None and item.prompt == case.prompt:
            return case
        spec = _parse_prompt(item.prompt)
        if case is not None:  # another prompt for the same picture: its checklist on the case's scene
            score, answers = score_scene(spec, case.scene)
            return GenCase(spec, item.prompt, case.scene, case.degradation, tuple(answers), (), score)
        try:
            reading = read_scene(item.image)
            _sound(reading.reasons(whole=True), "generated")  # as the shapes critic reads a generation
            score, answers = score_scene(spec, reading.scene)
            check_washed_out(spec, reading, score)
        except Unreadable as err:
            raise _Rejection(str(err)) from None
        return GenCase(spec, item.prompt, reading.scene, Degradation(), tuple(answers), (), score)

    def _quality_label(self, item: GenItem) -> Label:
        found = self._cache.get(("quality", item.key), _images(item), lambda: _attempt(lambda: self._quality(item)))
        return _unwrap(found)

    def _quality(self, item: GenItem) -> Label:
        case = self._gen_case(item)
        evidence: dict[str, Any] = {}
        if case is not None:
            answer = quality_answer(case)
            degradation = case.degradation
            evidence["plan"] = analysis_plan(case.answers)  # as ShapesWorld's own quality samples keep it
        else:
            try:
                reading = read_quality(item.image)
            except Unreadable as err:
                raise _Rejection(str(err)) from None
            if not reading.broken_exact:
                raise _Rejection(f"how badly shapes are broken is not read exactly: {reading.broken_reason}")
            degradation = reading.degradation
            score = quality_score(degradation.sub_scores)
            answer = format_answer("quality", score, flaw_reasoning(degradation), sub_scores=degradation.sub_scores)
        return Label(
            "quality",
            quality_score(degradation.sub_scores),
            answer,
            sub_scores=degradation.sub_scores,
            evidence={**evidence, "degradation": degradation.active},
            raw=answer,
        )

    def _gen_case(self, item: GenItem) -> GenCase | None:
        """The item's ShapesWorld case when its image is exactly that case's; None to read the pixels."""

        def build() -> GenCase | _Rejection | None:
            world, index, why = _world_of(item)
            if world is not None:
                case = _case_of(world, item, index)
                assert isinstance(case, GenCase)
                if _same_pixels(item.image, world.gen_image(case)):
                    return case
                why = f"its image is not the render of ShapesWorld generation case {index} (re-encoded or changed?)"
            try:
                self._check_pixels_allowed(why)
            except _Rejection as err:
                return err
            return None

        return _unwrap(self._cache.get(("gen", item.key), _images(item), build))

    def _check_pixels_allowed(self, why: str) -> None:
        if not self.from_pixels:
            raise _Rejection(f"the item has no ShapesWorld case: {why}")


# -- helpers ---------------------------------------------------------------------------------------------------------


def _answer(run: Callable[[A], T], arg: A) -> T | Rejected:
    try:
        return run(arg)
    except _Rejection as err:
        return Rejected(str(err))


def _attempt(run: Callable[[], T]) -> T | _Rejection:
    """``run()``, or the rejection it raised (kept so that a cached refusal is not worked out again)."""
    try:
        return run()
    except _Rejection as err:
        return err


def _unwrap(found: T | _Rejection) -> T:
    """A cached result, or its refusal raised afresh."""
    if isinstance(found, _Rejection):
        raise _Rejection(str(found))
    return found


def _sound(problems: list[str], name: str) -> None:
    if problems:
        raise _Rejection(f"cannot read the {name} image: {'; '.join(problems)}")


def _parse_prompt(text: str) -> GenSpec:
    try:
        return parse_prompt(text)
    except GrammarError as err:
        raise _Rejection(str(err)) from None


def _plan(prompt: str) -> Plan:
    """The analysis plan of a prompt: its checklist in plan order, as :func:`analysis_plan` lists it."""
    spec = _parse_prompt(prompt)
    return Plan(tuple(PlanItem(CATEGORY_TITLES[req.category], req.question) for req in requirements(spec)))


def _judged(scenes: _EditScenes, instruction: str) -> EditCase:
    """The edit between the two scenes judged for ``instruction``, bound to the source scene."""
    try:
        ops = instruction_ops(instruction, scenes.source)
    except GrammarError as err:
        raise _Rejection(str(err)) from None
    return judge_edit(scenes.source, scenes.edited, ops, instruction).case


def _case_of(world: ShapesWorld, item: EditItem | GenItem, index: int) -> EditCase | GenCase:
    """The case the item's metadata names: a natural ``edit`` / ``gen`` case, or a dimension's steered one."""
    meta = item.metadata[METADATA_KEY]
    return world.case(str(meta["stream"]), index, meta.get("score"))


def _world_of(item: EditItem | GenItem) -> tuple[ShapesWorld | None, int, str]:
    """The world and case index an item's metadata names, or (None, 0, why not)."""
    meta = item.metadata.get(METADATA_KEY) if isinstance(item.metadata, Mapping) else None
    if not isinstance(meta, Mapping):
        return None, 0, f"no metadata[{METADATA_KEY!r}]"
    stream = meta.get("stream")
    if stream != item.task and (stream not in DIMENSIONS or DIMENSIONS[str(stream)] != item.task):
        return (
            None,
            0,
            f"metadata[{METADATA_KEY!r}] names stream {stream!r}, not {item.task!r} or one of its dimensions",
        )
    score = meta.get("score")
    if stream in DIMENSIONS and score is not None and score not in FIRM_RANGE:
        return None, 0, f"metadata[{METADATA_KEY!r}] has a score {score!r} outside 1-5"
    split, seed, size, index = (meta.get(k) for k in ("split", "seed", "size", "index"))
    if not isinstance(split, str) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (seed, size, index)
    ):
        return None, 0, f"metadata[{METADATA_KEY!r}] needs a split (text) and integer seed, size and index"
    assert isinstance(seed, int) and isinstance(size, int) and isinstance(index, int)
    if index < 0:
        return None, 0, f"metadata[{METADATA_KEY!r}] has a negative index {index}"
    try:
        return ShapesWorld(size, split, seed), index, ""
    except ValueError as err:
        return None, 0, f"metadata[{METADATA_KEY!r}]: {err}"

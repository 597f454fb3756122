"""The ShapesWorld judge: exact verdicts for any image, by reading its scene back from the pixels.

For a request it reads the scene(s) (``read``), reads the text with ShapesWorld's grammar (``grammar``), and applies
ShapesWorld's own rubric to what it found, answering in the oracle's words and format:

- execution, consistency: the edit is rebuilt from the two readings (``compare``) and scored like a generated case;
- instruction: the prompt's checklist answered on the read scene;
- quality: the severity of each degradation is read back (``flaws.read_quality``): the scene is read under the
  degradations, rendered clean, and the pixel degradations are fitted by synthesis. Broken shapes are matched
  against every broken outline ShapesWorld draws (``broken``); where that match is not certain the strict judge
  refuses, and the lenient one uses the best match.

It never guesses: an image it cannot read, a shape no ShapesWorld outline explains, or text outside ShapesWorld's
grammar gives an invalid verdict saying why. Registered as the ``shapes`` critic::

    firm score --critic shapes --input edits.jsonl --out verdicts.jsonl
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from firm.critics.answer import format_answer
from firm.critics.base import Critic, JudgeRequest, Verdict
from firm.critics.parsing import NO_SCORE
from firm.worlds.shapes.compare import judge_edit
from firm.worlds.shapes.degrade import Degradation
from firm.worlds.shapes.flaws import read_quality
from firm.worlds.shapes.gen import GenCase
from firm.worlds.shapes.grammar import GrammarError, instruction_ops, parse_prompt
from firm.worlds.shapes.oracle import consistency_reasoning, execution_reasoning
from firm.worlds.shapes.plan import flaw_reasoning, instruction_reasoning
from firm.worlds.shapes.read import SceneReading, ShapeReading, Unreadable, read_scene
from firm.worlds.shapes.rubric import quality_score
from firm.worlds.shapes.scene import COLOURS, Scene
from firm.worlds.shapes.spec import GenSpec, score_scene


class ShapesWorldJudge(Critic):
    """Judges ShapesWorld edits and generations exactly, from the pixels and the text alone.

    Args:
        strict: refuse (invalid verdict) when any shape of a reading is poorly explained. With False, execution,
            consistency and instruction are judged on the shapes as read, poor fits included, and quality on an
            estimate of the broken-shape severity.
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        return [self._judge_one(request) for request in requests]

    def _judge_one(self, request: JudgeRequest) -> Verdict:
        try:
            if request.dimension in ("execution", "consistency"):
                return self._edit(request)
            if request.dimension == "instruction":
                return self._instruction(request)
            return self._quality(request)
        except (Unreadable, GrammarError) as err:
            # counted under the shared category of answers without a score; the rest says why
            return Verdict.invalid(request.dimension, f"{NO_SCORE}: {err}")

    def _read(
        self,
        image_name: str,
        request: JudgeRequest,
        exact_colours: bool = False,
        whole: bool = False,
        **kwargs: object,
    ) -> SceneReading:
        image = request.source if image_name == "source" else request.image
        assert image is not None
        reading = read_scene(image, **kwargs)  # type: ignore[arg-type]
        problems = reading.reasons(exact_colours, whole)
        if problems and self.strict:
            raise Unreadable(f"cannot read the {image_name} image: {'; '.join(problems)}")
        return reading

    def _edit(self, request: JudgeRequest) -> Verdict:
        # An edit compares colours between two readings, so a fill read only as seen would count as a new shade.
        source = self._read("source", request, exact_colours=True)
        edited = self._read("edited", request, exact_colours=True, priors=source.scene.shapes)
        ops = instruction_ops(request.text, source.scene)
        case = judge_edit(source.scene, edited.scene, ops, request.text).case
        if request.dimension == "execution":
            reasoning, score = execution_reasoning(case), case.execution
        else:
            reasoning, score = consistency_reasoning(case), case.consistency
        return Verdict(request.dimension, score, reasoning, format_answer(request.dimension, score, reasoning))

    def _instruction(self, request: JudgeRequest) -> Verdict:
        spec = parse_prompt(request.text)
        reading = self._read("generated", request, whole=True)
        scene = reading.scene
        score, answers = score_scene(spec, scene)
        if self.strict:
            check_washed_out(spec, reading, score)
            check_background(spec, reading, score)
        case = GenCase(spec, request.text, scene, Degradation(), tuple(answers), (), score)
        lines, summary = instruction_reasoning(case)
        raw = format_answer("instruction", score, summary, analysis=lines)
        return Verdict("instruction", score, summary, raw)

    def _quality(self, request: JudgeRequest) -> Verdict:
        assert request.image is not None
        reading = read_quality(request.image)
        if self.strict and not reading.broken_exact:
            raise Unreadable(f"how badly shapes are broken is not read exactly: {reading.broken_reason}")
        degradation = reading.degradation
        score, reasoning = quality_score(degradation.sub_scores), flaw_reasoning(degradation)
        raw = format_answer("quality", score, reasoning, sub_scores=degradation.sub_scores)
        return Verdict("quality", score, reasoning, raw)


#: Mean difference (levels) above which an outline's stroke colour is not trusted when read as black or as no
#: ShapesWorld colour: compression averages a thin stroke's chroma with the background's, washing a colour toward
#: grey, which reads as black's near shade or as no palette colour. Blur and noise leave strokes within this.
WASHED_OUT = 5.0


def washed_out(reading: ShapeReading) -> bool:
    """Whether an outlined shape's colour may be a washed-out stroke of another palette colour."""
    shape = reading.shape
    return shape.outline and reading.colour_residual > WASHED_OUT and (not reading.palette or shape.colour == "black")


def check_washed_out(spec: GenSpec, reading: SceneReading, score: int) -> None:
    """Raise :class:`Unreadable` when outlines whose colour may be washed out decide the instruction ``score``."""
    washed = [i for i, shape in enumerate(reading.shapes) if washed_out(shape)]
    scene = reading.scene
    if colour_decides(spec, scene, washed, score):
        raise Unreadable(
            "the colour of "
            + ", ".join(f"shape {i} ({scene.shapes[i].colour} {scene.shapes[i].kind})" for i in washed)
            + ", drawn as outlines, is not read exactly and decides the score"
        )


def check_background(spec: GenSpec, reading: SceneReading, score: int) -> None:
    """Raise :class:`Unreadable` when the pixels admit another background that would change the instruction
    ``score``."""
    for other in reading.alternatives:
        if score_scene(spec, replace(reading.scene, background=other))[0] != score:
            seen = reading.scene.background
            raise Unreadable(
                f"the background reads as {seen.colour} ({seen.texture}) or as {other.colour} ({other.texture}), "
                "and which it is decides the score"
            )


def colour_decides(spec: GenSpec, scene: Scene, indices: list[int], score: int) -> bool:
    """Whether other palette colours for shapes ``indices`` (each alone, or all alike) would change the score."""
    trials = [[i] for i in indices] + ([indices] if len(indices) > 1 else [])
    for trial in trials:
        for colour in COLOURS:
            shapes = [replace(s, colour=colour, shade=None) if i in trial else s for i, s in enumerate(scene.shapes)]
            if score_scene(spec, replace(scene, shapes=tuple(shapes)))[0] != score:
                return True
    return False

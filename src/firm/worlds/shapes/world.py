"""ShapesWorld's front door: seeded critic samples for any dimension, split and resolution.

Example:
    >>> world = ShapesWorld(size=64, split="train", seed=0)
    >>> sample = world.sample("execution", index=7, score=3)
    >>> sample.score, sample.text
    (3, 'Make the small red circle blue and remove the square.')  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from firm.critics.base import DIMENSIONS, task_of
from firm.data.schema import CriticSample
from firm.worlds.shapes.balance import UNIFORM, schedule
from firm.worlds.shapes.degrade import apply_pixels
from firm.worlds.shapes.edit import EditCase, build_edit_case, sample_ops
from firm.worlds.shapes.gen import GenCase, build_gen_case
from firm.worlds.shapes.ops import join_clauses
from firm.worlds.shapes.oracle import consistency_answer, difference_report, execution_answer
from firm.worlds.shapes.plan import analysis_plan, instruction_answer, quality_answer
from firm.worlds.shapes.render import MAX_SIZE, MIN_SIZE, render
from firm.worlds.shapes.scene import Scene, sample_scene
from firm.worlds.shapes.spec import prompt_text, sample_spec

#: Splits draw from disjoint seed streams: the split name is part of every sample's seed.
SPLITS = ("train", "val", "test", "bench")
WORLD = "shapesworld"


def sample_seed(split: str, seed: int, stream: str, index: int) -> int:
    """The seed of one sample: a hash of (split, seed, stream, index), so streams never share draws."""
    digest = hashlib.blake2b(f"{WORLD}/{split}/{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class EditPrompt:
    """An RL edit prompt: a source scene and an instruction (nothing executed)."""

    key: str
    source: Scene
    instruction: str


class ShapesWorld:
    """Seeded, exactly scored critic samples.

    Args:
        size: image side in pixels (32-512).
        split: train, val, test or bench; each draws from its own seed stream.
        seed: the base seed; the same (split, seed, dimension, index) always gives the same sample.

    Raises:
        ValueError: for a size outside 32-512 or an unknown split.
    """

    def __init__(self, size: int = 64, split: str = "train", seed: int = 0) -> None:
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(f"image size must be in {MIN_SIZE}-{MAX_SIZE} px, got {size}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.size, self.split, self.seed = size, split, seed

    def rng(self, stream: str, index: int) -> random.Random:
        return random.Random(sample_seed(self.split, self.seed, stream, index))

    def key(self, stream: str, index: int) -> str:
        return f"shapes-{self.split}-{self.seed}-{stream}-{index:07d}"

    def edit_case(self, index: int, execution: int | None = None, consistency: int | None = None) -> EditCase:
        """The edit case of one index, steered to the given scores (None: drawn)."""
        return build_edit_case(self.rng("edit", index), execution, consistency)

    def gen_case(self, index: int, instruction: int | None = None, quality: int | None = None) -> GenCase:
        """The generation case of one index, steered to the given scores (None: drawn)."""
        return build_gen_case(self.rng("gen", index), instruction, quality)

    def sample(self, dimension: str, index: int, score: int | None = None) -> CriticSample:
        """The critic sample of ``dimension`` at ``index``; ``score`` fixes its ground truth (None: drawn).

        Raises:
            ValueError: for an unknown dimension or a score outside 1-5.
        """
        return self.oracle_sample(self.case(dimension, index, score), dimension, index)

    def case(self, stream: str, index: int, score: int | None = None) -> EditCase | GenCase:
        """The case behind a sample: stream ``edit`` / ``gen`` draws :meth:`edit_case` / :meth:`gen_case` (natural
        scores); a dimension draws the case of :meth:`sample` for that dimension, steered to ``score``.

        Raises:
            ValueError: for an unknown stream or a score outside 1-5.
        """
        if stream == "edit":
            return self.edit_case(index)
        if stream == "gen":
            return self.gen_case(index)
        if task_of(stream) == "edit":
            target = {stream: score}
            return build_edit_case(self.rng(stream, index), target.get("execution"), target.get("consistency"))
        rng = self.rng(stream, index)
        if stream == "instruction":
            return build_gen_case(rng, score, None)
        return build_gen_case(rng, None, score or rng.randint(1, 5))

    def targets(self, dimension: str, n: int, histogram: Sequence[float] = UNIFORM) -> list[int]:
        """The ground-truth score of each of ``n`` samples: ``histogram`` met exactly (see ``balance.allocate``)."""
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}; choose one of {', '.join(DIMENSIONS)}")
        return schedule(n, histogram, sample_seed(self.split, self.seed, f"{dimension}/schedule", n))

    def samples(self, dimension: str, n: int, histogram: Sequence[float] = UNIFORM) -> Iterator[CriticSample]:
        """Samples 0..n-1 of ``dimension``, their scores following ``histogram`` exactly."""
        for index, score in enumerate(self.targets(dimension, n, histogram)):
            yield self.sample(dimension, index, score)

    def edit_prompt(self, index: int) -> EditPrompt:
        """An RL edit prompt: a source scene and an instruction of one to three operations."""
        rng = self.rng("edit-prompt", index)
        while True:
            scene = sample_scene(rng, (2, 5))
            ops = sample_ops(scene, rng.choices((1, 2, 3), (0.55, 0.3, 0.15))[0], rng)
            if ops is not None:
                text = join_clauses([op.clause(rng) for op in ops], rng)
                return EditPrompt(self.key("edit-prompt", index), scene, text)

    def gen_prompt(self, index: int) -> str:
        """An RL generation prompt."""
        rng = self.rng("gen-prompt", index)
        return prompt_text(sample_spec(rng), rng)

    def render(self, scene: Scene) -> Image.Image:
        return render(scene, self.size)

    def gen_image(self, case: GenCase) -> Image.Image:
        """A generation case's image: broken shapes drawn, then the pixel degradations applied."""
        return apply_pixels(self.render(case.drawn), case.degradation)

    def _provenance(self, index: int, **extra: Any) -> dict[str, Any]:
        return {"world": WORLD, "split": self.split, "seed": self.seed, "index": index, "size": self.size, **extra}

    def oracle_sample(self, case: EditCase | GenCase, dimension: str, index: int) -> CriticSample:
        """The critic sample of ``dimension`` for ``case``, with the oracle's answer and evidence.

        This is what :meth:`sample` returns for the case it draws; given any other case (``edit_case(i)``,
        ``gen_case(i)``) it gives ShapesWorld's own sample for it, keyed ``key(dimension, index)``.

        Raises:
            ValueError: when ``dimension`` is not one of the case's task (execution or consistency for an edit
                case, instruction or quality for a generation case).
        """
        task = task_of(dimension)
        if isinstance(case, EditCase) and task == "edit":
            return self._edit_sample(case, dimension, index)
        if isinstance(case, GenCase) and task == "gen":
            return self._gen_sample(case, dimension, index)
        kind = "an edit" if isinstance(case, EditCase) else "a generation"
        raise ValueError(f"dimension {dimension!r} is not scored on {kind} case")

    def _edit_sample(self, case: EditCase, dimension: str, index: int) -> CriticSample:
        answer = execution_answer(case) if dimension == "execution" else consistency_answer(case)
        return CriticSample(
            key=self.key(dimension, index),
            task="edit",
            dimension=dimension,
            text=case.instruction,
            image=self.render(case.edited),
            source=self.render(case.source),
            score=case.execution if dimension == "execution" else case.consistency,
            answer=answer,
            evidence={"differences": difference_report(case.source, case.edited)},
            provenance=self._provenance(
                index,
                ops=[op.name for op in case.ops],
                outcomes=[o.value for o in case.outcomes],
                execution=case.execution,
                consistency=case.consistency,
                unintended={"significant": case.unintended.significant, "minor": case.unintended.minor},
                difficulty=case.difficulty,
            ),
        )

    def _gen_sample(self, case: GenCase, dimension: str, index: int) -> CriticSample:
        quality = dimension == "quality"
        image = self.gen_image(case)
        evidence: dict[str, Any] = {"plan": analysis_plan(case.answers)}
        if quality:
            evidence["degradation"] = case.degradation.active
        return CriticSample(
            key=self.key(dimension, index),
            task="gen",
            dimension=dimension,
            text=case.prompt,
            image=image,
            source=None,
            score=case.quality if quality else case.instruction,
            answer=quality_answer(case) if quality else instruction_answer(case),
            sub_scores=case.sub_scores if quality else None,
            evidence=evidence,
            provenance=self._provenance(
                index,
                instruction=case.instruction,
                quality=case.quality,
                sub_scores=list(case.sub_scores),
                violations=[list(v) for v in case.violations],
                difficulty=case.difficulty,
            ),
        )

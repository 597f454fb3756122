"""Generation cases: a prompt, an image that meets a chosen subset of its requirements, and exact scores.

The case starts from a scene that meets every requirement of its :class:`~firm.worlds.shapes.spec.GenSpec`, then
breaks a chosen set of them (a detail such as a colour or the background, a subject's count, a whole subject) so
that the instruction-following score, *computed* from the plan's checks, lands on the wanted value. A degradation on
top (blur, noise, marks, broken shapes, ...) gives the three quality sub-scores. As for edits, a draw whose computed
score misses the wanted one is thrown away.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from firm.worlds.shapes.degrade import Degradation, break_shapes, sample_degradation
from firm.worlds.shapes.rubric import quality_score
from firm.worlds.shapes.scene import (
    BACKGROUNDS,
    COLOURS,
    EDGE,
    KINDS,
    SIZES,
    TEXTURES,
    Background,
    Scene,
    Shape,
    fits,
    place,
    random_shape,
    spot_free,
)
from firm.worlds.shapes.spec import (
    Answer,
    GenSpec,
    Requirement,
    members,
    prompt_text,
    sample_spec,
    score_scene,
)

#: Probability that an instruction-following image carries a mild technical flaw (the rubric ignores quality).
MILD_FLAW = 0.2

Violation = tuple[str, int | None]


@dataclass(frozen=True)
class GenCase:
    """One generation with its exact scores.

    Attributes:
        spec: what the prompt asks for.
        prompt: the prompt text.
        scene: the scene drawn (structural damage from the degradation is added at render time).
        degradation: the image degradations.
        answers: each plan item with its answer (yes, no or n/a).
        violations: the requirements that were broken on purpose, as (kind, subject index).
        instruction: the instruction-following score (1-5).
    """

    spec: GenSpec
    prompt: str
    scene: Scene
    degradation: Degradation
    answers: tuple[tuple[Requirement, Answer], ...]
    violations: tuple[Violation, ...]
    instruction: int

    @property
    def sub_scores(self) -> tuple[int, int, int]:
        return self.degradation.sub_scores

    @property
    def quality(self) -> int:
        return quality_score(self.sub_scores)

    @property
    def drawn(self) -> Scene:
        """The scene as rendered, broken shapes included."""
        return break_shapes(self.scene, self.degradation)

    @property
    def difficulty(self) -> str:
        """ "hard" for prompts with five or more requirements (long prompts), else "easy"."""
        return "hard" if len(self.answers) >= 5 else "easy"


def satisfying_scene(spec: GenSpec, rng: random.Random) -> Scene | None:
    """A scene that meets every requirement of ``spec``, or None when the shapes do not fit."""
    colours_ok = [c for c in COLOURS if c != spec.no_colour]
    bg = Background(
        spec.background or rng.choice(list(BACKGROUNDS)),
        spec.texture or ("plain" if rng.random() < 0.7 else rng.choice(TEXTURES)),
    )
    scene = Scene(bg)
    for i, g in enumerate(spec.groups):
        for _ in range(g.count):
            shape = random_shape(
                rng,
                scene.next_id(),
                [g.kind],
                colours_ok if g.colour is None else [g.colour],
                list(SIZES) if g.size is None else [g.size],
            )
            shape = replace(shape, outline=bool(spec.outline))
            placed = _place_in_band(shape, scene, _band(spec, i), rng)
            if placed is None:
                return None
            scene = scene.with_shape(placed)
    return scene


def _band(spec: GenSpec, group: int) -> tuple[float, float, float, float]:
    """The (x0, x1, y0, y1) box a group's centres must lie in so that the relation holds."""
    full = (0.0, 1.0, 0.0, 1.0)
    r = spec.relation
    if r is None or group not in (r.a, r.b):
        return full
    first = (group == r.a) == (r.rel in ("left of", "above"))  # this group takes the left / top half
    lo, hi = (0.0, 0.45) if first else (0.55, 1.0)
    return (lo, hi, 0.0, 1.0) if r.rel in ("left of", "right of") else (0.0, 1.0, lo, hi)


def _place_in_band(
    shape: Shape, scene: Scene, band: tuple[float, float, float, float], rng: random.Random
) -> Shape | None:
    e = shape.extent
    x0, x1 = max(band[0], EDGE + e), min(band[1], 1 - EDGE - e)
    y0, y1 = max(band[2], EDGE + e), min(band[3], 1 - EDGE - e)
    if x0 > x1 or y0 > y1:
        return None
    for _ in range(60):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if spot_free(x, y, e, shape.id, scene.shapes, False):
            return shape.moved(x, y)
    return None


def _details(spec: GenSpec) -> list[Violation]:
    """Every non-main requirement of ``spec`` that a violation can break, as (kind, subject)."""
    out: list[Violation] = []
    for i, g in enumerate(spec.groups):
        out += [(attr, i) for attr in ("colour", "size") if getattr(g, attr)]
    flags = {
        "relation": spec.relation,
        "background": spec.background,
        "texture": spec.texture,
        "style": spec.outline,
        "no_kind": spec.no_kind,
        "no_colour": spec.no_colour,
    }
    return out + [(name, None) for name, value in flags.items() if value is not None]


def _composition(spec: GenSpec) -> int:
    return sum(v is not None for v in (spec.background, spec.texture, spec.outline))


def plan_violations(spec: GenSpec, score: int, rng: random.Random) -> list[Violation] | None:
    """Requirements to break so that the image scores ``score``, or None when ``spec`` cannot reach it."""
    details, n = _details(spec), len(spec.groups)
    if score == 5:
        return []
    if score == 4:
        return rng.sample(details, min(len(details), rng.choice((1, 2)))) or None
    if score == 3:
        options: list[list[Violation]] = [
            [("count", rng.randrange(n)), *rng.sample(details, min(len(details), rng.randint(0, 1)))]
        ]
        if n >= 2:
            options.append([("missing", rng.randrange(n))])
        if len(details) >= 3:
            options.append(rng.sample(details, rng.randint(3, min(4, len(details)))))
        return rng.choice(options)
    if score == 2:
        # more than half of the subjects missing; all of them only if some requested style remains to relate it
        counts = [m for m in range(1, n + 1) if 2 * m > n and (m < n or _composition(spec))]
        if not counts:
            return None
        return [("missing", i) for i in rng.sample(range(n), rng.choice(counts))]
    return [("unrelated", None)]


def violate(spec: GenSpec, scene: Scene, what: Violation, rng: random.Random) -> Scene | None:
    """``scene`` with one requirement broken, or None when the change does not fit."""
    kind, i = what
    group = spec.groups[i] if i is not None else None
    spare_kinds = [k for k in KINDS if k not in {g.kind for g in spec.groups} and k != spec.no_kind]
    ok_colours = [c for c in COLOURS if c != spec.no_colour]
    if kind == "colour" and group is not None:
        colour = rng.choice([c for c in ok_colours if c != group.colour])
        return _restyle(scene, members(scene, group), colour=colour)
    if kind == "size" and group is not None:
        size = rng.choice([s for s in SIZES if s != group.size])
        return _restyle(scene, members(scene, group), r=SIZES[size])
    if kind == "relation" and spec.relation is not None:
        horizontal = spec.relation.rel in ("left of", "right of")
        flipped = members(scene, spec.groups[spec.relation.a]) + members(scene, spec.groups[spec.relation.b])
        return _checked(scene, [s.moved(1 - s.x, s.y) if horizontal else s.moved(s.x, 1 - s.y) for s in flipped])
    if kind == "background":
        bg = replace(scene.background, colour=rng.choice([c for c in BACKGROUNDS if c != spec.background]))
        return replace(scene, background=bg)
    if kind == "texture":
        return replace(
            scene, background=replace(scene.background, texture=rng.choice([t for t in TEXTURES if t != spec.texture]))
        )
    if kind == "style":
        return replace(scene, shapes=tuple(replace(s, outline=not spec.outline) for s in scene.shapes))
    if kind in ("no_kind", "no_colour"):
        kinds = [spec.no_kind] if kind == "no_kind" and spec.no_kind else spare_kinds
        colours = [spec.no_colour] if kind == "no_colour" and spec.no_colour else ok_colours
        extra = place(
            replace(random_shape(rng, scene.next_id(), kinds, colours), outline=bool(spec.outline)), scene, rng
        )
        return None if extra is None else scene.with_shape(extra)
    if kind == "count" and group is not None:
        found = members(scene, group)
        if group.count > 1 and rng.random() < 0.5:
            return scene.without(rng.choice(found).id)
        twin = _place_in_band(replace(found[0], id=scene.next_id()), scene, _band(spec, i or 0), rng)
        return None if twin is None else scene.with_shape(twin)
    if kind == "missing" and group is not None:
        found = members(scene, group)
        if rng.random() < 0.5:  # left out
            return replace(scene, shapes=tuple(s for s in scene.shapes if s not in found))
        kind = rng.choice(spare_kinds)  # drawn as something else
        return _checked(scene, [s.as_kind(kind) for s in found])
    if kind == "unrelated":
        return _unrelated(spec, scene, spare_kinds, rng)
    raise ValueError(f"cannot break requirement {what!r} of this prompt")


def _checked(scene: Scene, shapes: list[Shape]) -> Scene | None:
    for shape in shapes:
        scene = scene.with_shape(shape)
    return scene if all(fits(s, scene.shapes) for s in shapes) else None


def _restyle(scene: Scene, shapes: list[Shape], **changes: object) -> Scene | None:
    return _checked(scene, [replace(s, **changes) for s in shapes])  # type: ignore[arg-type]


def _unrelated(spec: GenSpec, scene: Scene, spare_kinds: list[str], rng: random.Random) -> Scene | None:
    """None of the subjects and none of the requested style: other shapes on another background."""
    bg = Background(
        rng.choice([c for c in BACKGROUNDS if c != spec.background]),
        rng.choice([t for t in TEXTURES if t != spec.texture]) if spec.texture else scene.background.texture,
    )
    out = Scene(bg)
    for _ in range(rng.randint(1, 3)):
        shape = place(random_shape(rng, out.next_id(), spare_kinds), out, rng)
        if shape is not None:
            out = out.with_shape(replace(shape, outline=spec.outline is False))
    return out


def build_gen_case(
    rng: random.Random, instruction: int | None = None, quality: int | None = None, max_tries: int = 500
) -> GenCase:
    """Draw a generation case whose computed scores equal the requested ones (None: drawn at random).

    Instruction-dimension cases (quality None) are clean or carry one mild technical flaw; quality-dimension cases
    (instruction None) show an image that meets the whole prompt.

    Raises:
        ValueError: for a score outside 1-5.
        RuntimeError: if no case is found in ``max_tries`` draws (a bug, not bad luck).
    """
    for name, value in (("instruction", instruction), ("quality", quality)):
        if value is not None and value not in range(1, 6):
            raise ValueError(f"{name} score must be in 1-5, got {value}")
    target = instruction if instruction is not None else (5 if quality is not None else rng.randint(1, 5))
    for _ in range(max_tries):
        spec = sample_spec(rng)
        plan = plan_violations(spec, target, rng)
        scene = satisfying_scene(spec, rng) if plan is not None else None
        for what in plan or []:
            scene = violate(spec, scene, what, rng) if scene is not None else None
        if scene is None or plan is None:
            continue
        score, answers = score_scene(spec, scene)
        if score != target:
            continue
        if quality is not None:
            deg = sample_degradation(rng, quality)
        elif rng.random() < MILD_FLAW:
            deg = Degradation(**{rng.choice(("blur", "noise", "blocks")): 1}, seed=rng.getrandbits(32))
        else:
            deg = Degradation()
        return GenCase(spec, prompt_text(spec, rng), scene, deg, tuple(answers), tuple(plan), score)
    raise RuntimeError(f"no generation case with instruction={instruction} quality={quality} in {max_tries} draws")

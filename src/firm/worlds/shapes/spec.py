"""Prompt specifications for generation: what a prompt asks for, its wording, and its checklist on scene graphs.

A :class:`GenSpec` lists main subjects (kind and count, with optional colour and size), an optional spatial
relation, optional style (background colour, texture, outlined or solid shapes) and optional negative constraints.
Its requirements are yes/no checks on a scene graph (:func:`requirements`, :func:`check`), and
:func:`score_scene` turns the answers into the instruction-following score through the rubric.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

from firm.worlds.shapes.refer import article, count_phrase, number_word, plural
from firm.worlds.shapes.rubric import Presence, instruction_score
from firm.worlds.shapes.scene import BACKGROUNDS, COLOURS, KINDS, SIZES, TEXTURES, Scene, Shape

Category = Literal["main", "attribute", "composition", "negative"]
Answer = Literal["yes", "no", "n/a"]

#: Plan group titles, in plan order (PAPER.md section 1: the plan-then-score checklist).
CATEGORY_TITLES: dict[str, str] = {
    "main": "main subjects/elements",
    "attribute": "attributes",
    "composition": "style/composition",
    "negative": "negative constraints",
}
RELATIONS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
#: How far apart (canvas fraction) two shapes' centres must be for a relation to hold.
RELATION_MARGIN = 0.05
MAX_OBJECTS = 6


@dataclass(frozen=True)
class Group:
    """A main subject: ``count`` shapes of ``kind``, optionally all of one colour and one size class."""

    kind: str
    count: int
    colour: str | None = None
    size: str | None = None

    def phrase(self) -> str:
        words = " ".join(w for w in (self.size, self.colour, self.kind) if w)
        return count_phrase(self.count, words)

    def the(self) -> str:
        return f"the {plural(self.kind) if self.count > 1 else self.kind}"


@dataclass(frozen=True)
class Relation:
    """Group ``a`` stands ``rel`` group ``b`` (every shape of a, relative to every shape of b)."""

    a: int
    b: int
    rel: str


@dataclass(frozen=True)
class GenSpec:
    """What a prompt asks for."""

    groups: tuple[Group, ...]
    relation: Relation | None = None
    background: str | None = None
    texture: str | None = None
    outline: bool | None = None
    no_kind: str | None = None
    no_colour: str | None = None


@dataclass(frozen=True)
class Requirement:
    """One yes/no item of the analysis plan.

    Attributes:
        category: main, attribute, composition or negative.
        check: what to test: count, colour, size, relation, background, texture, style, no_kind or no_colour.
        group: the main subject it is about (None for scene-wide checks).
        question: the plan's question.
    """

    category: Category
    check: str
    group: int | None
    question: str


def requirements(spec: GenSpec) -> list[Requirement]:
    """The plan's checklist for ``spec``, grouped in plan order."""
    out: list[Requirement] = []
    for i, g in enumerate(spec.groups):
        what = g.kind if g.count == 1 else plural(g.kind)
        out.append(
            Requirement(
                "main", "count", i, f"{'Is' if g.count == 1 else 'Are'} there exactly {number_word(g.count)} {what}?"
            )
        )
    for i, g in enumerate(spec.groups):
        if g.colour:
            out.append(Requirement("attribute", "colour", i, f"Is {_every(g)} {g.colour}?"))
        if g.size:
            out.append(Requirement("attribute", "size", i, f"Is {_every(g)} {g.size}?"))
    if spec.relation is not None:
        r = spec.relation
        a, b = spec.groups[r.a], spec.groups[r.b]
        verb = "Are" if a.count > 1 else "Is"
        out.append(Requirement("composition", "relation", None, f"{verb} {a.the()} {RELATIONS[r.rel]} {b.the()}?"))
    if spec.background:
        out.append(Requirement("composition", "background", None, f"Is the background {spec.background}?"))
    if spec.texture:
        out.append(Requirement("composition", "texture", None, f"Is the background {spec.texture}?"))
    if spec.outline is not None:
        style = "drawn as outlines" if spec.outline else "filled with solid colour"
        out.append(Requirement("composition", "style", None, f"Are the shapes {style}?"))
    if spec.no_kind:
        out.append(Requirement("negative", "no_kind", None, f"Is the image free of {plural(spec.no_kind)}?"))
    if spec.no_colour:
        out.append(Requirement("negative", "no_colour", None, f"Is there nothing {spec.no_colour} in the image?"))
    return out


def _every(g: Group) -> str:
    return f"the {g.kind}" if g.count == 1 else f"every {g.kind}"


def members(scene: Scene, group: Group) -> list[Shape]:
    return [s for s in scene.shapes if s.kind == group.kind]


def presence(scene: Scene, group: Group) -> Presence:
    n = len(members(scene, group))
    return Presence.MISSING if n == 0 else Presence.EXACT if n == group.count else Presence.COUNT_OFF


def _holds(rel: str, a: Shape, b: Shape) -> bool:
    m = RELATION_MARGIN
    return {
        "left of": a.x + m < b.x,
        "right of": a.x > b.x + m,
        "above": a.y + m < b.y,
        "below": a.y > b.y + m,
    }[rel]


def check(req: Requirement, spec: GenSpec, scene: Scene) -> Answer:
    """Answer one plan item from the scene graph; "n/a" when it is about a subject that is missing."""
    yes: bool
    if req.check in ("count", "colour", "size"):
        assert req.group is not None
        group = spec.groups[req.group]
        found = members(scene, group)
        if req.check == "count":
            yes = len(found) == group.count
        elif not found:
            return "n/a"
        else:
            yes = all((s.colour if req.check == "colour" else s.size) == getattr(group, req.check) for s in found)
    elif req.check == "relation":
        assert spec.relation is not None
        r = spec.relation
        sa, sb = members(scene, spec.groups[r.a]), members(scene, spec.groups[r.b])
        if not sa or not sb:
            return "n/a"
        yes = all(_holds(r.rel, a, b) for a in sa for b in sb)
    elif req.check == "background":
        yes = scene.background.colour == spec.background
    elif req.check == "texture":
        yes = scene.background.texture == spec.texture
    elif req.check == "style":
        if not scene.shapes:
            return "n/a"
        yes = all(s.outline == spec.outline for s in scene.shapes)
    elif req.check == "no_kind":
        yes = all(s.kind != spec.no_kind for s in scene.shapes)
    elif req.check == "no_colour":
        yes = all(s.colour != spec.no_colour for s in scene.shapes)
    else:
        raise ValueError(f"unknown requirement check {req.check!r}")
    return "yes" if yes else "no"


def score_scene(spec: GenSpec, scene: Scene) -> tuple[int, list[tuple[Requirement, Answer]]]:
    """The instruction-following score of ``scene`` for ``spec`` and the answer to every plan item."""
    answers = [(req, check(req, spec, scene)) for req in requirements(spec)]
    main = [presence(scene, g) for g in spec.groups]
    missed = sum(a == "no" for r, a in answers if r.category != "main")
    style_met = sum(a == "yes" for r, a in answers if r.category == "composition" and r.check != "relation")
    return instruction_score(main, missed, style_met), answers


def sample_spec(rng: random.Random) -> GenSpec:
    """A random prompt specification with one to three main subjects (six shapes at most)."""
    n_groups = rng.choices((1, 2, 3), (0.4, 0.4, 0.2))[0]
    kinds = rng.sample(KINDS, n_groups)
    groups = []
    for kind in kinds:
        count = rng.choices((1, 2, 3), (0.55, 0.3, 0.15))[0]
        groups.append(
            Group(
                kind,
                count,
                rng.choice(list(COLOURS)) if rng.random() < 0.85 else None,
                rng.choice(list(SIZES)) if rng.random() < 0.4 else None,
            )
        )
    while sum(g.count for g in groups) > MAX_OBJECTS:
        groups = [replace(g, count=max(1, g.count - 1)) for g in groups]
    relation = None
    if n_groups > 1 and rng.random() < 0.5:
        a, b = rng.sample(range(n_groups), 2)
        relation = Relation(a, b, rng.choice(list(RELATIONS)))
    used_colours = {g.colour for g in groups}
    return GenSpec(
        groups=tuple(groups),
        relation=relation,
        background=rng.choice(list(BACKGROUNDS)) if rng.random() < 0.6 else None,
        texture=rng.choice(TEXTURES) if rng.random() < 0.3 else None,
        outline=rng.random() < 0.5 if rng.random() < 0.3 else None,
        no_kind=rng.choice([k for k in KINDS if k not in kinds]) if rng.random() < 0.3 else None,
        no_colour=rng.choice([c for c in COLOURS if c not in used_colours]) if rng.random() < 0.2 else None,
    )


def prompt_text(spec: GenSpec, rng: random.Random) -> str:
    """The prompt for ``spec``, with varied wording and order."""
    subjects = [g.phrase() for g in spec.groups]
    text = subjects[0] if len(subjects) == 1 else ", ".join(subjects[:-1]) + " and " + subjects[-1]
    text = rng.choice(("", "a picture of ", "an image of ", "draw ", "show ")) + text
    if spec.background or spec.texture:
        words = " ".join(w for w in (spec.texture, spec.background) if w)
        text += f" on {article(words)} {words} background"
    if spec.relation is not None:
        r = spec.relation
        text += f", with {spec.groups[r.a].the()} {RELATIONS[r.rel]} {spec.groups[r.b].the()}"
    if spec.outline is not None:
        text += rng.choice(
            (", drawn as outlines", ", in outline style")
            if spec.outline
            else (", as solid filled shapes", ", in solid colours")
        )
    text = text[0].upper() + text[1:] + "."
    if spec.no_kind:
        text += rng.choice((f" No {plural(spec.no_kind)}.", f" Do not include any {plural(spec.no_kind)}."))
    if spec.no_colour:
        text += rng.choice((f" Nothing {spec.no_colour}.", f" Avoid the colour {spec.no_colour}."))
    return text

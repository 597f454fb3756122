"""Edit operations: add, remove, recolour, move, resize, swap. Each can be carried out to any :class:`Fulfilment`.

An operation is fixed against its source scene (who it names, where things go) and knows how to phrase itself and
how to produce the edited scene for each fulfilment. ``apply`` returns None when a variant cannot be drawn in this
scene (no room to move the opposite way, say); callers then pick another plan. Only the operation's own targets (and
the shape an add creates) ever change here: unintended changes are added separately (see ``edit.py``).
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

from firm.worlds.shapes.refer import ANCHORS, DESTINATIONS, article, in_region, noun, refer
from firm.worlds.shapes.rubric import Fulfilment as F
from firm.worlds.shapes.scene import COLOURS, KINDS, Scene, Shape, blend, fits, near_shade, place, random_shape

#: How far a move must go (canvas fraction).
MIN_MOVE = 0.25


class Op(ABC):
    """One requested change. Subclasses are frozen dataclasses built by their ``sample`` classmethod."""

    name: ClassVar[str]
    #: The fulfilments this kind of operation can show; others (an "opposite" removal) have no meaning.
    fulfilments: ClassVar[tuple[F, ...]] = (F.FULL, F.SUBTLE, F.WRONG, F.VAGUE, F.NONE)

    @property
    @abstractmethod
    def targets(self) -> tuple[int, ...]:
        """Ids of the shapes this operation changes or creates (what the consistency count leaves to execution)."""

    @property
    def mentions(self) -> tuple[int, ...]:
        """Ids of every shape the instruction names: the targets, plus shapes used as landmarks."""
        return self.targets

    @abstractmethod
    def clause(self, rng: random.Random) -> str:
        """The instruction for this operation, lower case, without final punctuation."""

    @abstractmethod
    def apply(self, scene: Scene, how: F, rng: random.Random) -> Scene | None:
        """``scene`` with this operation carried out to fulfilment ``how``, or None if it cannot be drawn here."""


def _checked(scene: Scene, *shapes: Shape) -> Scene | None:
    """``scene`` with ``shapes`` put in, or None when any of them leaves the canvas or touches another shape."""
    for shape in shapes:
        scene = scene.with_shape(shape)
    return scene if all(fits(s, scene.shapes) for s in shapes) else None


def _other_colour(rng: random.Random, *avoid: str) -> str:
    return rng.choice([c for c in COLOURS if c not in avoid])


@dataclass(frozen=True)
class Add(Op):
    """Add a new shape somewhere (a region, or beside a named shape)."""

    shape: Shape
    where: str
    say_size: bool
    wrong_spot: tuple[float, float]
    anchor: int | None = None
    name: ClassVar[str] = "add"

    @property
    def targets(self) -> tuple[int, ...]:
        return (self.shape.id,)

    @property
    def mentions(self) -> tuple[int, ...]:
        return (self.shape.id,) if self.anchor is None else (self.shape.id, self.anchor)

    @classmethod
    def sample(cls, scene: Scene, rng: random.Random, new_id: int, taken: set[int]) -> Add | None:
        shape = random_shape(rng, new_id)
        anchors = [s for s in scene.shapes if s.id not in taken]
        if anchors and rng.random() < 0.4:
            anchor = rng.choice(anchors)
            ref = refer(anchor, scene, rng)
            rel, dx, dy = rng.choice(
                [("to the left of", -1, 0), ("to the right of", 1, 0), ("above", 0, -1), ("below", 0, 1)]
            )
            dist = anchor.extent + shape.extent + 0.05
            shape = shape.moved(anchor.x + dx * dist, anchor.y + dy * dist)
            wrong = (anchor.x - dx * dist, anchor.y - dy * dist)  # the other side of the landmark
            where = f"{rel} {ref}" if ref else ""
            anchor_id: int | None = anchor.id
        else:
            region = rng.choice(list(ANCHORS))
            ax, ay = ANCHORS[region]
            shape = shape.moved(
                ax if ax is not None else rng.uniform(0.4, 0.6), ay if ay is not None else rng.uniform(0.4, 0.6)
            )
            where = _ADD_WHERE[region][rng.randrange(2)]
            # the mirror image of the requested spot, which is never in the requested region (a corner for the centre)
            wrong = (0.2, 0.8) if region == "centre" else (1 - shape.x, 1 - shape.y)
            anchor_id = None
        if not where or not fits(shape, scene.shapes):
            return None
        return cls(shape, where, rng.random() < 0.5, wrong, anchor_id)

    def clause(self, rng: random.Random) -> str:
        verb = rng.choice(("add", "put", "draw", "place", "insert"))
        obj = noun(self.shape, ("size", "colour", "kind") if self.say_size else ("colour", "kind"))
        return f"{verb} {article(obj)} {obj} {self.where}"

    def apply(self, scene: Scene, how: F, rng: random.Random) -> Scene | None:
        new = self.shape
        if how is F.FULL:
            return _checked(scene, new)
        if how is F.SUBTLE:
            return _checked(scene, replace(new, shade=near_shade(new.rgb)))
        if how is F.WRONG:
            wrong = rng.choice(("colour", "kind", "place"))
            if wrong == "colour":
                return _checked(scene, replace(new, colour=_other_colour(rng, new.colour)))
            if wrong == "kind":
                return _checked(scene, new.as_kind(rng.choice([k for k in KINDS if k != new.kind])))
            return _checked(scene, new.moved(*self.wrong_spot))
        if how is F.VAGUE:
            return _checked(scene, replace(new, r=new.r * 0.4, alpha=0.35))
        return scene if how is F.NONE else None


_ADD_WHERE = {
    "top left": ("in the top left corner", "at the top left"),
    "top right": ("in the top right corner", "at the top right"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
    "centre": ("in the centre", "in the middle"),
    "left": ("on the left side", "on the left"),
    "right": ("on the right side", "on the right"),
    "top": ("at the top", "along the top"),
    "bottom": ("at the bottom", "along the bottom"),
}


@dataclass(frozen=True)
class Remove(Op):
    """Remove a named shape."""

    target: int
    ref: str
    name: ClassVar[str] = "remove"

    @property
    def targets(self) -> tuple[int, ...]:
        return (self.target,)

    @classmethod
    def sample(cls, scene: Scene, rng: random.Random, new_id: int, taken: set[int]) -> Remove | None:
        shape, ref = _pick(scene, rng, taken)
        return None if shape is None else cls(shape.id, ref)

    def clause(self, rng: random.Random) -> str:
        verb = rng.choice(("remove", "delete", "erase", "get rid of", "take out", "take away"))
        return f"{verb} {self.ref}"

    def apply(self, scene: Scene, how: F, rng: random.Random) -> Scene | None:
        shape = scene.get(self.target)
        if how is F.FULL:
            return scene.without(self.target)
        if how is F.SUBTLE:  # a faint ghost is left where it was
            return scene.with_shape(replace(shape, alpha=0.12))
        if how is F.WRONG:  # half of it is still there
            return scene.with_shape(replace(shape, erase=0.5))
        if how is F.VAGUE:  # only faded
            return scene.with_shape(replace(shape, alpha=0.6))
        return scene if how is F.NONE else None


@dataclass(frozen=True)
class Recolour(Op):
    """Give a named shape another colour."""

    target: int
    ref: str
    colour: str
    name: ClassVar[str] = "recolour"

    @property
    def targets(self) -> tuple[int, ...]:
        return (self.target,)

    @classmethod
    def sample(cls, scene: Scene, rng: random.Random, new_id: int, taken: set[int]) -> Recolour | None:
        shape, ref = _pick(scene, rng, taken)
        return None if shape is None else cls(shape.id, ref, _other_colour(rng, shape.colour))

    def clause(self, rng: random.Random) -> str:
        template = rng.choice(
            (
                "make {ref} {c}",
                "change the colour of {ref} to {c}",
                "recolour {ref} {c}",
                "paint {ref} {c}",
                "turn {ref} {c}",
            )
        )
        return template.format(ref=self.ref, c=self.colour)

    def apply(self, scene: Scene, how: F, rng: random.Random) -> Scene | None:
        shape = scene.get(self.target)
        if how is F.FULL:
            return scene.with_shape(replace(shape, colour=self.colour))
        if how is F.SUBTLE:
            return scene.with_shape(replace(shape, colour=self.colour, shade=near_shade(COLOURS[self.colour])))
        if how is F.WRONG:
            return scene.with_shape(replace(shape, colour=_other_colour(rng, shape.colour, self.colour)))
        if how is F.VAGUE:  # a faint tint: it still reads as the old colour
            return scene.with_shape(replace(shape, shade=blend(shape.rgb, COLOURS[self.colour], 0.25)))
        return scene if how is F.NONE else None


@dataclass(frozen=True)
class Move(Op):
    """Move a named shape to a region of the canvas."""

    target: int
    ref: str
    region: str
    dest: tuple[float, float]
    name: ClassVar[str] = "move"
    fulfilments: ClassVar[tuple[F, ...]] = (F.FULL, F.SUBTLE, F.WRONG, F.VAGUE, F.NONE, F.OPPOSITE)

    @property
    def targets(self) -> tuple[int, ...]:
        return (self.target,)

    @classmethod
    def sample(cls, scene: Scene, rng: random.Random, new_id: int, taken: set[int]) -> Move | None:
        shape, ref = _pick(scene, rng, taken)
        if shape is None:
            return None
        region = rng.choice(list(ANCHORS))
        ax, ay = ANCHORS[region]
        dest = (shape.x if ax is None else ax, shape.y if ay is None else ay)
        if math.hypot(dest[0] - shape.x, dest[1] - shape.y) < MIN_MOVE or in_region(region, shape.x, shape.y):
            return None
        if not fits(shape.moved(*dest), scene.shapes):
            return None
        return cls(shape.id, ref, region, dest)

    def clause(self, rng: random.Random) -> str:
        verb = rng.choice(("move", "shift", "drag", "slide", "relocate"))
        return f"{verb} {self.ref} to {rng.choice(DESTINATIONS[self.region])}"

    def apply(self, scene: Scene, how: F, rng: random.Random) -> Scene | None:
        shape = scene.get(self.target)
        (x0, y0), (x1, y1) = (shape.x, shape.y), self.dest
        dist = math.hypot(x1 - x0, y1 - y0)
        if how is F.FULL:
            return _checked(scene, shape.moved(x1, y1))
        if how is F.SUBTLE:  # stops a little short, still inside the requested region
            back = 0.09 / dist
            spot = shape.moved(x1 + (x0 - x1) * back, y1 + (y0 - y1) * back)
            return _checked(scene, spot) if in_region(self.region, spot.x, spot.y) else None
        if how is F.WRONG:  # a clear move, but to somewhere outside the requested region
            spots = [(x0 if ax is None else ax, y0 if ay is None else ay) for ax, ay in ANCHORS.values()]
            rng.shuffle(spots)
            spots += [(s.x, s.y) for s in (place(shape, scene, rng) for _ in range(4)) if s is not None]
            for p in spots:
                if not in_region(self.region, *p) and math.hypot(p[0] - x0, p[1] - y0) >= MIN_MOVE:
                    moved = _checked(scene, shape.moved(*p))
                    if moved is not None:
                        return moved
            return None
        if how is F.VAGUE:  # a nudge in the right direction
            return _checked(scene, shape.moved(x0 + (x1 - x0) * 0.15, y0 + (y1 - y0) * 0.15))
        if how is F.OPPOSITE:
            return _checked(scene, shape.moved(x0 - (x1 - x0) * 0.6, y0 - (y1 - y0) * 0.6))
        return scene


@dataclass(frozen=True)
class Resize(Op):
    """Make a named shape twice or half as big."""

    target: int
    ref: str
    factor: float
    name: ClassVar[str] = "resize"
    fulfilments: ClassVar[tuple[F, ...]] = (F.FULL, F.SUBTLE, F.WRONG, F.VAGUE, F.NONE, F.OPPOSITE)

    @property
    def targets(self) -> tuple[int, ...]:
        return (self.target,)

    @classmethod
    def sample(cls, scene: Scene, rng: random.Random, new_id: int, taken: set[int]) -> Resize | None:
        shape, ref = _pick(scene, rng, taken)
        if shape is None:
            return None
        # Doubling a large shape would not fit; halving a small one would vanish at 32 px.
        factor = {"small": 2.0, "large": 0.5}.get(shape.size) or rng.choice((2.0, 0.5))
        if not fits(replace(shape, r=shape.r * factor), scene.shapes):
            return None
        return cls(shape.id, ref, factor)

    def clause(self, rng: random.Random) -> str:
        if self.factor > 1:
            template = rng.choice(
                (
                    "make {ref} twice as big",
                    "double the size of {ref}",
                    "enlarge {ref} to twice its size",
                    "scale {ref} up to double its size",
                )
            )
        else:
            template = rng.choice(
                (
                    "make {ref} half as big",
                    "halve the size of {ref}",
                    "shrink {ref} to half its size",
                    "scale {ref} down to half its size",
                )
            )
        return template.format(ref=self.ref)

    def apply(self, scene: Scene, how: F, rng: random.Random) -> Scene | None:
        shape = scene.get(self.target)
        scale = {
            F.FULL: self.factor,
            F.SUBTLE: self.factor**0.8,
            F.VAGUE: self.factor**0.15,
            F.OPPOSITE: self.factor**-0.6,
        }
        if how in scale:
            return _checked(scene, replace(shape, r=shape.r * scale[how]))
        if how is F.WRONG:  # stretched or squashed in one direction only
            return _checked(scene, replace(shape, aspect=self.factor))
        return scene


@dataclass(frozen=True)
class Swap(Op):
    """Swap the places of two named shapes."""

    a: int
    b: int
    ref_a: str
    ref_b: str
    name: ClassVar[str] = "swap"

    @property
    def targets(self) -> tuple[int, ...]:
        return (self.a, self.b)

    @classmethod
    def sample(cls, scene: Scene, rng: random.Random, new_id: int, taken: set[int]) -> Swap | None:
        first, ref_a = _pick(scene, rng, taken)
        if first is None:
            return None
        second, ref_b = _pick(scene, rng, taken | {first.id})
        if second is None or math.hypot(first.x - second.x, first.y - second.y) < MIN_MOVE:
            return None
        swapped = _checked(scene, first.moved(second.x, second.y), second.moved(first.x, first.y))
        return None if swapped is None else cls(first.id, second.id, ref_a, ref_b)

    def clause(self, rng: random.Random) -> str:
        template = rng.choice(
            (
                "swap {a} and {b}",
                "swap the positions of {a} and {b}",
                "exchange the places of {a} and {b}",
                "switch {a} and {b} around",
            )
        )
        return template.format(a=self.ref_a, b=self.ref_b)

    def apply(self, scene: Scene, how: F, rng: random.Random) -> Scene | None:
        a, b = scene.get(self.a), scene.get(self.b)
        if how is F.FULL:
            return _checked(scene, a.moved(b.x, b.y), b.moved(a.x, a.y))
        if how is F.SUBTLE:  # swapped, but one lands a little off the other's old spot
            dx, dy = b.x - a.x, b.y - a.y
            norm = math.hypot(dx, dy)
            return _checked(scene, a.moved(b.x - dy / norm * 0.07, b.y + dx / norm * 0.07), b.moved(a.x, a.y))
        if how is F.WRONG:  # only one of them goes to the other's place
            rest = scene.without(self.b).with_shape(a.moved(b.x, b.y))
            spot = place(b, rest, rng)
            if spot is None or math.hypot(spot.x - a.x, spot.y - a.y) < MIN_MOVE:
                return None
            return _checked(scene, a.moved(b.x, b.y), spot)
        if how is F.VAGUE:
            t = 0.15
            return _checked(
                scene,
                a.moved(a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t),
                b.moved(b.x + (a.x - b.x) * t, b.y + (a.y - b.y) * t),
            )
        return scene if how is F.NONE else None


OPS: tuple[type[Add | Remove | Recolour | Move | Resize | Swap], ...] = (Add, Remove, Recolour, Move, Resize, Swap)


def _pick(scene: Scene, rng: random.Random, taken: set[int]) -> tuple[Shape | None, str]:
    """A random shape not yet named by the instruction, with a unique description of it."""
    free = [s for s in scene.shapes if s.id not in taken]
    rng.shuffle(free)
    for shape in free:
        ref = refer(shape, scene, rng)
        if ref is not None:
            return shape, ref
    return None, ""


def join_clauses(clauses: list[str], rng: random.Random) -> str:
    """One instruction sentence from operation clauses, with varied connectives."""
    if len(clauses) == 1:
        text = clauses[0]
    elif len(clauses) == 2:
        text = rng.choice(("{0} and {1}", "{0}, then {1}", "{0}; also {1}")).format(*clauses)
    else:
        head = ", ".join(clauses[:-1])
        text = rng.choice((f"{head} and {clauses[-1]}", f"{head}, and finally {clauses[-1]}"))
    return text[0].upper() + text[1:] + "."

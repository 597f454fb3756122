"""Words for scenes: canvas regions, referring expressions ("the small red circle on the left"), counts, articles."""

from __future__ import annotations

import random
from collections.abc import Sequence

from firm.worlds.shapes.scene import Scene, Shape

#: Where a move or an add puts a shape: (x, y) anchors; None keeps that coordinate ("to the left" is horizontal).
ANCHORS: dict[str, tuple[float | None, float | None]] = {
    "top left": (0.2, 0.2),
    "top right": (0.8, 0.2),
    "bottom left": (0.2, 0.8),
    "bottom right": (0.8, 0.8),
    "centre": (0.5, 0.5),
    "left": (0.2, None),
    "right": (0.8, None),
    "top": (None, 0.2),
    "bottom": (None, 0.8),
}

#: Ways to name each region as a destination ("move it to ...", "put it in ...").
DESTINATIONS: dict[str, tuple[str, ...]] = {
    "top left": ("the top left corner", "the upper left corner"),
    "top right": ("the top right corner", "the upper right corner"),
    "bottom left": ("the bottom left corner", "the lower left corner"),
    "bottom right": ("the bottom right corner", "the lower right corner"),
    "centre": ("the centre", "the middle"),
    "left": ("the left side", "the left edge"),
    "right": ("the right side", "the right edge"),
    "top": ("the top", "the top edge"),
    "bottom": ("the bottom", "the bottom edge"),
}

_COUNTS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")
#: A qualifier is only used when the named shape is this much further out than the next candidate.
_MARGIN = 0.15


def region_of(x: float, y: float) -> str:
    """The 3 x 3 cell of a point: "top left", "top", ..., "centre", ..., "bottom right"."""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    return f"{row} {col}".strip() or "centre"


def in_region(region: str, x: float, y: float) -> bool:
    """Whether a point satisfies a destination: a side ("left") is a whole third, a corner or the centre one cell."""
    sides = {"left": x < 1 / 3, "right": x > 2 / 3, "top": y < 1 / 3, "bottom": y > 2 / 3}
    return sides[region] if region in sides else region_of(x, y) == region


def where(x: float, y: float) -> str:
    """A locative phrase for a point: "at the top left", "on the right", "in the centre"."""
    region = region_of(x, y)
    if region == "centre":
        return "in the centre"
    if region in ("left", "right"):
        return f"on the {region}"
    return f"at the {region}"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def number_word(n: int) -> str:
    return _COUNTS[n] if 0 <= n < len(_COUNTS) else str(n)


def count_phrase(n: int, noun: str) -> str:
    """``2, "red circle"`` -> "two red circles"; ``1, "orange star"`` -> "an orange star"."""
    if n == 1:
        return f"{article(noun)} {noun}"
    return f"{number_word(n)} {noun}s"


def plural(kind: str) -> str:
    return f"{kind}s"


def noun(shape: Shape, attrs: Sequence[str] = ("size", "colour", "kind")) -> str:
    """The shape named by the given attributes, e.g. "small red circle"."""
    values = {"size": shape.size, "colour": shape.colour, "kind": shape.kind}
    return " ".join(values[a] for a in attrs)


def indefinite(shape: Shape) -> str:
    """ "a small red circle" """
    text = noun(shape)
    return f"{article(text)} {text}"


def _matches(shape: Shape, scene: Scene, attrs: Sequence[str]) -> list[Shape]:
    want = [getattr(shape, a) for a in attrs]
    return [s for s in scene.shapes if [getattr(s, a) for a in attrs] == want]


def _qualifier(shape: Shape, group: list[Shape]) -> str | None:
    """A positional qualifier that singles ``shape`` out of ``group`` (which contains it), or None."""
    others = [s for s in group if s.id != shape.id]
    two = len(group) == 2
    if all(shape.x + _MARGIN <= o.x for o in others):
        return "on the left" if two else "furthest to the left"
    if all(shape.x - _MARGIN >= o.x for o in others):
        return "on the right" if two else "furthest to the right"
    if all(shape.y + _MARGIN <= o.y for o in others):
        return "at the top" if two else "nearest the top"
    if all(shape.y - _MARGIN >= o.y for o in others):
        return "at the bottom" if two else "nearest the bottom"
    return None


def references(shape: Shape, scene: Scene) -> list[str]:
    """Every definite description that picks out ``shape`` alone in ``scene``, shortest first."""
    out: list[str] = []
    for attrs in (("kind",), ("colour", "kind"), ("size", "kind"), ("size", "colour", "kind")):
        group = _matches(shape, scene, attrs)
        if len(group) == 1:
            out.append(f"the {noun(shape, attrs)}")
        else:
            qual = _qualifier(shape, group)
            if qual is not None:
                out.append(f"the {noun(shape, attrs)} {qual}")
    return sorted(dict.fromkeys(out), key=lambda p: len(p.split()))


def refer(shape: Shape, scene: Scene, rng: random.Random) -> str | None:
    """A definite description of ``shape`` in ``scene``: usually the shortest, sometimes a fuller one for variety.

    Returns None when no description is unique (two look-alikes side by side); pick another target then.
    """
    options = references(shape, scene)
    if not options:
        return None
    return options[0] if rng.random() < 0.6 else rng.choice(options)

"""ShapesWorld scene graphs: a background and a few coloured shapes, in canvas fractions so any resolution works.

Coordinates are fractions of the canvas (x to the right, y down); a shape's ``r`` is its radius as a fraction of the
canvas side. Scenes are frozen values: every edit makes a new scene, and two scenes are equal exactly when they
render to the same image.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

RGB = tuple[int, int, int]

#: Object colours: saturated, far apart, and each far from every background colour.
COLOURS: dict[str, RGB] = {
    "red": (214, 39, 40),
    "orange": (245, 130, 32),
    "yellow": (238, 196, 18),
    "green": (44, 160, 44),
    "blue": (31, 90, 200),
    "purple": (128, 60, 178),
    "pink": (236, 100, 170),
    "brown": (133, 82, 46),
    "black": (30, 30, 30),
    "teal": (0, 148, 148),
}

#: Background colours: light, so every object colour stands out.
BACKGROUNDS: dict[str, RGB] = {
    "white": (250, 250, 250),
    "cream": (246, 238, 218),
    "light grey": (218, 218, 218),
    "pale blue": (214, 230, 246),
    "pale green": (218, 240, 218),
    "pale pink": (248, 224, 230),
}

TEXTURES = ("plain", "dotted", "striped", "checkered")
KINDS = ("circle", "square", "triangle", "diamond", "star", "hexagon")
#: Kinds drawn upright: rotation is decoration on the others (within +-12 degrees), and would blur these kinds.
UPRIGHT = ("circle", "square")

#: Radius (canvas fraction) at the centre of each size class used when sampling.
SIZES: dict[str, float] = {"small": 0.075, "medium": 0.105, "large": 0.14}
#: Upper radius bounds of the size words used to *describe* a shape; edits can make tiny or huge ones.
SIZE_WORDS: tuple[tuple[str, float], ...] = (
    ("tiny", 0.06),
    ("small", 0.09),
    ("medium", 0.123),
    ("large", 0.175),
    ("huge", math.inf),
)

#: Circumradius of the widest kind (a square's corner) as a multiple of ``r``; placement keeps this clear.
EXTENT = 1.2
#: Smallest gap between two shapes' bounding circles, and between a shape and the canvas edge.
GAP = 0.03
EDGE = 0.02


def near_shade(rgb: RGB) -> RGB:
    """A shade a critic should notice side by side but still call by the same colour name (the subtle miss)."""
    if sum(rgb) < 150:  # black: a lighter black is the only near shade that stays "black"
        return (75, 75, 75)
    return (round(rgb[0] * 0.74), round(rgb[1] * 0.74), round(rgb[2] * 0.74))


def blend(a: RGB, b: RGB, t: float) -> RGB:
    """``a`` moved a fraction ``t`` of the way toward ``b``."""
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def size_word(r: float) -> str:
    """The size word for a radius (tiny, small, medium, large, huge)."""
    for word, bound in SIZE_WORDS:
        if r < bound:
            return word
    raise ValueError(f"radius {r} has no size word")


@dataclass(frozen=True)
class Shape:
    """One object of a scene.

    Attributes:
        id: stable identity across edits (how diffs match objects).
        kind: one of :data:`KINDS`.
        colour: the colour name in :data:`COLOURS`; what a describer would call it.
        x: centre, fraction of the canvas width.
        y: centre, fraction of the canvas height.
        r: radius, fraction of the canvas side.
        angle: rotation in degrees.
        shade: an off-palette fill (near shade, faint tint); None draws the palette colour.
        alpha: opacity; below 1 the background shows through (a faded or ghost object).
        aspect: horizontal stretch factor (a form change).
        erase: fraction of the shape cut away from its right side (a partial removal).
        broken: structural damage from 0 (intact) to 1 (jagged, with a chunk missing).
        outline: drawn as an outline instead of filled.
    """

    id: int
    kind: str
    colour: str
    x: float
    y: float
    r: float
    angle: float = 0.0
    shade: RGB | None = None
    alpha: float = 1.0
    aspect: float = 1.0
    erase: float = 0.0
    broken: float = 0.0
    outline: bool = False

    @property
    def extent(self) -> float:
        """Radius of the bounding circle (what placement keeps apart)."""
        return self.r * EXTENT * max(1.0, self.aspect)

    @property
    def rgb(self) -> RGB:
        return self.shade if self.shade is not None else COLOURS[self.colour]

    @property
    def size(self) -> str:
        return size_word(self.r)

    def moved(self, x: float, y: float) -> Shape:
        return replace(self, x=x, y=y)

    def as_kind(self, kind: str) -> Shape:
        """This shape drawn as another kind: upright when that kind is always drawn so."""
        return replace(self, kind=kind, angle=0.0 if kind in UPRIGHT else self.angle)


@dataclass(frozen=True)
class Background:
    """The canvas behind the shapes.

    Attributes:
        colour: a name in :data:`BACKGROUNDS`.
        texture: plain, dotted, striped or checkered (drawn a little darker than the colour).
        tint: a small RGB offset added to the background colour (a minor unintended change).
    """

    colour: str
    texture: str = "plain"
    tint: RGB = (0, 0, 0)

    @property
    def rgb(self) -> RGB:
        base = BACKGROUNDS[self.colour]
        return (
            min(255, max(0, base[0] + self.tint[0])),
            min(255, max(0, base[1] + self.tint[1])),
            min(255, max(0, base[2] + self.tint[2])),
        )


@dataclass(frozen=True)
class Scene:
    """A background, shapes drawn in order (later on top) and a global tone.

    Attributes:
        background: the canvas.
        shapes: the objects, bottom to top.
        tone: global warmth shift in [-1, 1]; a colour-temperature change, which the consistency rubric excuses.
    """

    background: Background
    shapes: tuple[Shape, ...] = field(default_factory=tuple)
    tone: float = 0.0

    def get(self, shape_id: int) -> Shape:
        for shape in self.shapes:
            if shape.id == shape_id:
                return shape
        raise KeyError(f"no shape with id {shape_id} in the scene")

    def ids(self) -> set[int]:
        return {s.id for s in self.shapes}

    def next_id(self) -> int:
        return max((s.id for s in self.shapes), default=-1) + 1

    def without(self, shape_id: int) -> Scene:
        return replace(self, shapes=tuple(s for s in self.shapes if s.id != shape_id))

    def with_shape(self, shape: Shape) -> Scene:
        """The scene with ``shape`` replacing the shape of the same id, or added on top when the id is new."""
        if shape.id in self.ids():
            return replace(self, shapes=tuple(shape if s.id == shape.id else s for s in self.shapes))
        return replace(self, shapes=(*self.shapes, shape))

    def kinds(self) -> set[str]:
        return {s.kind for s in self.shapes}


def fits(shape: Shape, others: Iterable[Shape], overlap: bool = False) -> bool:
    """Whether ``shape`` lies inside the canvas and, unless ``overlap``, keeps a gap from every other shape."""
    return spot_free(shape.x, shape.y, shape.extent, shape.id, others, overlap)


def spot_free(x: float, y: float, e: float, sid: int, others: Iterable[Shape], overlap: bool) -> bool:
    """Whether a bounding circle at (x, y) with radius ``e`` fits among ``others`` (ignoring the one with ``sid``)."""
    # Plain floats rather than Shape objects: placement tries many spots, and building each one is what costs.
    if not (EDGE + e <= x <= 1 - EDGE - e and EDGE + e <= y <= 1 - EDGE - e):
        return False
    return overlap or all(math.hypot(x - o.x, y - o.y) >= e + o.extent + GAP for o in others if o.id != sid)


def place(shape: Shape, scene: Scene, rng: random.Random, tries: int = 60, overlap: bool = False) -> Shape | None:
    """``shape`` moved to a random free spot of ``scene`` (ignoring its own old position), or None when full."""
    e = shape.extent
    lo, hi = EDGE + e, 1 - EDGE - e
    if lo > hi:
        return None
    for _ in range(tries):
        x, y = rng.uniform(lo, hi), rng.uniform(lo, hi)
        if spot_free(x, y, e, shape.id, scene.shapes, overlap):
            return shape.moved(x, y)
    return None


def random_shape(
    rng: random.Random,
    shape_id: int,
    kinds: Sequence[str] = KINDS,
    colours: Sequence[str] = tuple(COLOURS),
    sizes: Sequence[str] = tuple(SIZES),
) -> Shape:
    """A shape with random kind, colour, size class and rotation, at the centre (place it with :func:`place`)."""
    kind = rng.choice(list(kinds))
    angle = 0.0 if kind in UPRIGHT else rng.uniform(-12, 12)
    r = SIZES[rng.choice(list(sizes))] * rng.uniform(0.95, 1.05)
    return Shape(shape_id, kind, rng.choice(list(colours)), 0.5, 0.5, r, angle)


def sample_scene(
    rng: random.Random,
    n_shapes: tuple[int, int] = (1, 4),
    textured: float = 0.35,
    overlap: bool = False,
) -> Scene:
    """A random scene with between ``n_shapes[0]`` and ``n_shapes[1]`` shapes (fewer only if the canvas is full).

    Args:
        rng: the random source; the scene is a pure function of its state.
        n_shapes: inclusive range of the number of shapes.
        textured: probability of a textured (rather than plain) background.
        overlap: let shapes overlap (later ones drawn on top); edits keep this off so every change stays visible.
    """
    bg = Background(
        rng.choice(list(BACKGROUNDS)),
        rng.choice(TEXTURES[1:]) if rng.random() < textured else "plain",
    )
    scene = Scene(bg)
    for _ in range(rng.randint(*n_shapes)):
        shape = place(random_shape(rng, scene.next_id()), scene, rng, overlap=overlap)
        if shape is not None:
            scene = scene.with_shape(shape)
    return scene

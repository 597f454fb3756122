"""Fit ShapesWorld outlines to a component's coverage: which kind, size, rotation, stretch and cut draws it.

Coverage is how much of each pixel a shape covers (0-1), read by ``read`` from the image. Candidates come from the
coverage's area and second moments, each is drawn exactly as the renderer draws it (:func:`coverage`), and the one
whose coverage is closest wins; its misfit says how sure the reading is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from firm.worlds.shapes.render import _paint, outline_points, supersample
from firm.worlds.shapes.scene import KINDS, UPRIGHT, Shape

__all__ = ["ANGLES", "MIN_CUT_AREA", "ROUND", "coverage", "fit_cut", "fit_outline"]

#: Rotations tried for the other kinds, degrees.
ANGLES = tuple(float(a) for a in range(-15, 16, 3))
#: A stretch within this share of 1 is read as none (small shapes' moments are a few pixels' worth).
ROUND = 0.12
#: Share of a prior shape's area that must be missing before it is read as partly cut away (ShapesWorld cuts half).
MIN_CUT_AREA = 0.12


#: How far (in supersampled pixels) the rasteriser fills beyond each kind's geometric outline, measured on renders.
_BLEED = {"circle": 0.45, "square": 0.51, "triangle": 0.32, "diamond": 0.41, "star": 0.32, "hexagon": 0.31}


@lru_cache(maxsize=256)
def _unit_moments(kind: str, angle: float) -> tuple[float, float, float, float, float]:
    """Area, second moments (xx, yy, xy) and perimeter of a kind with r = 1 at ``angle``, from its outline."""
    if kind == "circle":
        return math.pi, math.pi / 4, math.pi / 4, 0.0, 2 * math.pi
    pts = outline_points(Shape(0, kind, "red", 0.0, 0.0, 1.0, angle), 1)
    perimeter = sum(math.dist(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts)))
    return (*_polygon_moments(pts), perimeter)


def _radius(kind: str, angle: float, area: float, aspect: float, size: int) -> float:
    """The radius (canvas fraction) whose drawing covers ``area`` pixels: geometric area plus the raster's bleed."""
    a1, _, _, _, p1 = _unit_moments(kind, angle)
    a, b = a1 * aspect, p1 * (1 + aspect) / 2 * _BLEED[kind] / supersample(size)
    return (-b + math.sqrt(b * b + 4 * a * area)) / (2 * a) / size


def _polygon_moments(pts: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    a = ixx = iyy = ixy = 0.0
    n = len(pts)
    for i in range(n):
        x0, y0 = pts[i]
        x1, y1 = pts[(i + 1) % n]
        c = x0 * y1 - x1 * y0
        a += c
        ixx += c * (x0 * x0 + x0 * x1 + x1 * x1)
        iyy += c * (y0 * y0 + y0 * y1 + y1 * y1)
        ixy += c * (x0 * y1 + 2 * x0 * y0 + 2 * x1 * y1 + x1 * y0)
    a /= 2
    sign = 1.0 if a >= 0 else -1.0
    # second moments about the centroid (every kind's outline is centred on its origin)
    return abs(a), sign * ixx / 12, sign * iyy / 12, sign * ixy / 24


def coverage(shape: Shape, size: int, origin: tuple[int, int], box: tuple[int, int]) -> np.ndarray:
    """How much of each pixel of a box of the image ``shape`` covers (0-1), drawn exactly as the renderer draws it.

    Args:
        shape: the shape (colour and opacity are ignored).
        size: the image side.
        origin: the box's top-left pixel (x, y).
        box: the box's (width, height) in pixels.
    """
    ss = supersample(size)
    canvas = size * ss
    moved = replace(shape, x=shape.x - origin[0] / size, y=shape.y - origin[1] / size)
    img = Image.new("L", (box[0] * ss, box[1] * ss), 0)
    width = max(1, round(shape.r * canvas * 0.22)) if shape.outline else 0
    _paint(ImageDraw.Draw(img), moved, canvas, 255, width, shape.kind == "circle" and shape.broken == 0)
    left = (moved.x + shape.extent * (1 - 2 * shape.erase)) * canvas
    if shape.erase > 0 and left < img.width:
        ImageDraw.Draw(img).rectangle((max(0.0, left), 0, img.width, img.height), fill=0)
    return np.asarray(img.reduce(ss), dtype=np.float32) / 255.0


def fit_outline(cover: np.ndarray, origin: tuple[int, int], size: int, mine: np.ndarray) -> tuple[Shape, float]:
    """The kind, centre, radius, rotation and stretch whose drawing best matches ``cover``; and its residual."""
    h, w = cover.shape
    area = float(cover.sum())
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cx, cy = float((cover * gx).sum()) / area, float((cover * gy).sum()) / area
    cxx = float((cover * (gx - cx) ** 2).sum()) / area
    cyy = float((cover * (gy - cy) ** 2).sum()) / area
    x, y = (cx + origin[0]) / size, (cy + origin[1]) / size
    outline = _looks_outlined(cover, cx, cy)
    if outline:  # an outline's moments are those of the filled shape inside it
        filled = _fill_holes(cover)
        area = float(filled.sum())
        cx, cy = float((filled * gx).sum()) / area, float((filled * gy).sum()) / area
        cxx = float((filled * (gx - cx) ** 2).sum()) / area
        cyy = float((filled * (gy - cy) ** 2).sum()) / area
        x, y = (cx + origin[0]) / size, (cy + origin[1]) / size
    ring = float(cover.sum())
    best: tuple[float, Shape] | None = None
    for kind in KINDS:
        for angle in (0.0,) if kind in UPRIGHT else ANGLES:
            for shape in _candidates(kind, angle, x, y, area, cxx, cyy, size, outline):
                fit = coverage(shape, size, origin, (w, h))
                err = float(np.abs(fit - cover).sum()) / ring
                if best is None or err < best[0]:
                    best = (err, shape)
    assert best is not None
    err, shape = best
    if shape.kind not in UPRIGHT:  # refine the rotation by half degrees around the best coarse one
        for angle in np.arange(shape.angle - 1.5, shape.angle + 1.6, 0.5):
            for cand in _candidates(shape.kind, float(angle), x, y, area, cxx, cyy, size, outline):
                fit = coverage(cand, size, origin, (w, h))
                e = float(np.abs(fit - cover).sum()) / ring
                if e < err:
                    err, shape = e, cand
    return shape, err


def fit_cut(cover: np.ndarray, origin: tuple[int, int], size: int, prior: Shape) -> tuple[Shape, float] | None:
    """``prior`` in its place with its right side cut away where the covered pixels end; None if it is elsewhere,
    or if no more of it is missing than a blur or a resampling shaves off its corners."""
    h, w = cover.shape
    # Blur spreads coverage but keeps its sum: a cut shows as area gone, a softened corner does not.
    if float(cover.sum()) > (1 - MIN_CUT_AREA) * _area(replace(prior, erase=0.0), size):
        return None
    cols = np.nonzero(cover.max(axis=0) > 0.5)[0]
    rows = np.nonzero(cover.max(axis=1) > 0.5)[0]
    if not len(cols):
        return None
    left, right = (origin[0] + cols[0]) / size, (origin[0] + cols[-1] + 1) / size
    top, bottom = (origin[1] + rows[0]) / size, (origin[1] + rows[-1] + 1) / size
    if not (left - 0.02 <= prior.x - prior.r * 0.5 and prior.x - 0.03 < right and top < prior.y < bottom):
        return None
    # Where the covered pixels end says roughly how much is cut; the drawing decides within a pixel either side.
    guess = (prior.x + prior.extent - right) / (2 * prior.extent)
    best: tuple[Shape, float] | None = None
    for erase in np.arange(round(guess, 2) - 0.1, round(guess, 2) + 0.101, 0.02):
        if not 0.02 <= erase <= 0.98:
            continue
        shape = replace(prior, erase=round(float(erase), 2))
        err = float(np.abs(coverage(shape, size, origin, (w, h)) - cover).sum()) / float(cover.sum())
        if best is None or err < best[1]:
            best = (shape, err)
    return best


def _area(shape: Shape, size: int) -> float:
    """The pixels' worth of coverage ``shape`` draws in an image of side ``size``."""
    reach = math.ceil(shape.r * size * max(shape.aspect, 1 / shape.aspect) * 1.5) + 2
    origin = (math.floor(shape.x * size) - reach, math.floor(shape.y * size) - reach)
    return float(coverage(shape, size, origin, (2 * reach + 1, 2 * reach + 1)).sum())


def _fill_holes(cover: np.ndarray) -> np.ndarray:
    """``cover`` with what a ring encloses counted as covered: empty pixels the box's border cannot reach."""
    h, w = cover.shape
    empty = cover < 0.2  # a one-pixel ring is only partly covered, and must not leak
    reached = np.zeros_like(empty)
    queue = deque((y, x) for y in range(h) for x in (0, w - 1)) + deque((y, x) for y in (0, h - 1) for x in range(w))
    while queue:
        y, x = queue.popleft()
        if 0 <= y < h and 0 <= x < w and empty[y, x] and not reached[y, x]:
            reached[y, x] = True
            queue.extend(((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)))
    inside = empty & ~reached
    # The stroke is drawn inside the outline, so a pixel beside the enclosed hole is inside it too: its partial cover
    # is the stroke's inner edge, and counting it as partial would shrink the shape by a pixel all round.
    beside = inside.copy()
    beside[1:] |= inside[:-1]
    beside[:-1] |= inside[1:]
    beside[:, 1:] |= inside[:, :-1]
    beside[:, :-1] |= inside[:, 1:]
    filled = cover.copy()
    filled[beside] = 1.0
    return filled


def _looks_outlined(cover: np.ndarray, cx: float, cy: float) -> bool:
    """An outlined shape leaves its middle uncovered."""
    iy, ix = int(cy), int(cx)
    centre = cover[max(0, iy - 1) : iy + 2, max(0, ix - 1) : ix + 2]
    # a ring one pixel wide that straddles pixel edges covers each pixel half (0.5-0.75), never whole
    return float(centre.mean()) < 0.3 and float(cover.max()) > 0.45


def _candidates(
    kind: str, angle: float, x: float, y: float, area: float, cxx: float, cyy: float, size: int, outline: bool
) -> Iterator[Shape]:
    """Shapes of one kind and rotation whose area and second moments match the component's."""
    _, ixx, iyy, _, _ = _unit_moments(kind, angle)
    aspect = math.sqrt(max(cxx, 1e-6) / max(cyy, 1e-6) * iyy / ixx)
    aspect = 1.0 if abs(aspect - 1) < ROUND else aspect
    r = _radius(kind, angle, area, aspect, size)
    if not outline:
        yield Shape(0, kind, "red", x, y, r, angle, aspect=aspect)
        return
    for scale in (0.97, 1.0, 1.03):  # the filled inside of a ring is known to a pixel's bleed
        yield Shape(0, kind, "red", x, y, r * scale, angle, aspect=aspect, outline=True)

"""Draw a scene graph with PIL: supersample, then box-filter down, which gives antialiased edges cheaply.

Rendering is a pure function of (scene, size): the same scene gives byte-identical pixels, and textures are laid
out in canvas fractions so a scene looks the same at 32 and at 512 px.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

from PIL import Image, ImageDraw

from firm.worlds.shapes.scene import EXTENT, RGB, Background, Scene, Shape

MIN_SIZE, MAX_SIZE = 32, 512

#: Vertex count, first vertex angle and circumradius (multiple of ``r``, at most EXTENT) of each polygon kind.
_SPOKES = {"square": (4, 45.0, 1.2), "triangle": (3, -90.0, 1.2), "hexagon": (6, 0.0, 1.05)}
_DIAMOND = [(0.0, -1.2), (0.78, 0.0), (0.0, 1.2), (-0.78, 0.0)]
_STAR_INNER = 0.48


def supersample(size: int) -> int:
    """Supersampling factor: small images need more to get smooth edges, large ones are smooth already."""
    return 4 if size <= 128 else 2


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render ``scene`` to a ``size`` x ``size`` RGB image.

    Raises:
        ValueError: for a size outside 32-512 px.
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"image size must be in {MIN_SIZE}-{MAX_SIZE} px, got {size}")
    ss = supersample(size)
    canvas = size * ss
    img = _background(scene.background, canvas).copy()
    draw = ImageDraw.Draw(img)
    for shape in scene.shapes:
        _draw_shape(img, draw, shape, canvas)
    img = img.reduce(ss)
    if scene.tone:
        img = _warm(img, scene.tone)
    return img


@lru_cache(maxsize=64)
def _background(bg: Background, canvas: int) -> Image.Image:
    img = Image.new("RGB", (canvas, canvas), bg.rgb)
    if bg.texture == "plain":
        return img
    ink = tuple(round(c * 0.9) for c in bg.rgb)
    draw = ImageDraw.Draw(img)
    step = canvas / 8
    if bg.texture == "dotted":
        rad = canvas / 70
        for i in range(8):
            for j in range(8):
                cx, cy = (i + 0.5) * step, (j + 0.5) * step
                draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=ink)
    elif bg.texture == "striped":
        width = max(1, round(canvas / 48))
        for k in range(-8, 17):
            x0 = k * step
            draw.line((x0, 0, x0 + canvas, canvas), fill=ink, width=width)
    elif bg.texture == "checkered":
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    draw.rectangle((i * step, j * step, (i + 1) * step, (j + 1) * step), fill=ink)
    else:
        raise ValueError(f"unknown background texture {bg.texture!r}")
    return img


def outline_points(shape: Shape, canvas: int) -> list[tuple[float, float]]:
    """The shape's outline as a polygon in pixel coordinates (circles as a 48-gon), damage included."""
    r = shape.r * canvas
    if shape.kind == "circle":
        pts = [(math.cos(2 * math.pi * k / 48), math.sin(2 * math.pi * k / 48)) for k in range(48)]
    elif shape.kind == "star":
        pts = []
        for k in range(10):
            rad = EXTENT if k % 2 == 0 else EXTENT * _STAR_INNER
            a = math.radians(-90 + 36 * k)
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape.kind == "diamond":
        pts = list(_DIAMOND)
    else:
        n, start, rad = _SPOKES[shape.kind]
        pts = [
            (rad * math.cos(math.radians(start + 360 * k / n)), rad * math.sin(math.radians(start + 360 * k / n)))
            for k in range(n)
        ]
    if shape.broken > 0:
        pts = _break(_densify(pts, 6), shape)
    rot = math.radians(shape.angle)
    cos_a, sin_a = math.cos(rot), math.sin(rot)
    cx, cy = shape.x * canvas, shape.y * canvas
    return [(cx + r * shape.aspect * (px * cos_a - py * sin_a), cy + r * (px * sin_a + py * cos_a)) for px, py in pts]


def _densify(pts: list[tuple[float, float]], per_edge: int) -> list[tuple[float, float]]:
    out = []
    for i, (x0, y0) in enumerate(pts):
        x1, y1 = pts[(i + 1) % len(pts)]
        out += [(x0 + (x1 - x0) * t / per_edge, y0 + (y1 - y0) * t / per_edge) for t in range(per_edge)]
    return out


def _break(pts: list[tuple[float, float]], shape: Shape) -> list[tuple[float, float]]:
    """Jagged edges plus a bite taken out; the damage pattern is fixed by the shape's id so renders repeat."""
    rng = random.Random(shape.id * 7919 + round(shape.broken * 1000))
    bite_at = rng.uniform(0, 2 * math.pi)
    bite_half = 0.35 + 0.5 * shape.broken  # radians either side of the bite's centre
    out = []
    for px, py in pts:
        a = math.atan2(py, px)
        scale = 1 + shape.broken * rng.uniform(-0.25, 0.12)
        if abs((a - bite_at + math.pi) % (2 * math.pi) - math.pi) < bite_half:
            scale *= 1 - 0.65 * shape.broken
        out.append((px * scale, py * scale))
    return out


def _draw_shape(img: Image.Image, draw: ImageDraw.ImageDraw, shape: Shape, canvas: int) -> None:
    width = max(1, round(shape.r * canvas * 0.22)) if shape.outline else 0
    plain_ellipse = shape.kind == "circle" and shape.broken == 0
    if shape.alpha >= 1 and shape.erase <= 0:
        _paint(draw, shape, canvas, shape.rgb, width, plain_ellipse)
        return
    # Faded or partly erased shapes go through a mask so the background (and its texture) shows through.
    mask = Image.new("L", img.size, 0)
    _paint(ImageDraw.Draw(mask), shape, canvas, round(255 * shape.alpha), width, plain_ellipse)
    if shape.erase > 0:
        left = (shape.x + shape.extent * (1 - 2 * shape.erase)) * canvas
        ImageDraw.Draw(mask).rectangle((left, 0, canvas, canvas), fill=0)
    e = shape.extent * canvas + 2
    box = (
        max(0, int(shape.x * canvas - e)),
        max(0, int(shape.y * canvas - e)),
        min(canvas, int(shape.x * canvas + e) + 1),
        min(canvas, int(shape.y * canvas + e) + 1),
    )
    img.paste(shape.rgb, box, mask.crop(box))


def _paint(draw: ImageDraw.ImageDraw, shape: Shape, canvas: int, ink: RGB | int, width: int, ellipse: bool) -> None:
    if ellipse:
        rx, ry = shape.r * shape.aspect * canvas, shape.r * canvas
        box = (shape.x * canvas - rx, shape.y * canvas - ry, shape.x * canvas + rx, shape.y * canvas + ry)
        if width:
            draw.ellipse(box, outline=ink, width=width)
        else:
            draw.ellipse(box, fill=ink)
        return
    pts = outline_points(shape, canvas)
    if width:
        draw.polygon(pts, outline=ink, width=width)
    else:
        draw.polygon(pts, fill=ink)


def _warm(img: Image.Image, tone: float) -> Image.Image:
    """A global colour-temperature shift: red up, blue down for tone > 0 (and the reverse below 0)."""
    shift = round(18 * tone)
    lut = [min(255, max(0, v + shift)) for v in range(256)]
    lut += list(range(256))
    lut += [min(255, max(0, v - shift)) for v in range(256)]
    return img.point(lut)

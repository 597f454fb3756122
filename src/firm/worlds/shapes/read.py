"""Read a ShapesWorld scene back from its pixels: the background first, then each shape by analysis-by-synthesis.

1. **Background**: the commonest colour is explained as a palette background with a grey tint and a global tone
   shift (the only ways ShapesWorld changes it); each texture is rendered and the best match wins (``background``).
2. **Shapes**: pixels that differ from that rendered background form connected components (ShapesWorld keeps shapes
   apart, so one component is one shape). A component's fill is fitted as a palette colour (or its near shade, or a
   faint tint toward another palette colour) composited over the background with some opacity, which turns every
   pixel into a coverage value. Kind, size, rotation and stretch are then fitted by rendering candidate outlines with
   the renderer's own geometry and keeping the closest (``outline``).

Nothing is guessed: an image that is not square, too small, or whose background is not a ShapesWorld background is
refused with :class:`Unreadable`, and each shape carries the residual of its fit so callers can refuse a poor one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from firm.worlds.shapes.background import explanations, rendered, tone_shift
from firm.worlds.shapes.outline import coverage, fit_cut, fit_outline
from firm.worlds.shapes.render import MAX_SIZE, MIN_SIZE
from firm.worlds.shapes.scene import COLOURS, RGB, SIZES, Background, Scene, Shape, blend
from firm.worlds.shapes.scene import near_shade as _near_shade

#: A shape whose best outline misses this share of its coverage is reported as poorly read.
POOR_FIT = 0.25
#: Mean difference (levels) under which a fill is read as an opaque palette colour, shade or tint.
OPAQUE_FIT = 4.0
#: Median coverage of a shape's core pixels above which their mix with the background is read as blur at the edge of
#: an opaque fill; ShapesWorld's translucent fills are at most 0.6 opaque.
OPAQUE_COVER = 0.9
#: Largest coverage read at a blurred or resampled fill's pixels: a resampler's ringing past the fill colour. Below
#: what would read black as its near shade (1.26 over the lightest background).
OVERSHOOT = 1.15

#: Opacity under which a shape is faint (ShapesWorld fades shapes to at most 0.6), and how much worse than the best
#: outline a source shape's own outline may fit such a shape and still be read as that shape fading.
FAINT, FAINT_MARGIN = 0.6, 0.05
#: ... and how many levels worse its own colour may explain the faint fill and still be read as its colour.
FAINT_COLOUR = 2.0

#: Radius (canvas fraction) under which a read shape is a speck, not a ShapesWorld shape: two thirds of the smallest
#: radius drawn (0.075, less 5%); compression ringing read as a shape is about half of that.
SPECK_R = 0.67 * 0.95 * min(SIZES.values())


def speck_pixels(size: int) -> float:
    """The pixels a speck of radius :data:`SPECK_R` covers in an image of side ``size``: fewer is no shape."""
    return math.pi * (SPECK_R * size) ** 2


class Unreadable(ValueError):
    """The image cannot be read as a ShapesWorld scene; the message says why."""


@dataclass(frozen=True)
class ShapeReading:
    """One shape as read.

    Attributes:
        shape: the shape (its id numbers the shapes top to bottom, left to right).
        residual: share of the shape's coverage the best outline does not explain (0 is a perfect fit).
        colour_residual: mean per-channel difference (levels) between the fill and the fitted colour model.
        pixels: pixels in the shape's component.
        palette: whether a ShapesWorld fill (palette colour, near shade or tint, at some opacity) explains the fill;
            when none does, the colour is read as seen, named after the nearest palette colour.
    """

    shape: Shape
    residual: float
    colour_residual: float
    pixels: int
    palette: bool = True

    @property
    def poor(self) -> bool:
        return self.residual > POOR_FIT


@dataclass(frozen=True)
class SceneReading:
    """A scene read from an image.

    Attributes:
        scene: the scene graph (shape ids from 0).
        shapes: one reading per shape, in ``scene.shapes`` order.
        size: the image side the scene was read at.
        background_error: mean per-channel difference (levels) between the image and the rendered background,
            outside the shapes.
        noise: a robust estimate of the pixel noise (levels) left after the background is explained.
        alternatives: other backgrounds the pixels admit as well (a tint and a tone, or a slight colour cast, can
            make one palette background look like another) where the shapes cannot tell them apart.
    """

    scene: Scene
    shapes: tuple[ShapeReading, ...]
    size: int
    background_error: float
    noise: float
    alternatives: tuple[Background, ...] = ()

    def reasons(self, exact_colours: bool = False, whole: bool = False) -> list[str]:
        """Why this reading should not be trusted, one line per problem (empty when it is sound).

        Args:
            exact_colours: also distrust a fill that no ShapesWorld fill explains. Its colour is read as seen, a few
                levels off its palette colour under blur, resampling or compression, which an edit's comparison of
                two readings would count as a changed shade.
            whole: also distrust a shape far smaller than any ShapesWorld shape. A generation draws whole shapes,
                so such a speck is compression ringing or noise read as a shape (an edit's unfinished removal can
                leave one, so edits leave this off).
        """
        out = [
            f"shape {i} ({r.shape.colour} {r.shape.kind}) does not match any ShapesWorld outline "
            f"({r.residual:.0%} of it unexplained)"
            for i, r in enumerate(self.shapes)
            if r.poor
        ]
        if exact_colours:
            out += [
                f"the fill {r.shape.shade} of shape {i} ({r.shape.colour} {r.shape.kind}) is no ShapesWorld colour, "
                f"shade or tint ({r.colour_residual:.0f} levels off the nearest)"
                for i, r in enumerate(self.shapes)
                if not r.palette
            ]
        if whole:
            out += [
                f"shape {i} ({r.shape.colour} {r.shape.kind}, {r.pixels} pixels) is far smaller than any ShapesWorld "
                "shape"
                for i, r in enumerate(self.shapes)
                if r.shape.r < SPECK_R
            ]
        if self.background_error > 12:
            out.append(f"the background differs from a ShapesWorld background by {self.background_error:.0f} levels")
        return out


def read_scene(image: Image.Image, priors: Sequence[Shape] = ()) -> SceneReading:
    """Read the scene an image shows.

    Args:
        image: the image.
        priors: shapes known from a related image (an edit's source). A shape that no outline explains is tried as
            one of them with part cut away, the way an unfinished removal looks.

    Raises:
        Unreadable: for a non-square image, a side under 32 px, or a background that no ShapesWorld background
            (palette colour, tint, tone, texture) explains.
    """
    img = _prepare(image)
    arr = np.asarray(img, dtype=np.float32)
    mode, options = explanations(arr)
    if not options:
        raise Unreadable(
            f"the commonest colour {tuple(round(float(c)) for c in mode)} is not a ShapesWorld background colour "
            "(with a tint or a tone shift)"
        )
    # A tint and a tone shift can also turn one palette background into another exactly (pale blue darkened is light
    # grey cooled); the tone shifts the shapes' colours too, the tint does not, so the shapes decide.
    readings = [(err, _read_over(arr, bg, tone, priors)) for err, bg, tone in options]

    def shades(reading: SceneReading) -> int:
        return sum(s.shape.shade is not None for s in reading.shapes)

    best = min(readings, key=lambda r: (shades(r[1]), r[0] + _colour_error(r[1])))[1]
    if best.background_error < 1.0 and best.scene.background.tint == (0, 0, 0) and best.scene.tone == 0:
        return best  # a palette background to the level: nothing else explains it as well
    others = tuple(r.scene.background for _, r in readings if r is not best and shades(r) == shades(best))
    return replace(best, alternatives=others)


def _colour_error(reading: SceneReading) -> float:
    return sum(s.colour_residual for s in reading.shapes) / max(1, len(reading.shapes))


def _read_over(arr: np.ndarray, background: Background, tone: float, priors: Sequence[Shape]) -> SceneReading:
    size = arr.shape[0]
    bg = rendered(background, tone, size)
    residual = np.abs(arr - bg).max(axis=2)
    noise = _noise(arr, bg, residual)
    threshold = max(7.0, 4.0 * noise)
    mask = residual > threshold
    readings = []
    labels = np.zeros(mask.shape, dtype=np.int32)
    components = _without_satellites(list(_components(mask)), mask.shape)
    for k, pixels in enumerate(components, 1):
        labels[pixels] = k
    for k, pixels in enumerate(components, 1):
        reading = _read_shape(arr, bg, labels, k, pixels, background, tone, size, priors)
        if reading is not None:
            readings.append(reading)
    readings.sort(key=lambda r: (round(r.shape.y, 2), r.shape.x))
    readings = [replace(r, shape=replace(r.shape, id=i)) for i, r in enumerate(readings)]
    outside = ~_dilate(mask)
    bg_error = float(np.abs(arr - bg)[outside].mean()) if outside.any() else 0.0
    scene = Scene(background, tuple(r.shape for r in readings), tone)
    return SceneReading(scene, tuple(readings), size, bg_error, noise)


def _prepare(image: Image.Image) -> Image.Image:
    if image.width != image.height:
        raise Unreadable(f"ShapesWorld images are square; this one is {image.width}x{image.height}")
    if image.width < MIN_SIZE:
        raise Unreadable(f"the image is {image.width} px; ShapesWorld scenes need at least {MIN_SIZE} px to read")
    img = image.convert("RGB")
    while img.width > MAX_SIZE // 2:  # area averaging keeps coverage; fitting is as exact at 256 px and faster
        even = img.width % 2 == 0
        img = img.reduce(2) if even else img.resize((MAX_SIZE // 2, MAX_SIZE // 2), Image.Resampling.BOX)
    return img


def _noise(arr: np.ndarray, bg: np.ndarray, residual: np.ndarray) -> float:
    """Robust pixel noise (levels) on pixels the background explains roughly (median absolute deviation)."""
    near = residual < 40
    if near.sum() < 16:
        return 0.0
    dev = (arr - bg)[near].ravel()
    return float(1.4826 * np.median(np.abs(dev - np.median(dev))))


# --- components --------------------------------------------------------------------------------------------------


def _components(mask: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """4-connected components of ``mask`` as (rows, cols) index arrays, in scan order."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, ys, xs = deque([(int(y0), int(x0))]), [], []
        while queue:
            y, x = queue.popleft()
            ys.append(y)
            xs.append(x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        yield np.array(ys), np.array(xs)


def _without_satellites(
    components: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Drop small components hugging a much larger one: compression ringing and blur halos, not shapes (ShapesWorld
    keeps shapes apart by more than the two pixels looked at here)."""
    labels = np.zeros(shape, dtype=np.int32)
    for k, (ys, xs) in enumerate(components, 1):
        labels[ys, xs] = k
    keep = []
    for k, (ys, xs) in enumerate(components, 1):
        near = np.zeros(shape, dtype=bool)
        near[ys, xs] = True
        near = _dilate(near, 2)
        bigger = [j for j in np.unique(labels[near]) if j and j != k and len(components[j - 1][0]) >= 4 * len(ys)]
        if not bigger:
            keep.append((ys, xs))
    return keep


def _dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


# --- one shape ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fill:
    colour: str
    shade: RGB | None
    alpha: float
    residual: float
    rgb: np.ndarray  # the fill colour as drawn (before the tone shift)
    palette: bool = True  # False: no ShapesWorld fill explains it, ``rgb`` is the colour as seen


def _palette_candidates() -> list[tuple[str, RGB | None, RGB]]:
    out: list[tuple[str, RGB | None, RGB]] = []
    for name, rgb in COLOURS.items():
        out.append((name, None, rgb))
        out.append((name, _near_shade(rgb), _near_shade(rgb)))
    return out


_PALETTE = _palette_candidates()
_TINTS = [(a, blend(COLOURS[a], COLOURS[b], 0.25)) for a in COLOURS for b in COLOURS if a != b]


def _opaque_residual(obs: np.ndarray, under: np.ndarray, rgb: np.ndarray) -> float:
    """Mean difference (levels) between ``obs`` and an opaque fill ``rgb`` that may be mixed with the background.

    A blurred or resampled image mixes even a shape's most covered pixels a little with what surrounds it, which
    moves them off the fill colour along the line toward the background (and a sharpening resampler such as bicubic
    overshoots past it, by up to ``OVERSHOOT``). Each pixel is therefore explained as the fill covering some share
    of it; when most pixels are nearly covered (at least ``OPAQUE_COVER``) that is the residual, else the fill is
    taken as covering them whole (an evenly faint fill is a translucent one, not a blur).
    """
    e = rgb - under
    c = np.clip(((obs - under) * e).sum(axis=1) / np.maximum((e * e).sum(axis=1), 1.0), 0.0, OVERSHOOT)
    if float(np.median(c)) >= OPAQUE_COVER:
        return float(np.abs(under + c[:, None] * e - obs).mean())
    return float(np.abs(rgb - obs).mean())


def _fit_fill(obs: np.ndarray, under: np.ndarray, under_plain: np.ndarray, tone: float) -> _Fill:
    """The fill of a shape from its most covered pixels.

    Opaque explanations come first (a palette colour, its near shade, or a faint tint from one palette colour toward
    another); only when none fits is the fill read as a palette colour or shade over the background at some opacity.

    Args:
        obs: [N, 3] observed pixels well inside the shape.
        under: [N, 3] the rendered background at the same pixels (tone applied).
        under_plain: the same before the tone shift.
        tone: the scene's tone (the fill is compared after the same shift).
    """
    shift = round(18 * tone)
    opaque = min(
        (
            (_opaque_residual(obs, under, tone_shift(np.array(rgb, dtype=np.float32), shift)), name, shade, rgb)
            for name, shade, rgb in [*_PALETTE, *((name, rgb, rgb) for name, rgb in _TINTS)]
        ),
        key=lambda c: c[0],
    )
    if opaque[0] <= OPAQUE_FIT:
        res, name, shade, rgb = opaque
        return _Fill(name, shade, 1.0, res, np.array(rgb, dtype=np.float32))
    best: _Fill | None = None
    for name, shade, rgb in _PALETTE:
        faded = _faded(obs, under_plain, tone, name, shade, rgb)
        if faded is not None and (best is None or faded.residual < best.residual):
            best = faded
    if best is None or opaque[0] <= best.residual:
        # Off the palette: the nearest palette name, the colour as seen (poorly explained, and reported so).
        res, name, _, _ = opaque
        seen = np.median(obs, axis=0) - np.array([shift, 0, -shift], dtype=np.float32)
        rgb = (round(float(seen[0])), round(float(seen[1])), round(float(seen[2])))
        return _Fill(name, rgb, 1.0, res, np.array(rgb, dtype=np.float32), palette=False)
    if best.alpha > 0.93:
        best = replace(best, alpha=1.0)
    return best


def _in_place_of(prior: Shape, shape: Shape, same_kind: bool = True) -> bool:
    """Whether ``shape`` stands where ``prior`` stood, at its size (and of its kind)."""
    near = math.hypot(prior.x - shape.x, prior.y - shape.y) <= 0.02 and abs(prior.r / shape.r - 1) <= 0.1
    return near and (prior.kind == shape.kind or not same_kind)


def _faded(
    obs: np.ndarray, under_plain: np.ndarray, tone: float, name: str, shade: RGB | None, rgb: RGB
) -> _Fill | None:
    """The fill ``rgb`` at the opacity that best explains ``obs`` over the background; None if under 0.05 opaque.

    Fitted before the tone shift, on channels the shift did not clip.
    """
    shift = round(18 * tone)
    seen = (obs > 0.5) & (obs < 254.5)
    d = np.where(seen, obs - np.array([shift, 0, -shift], dtype=np.float32) - under_plain, 0.0)
    e = np.where(seen, np.array(rgb, dtype=np.float32) - under_plain, 0.0)
    denom = float((e * e).sum())
    if denom < 1:
        return None
    alpha = min(float((d * e).sum()) / denom, 1.0)
    if alpha < 0.05:
        return None
    return _Fill(name, shade, alpha, float(np.abs(d - alpha * e).mean()), np.array(rgb, dtype=np.float32))


def _read_shape(
    arr: np.ndarray,
    bg: np.ndarray,
    labels: np.ndarray,
    k: int,
    pixels: tuple[np.ndarray, np.ndarray],
    background: Background,
    tone: float,
    size: int,
    priors: Sequence[Shape],
) -> ShapeReading | None:
    ys, xs = pixels
    if len(ys) < 3:
        return None  # a speck of noise, not a shape
    pad = 3
    y0, y1 = max(0, int(ys.min()) - pad), min(size, int(ys.max()) + pad + 1)
    x0, x1 = max(0, int(xs.min()) - pad), min(size, int(xs.max()) + pad + 1)
    box_arr, box_bg = arr[y0:y1, x0:x1], bg[y0:y1, x0:x1]
    mine = labels[y0:y1, x0:x1] == k
    others = (labels[y0:y1, x0:x1] != 0) & ~mine
    diff = np.abs(box_arr - box_bg).max(axis=2)
    # The fill is read where the shape covers whole pixels: the most changed pixels of its interior.
    core = mine & _erode(mine)
    core = core if core.sum() >= 3 else mine
    strong = core & (diff >= 0.85 * diff[core].max())
    core = strong if strong.sum() >= 3 else core
    plain = rendered(background, 0.0, size)[y0:y1, x0:x1] if tone else box_bg
    fill = _fit_fill(box_arr[core], box_bg[core], plain[core], tone)
    cover = _cover(box_arr, box_bg, fill, tone, others, mine)
    if cover.sum() < 1.0:
        return None  # under a pixel's worth of this colour: a speck, not a shape
    if not fill.palette and len(ys) < speck_pixels(size):
        return None  # a speck of no ShapesWorld colour: compression ringing or noise, not a shape or its remains
    shape, residual = fit_outline(cover, (x0, y0), size, mine)
    if shape.outline:
        fill, cover, shape, residual = _stroke(
            box_arr, box_bg, (fill, cover, shape, residual), tone, others, mine, (x0, y0), size
        )
    if residual > POOR_FIT / 2 or shape.aspect != 1:
        # A half-cut square and a squashed one draw the same pixels: where the source had that shape in that place,
        # an unfinished removal is the reading that keeps its identity.
        for prior in priors:
            cut = fit_cut(cover, (x0, y0), size, replace(prior, shade=None, alpha=1.0))
            if cut is not None and (cut[1] < residual or cut[1] < POOR_FIT / 2):
                shape, residual = cut
    if fill.alpha < FAINT and residual > 0.02:
        # A faint shape's outline drowns in noise: where the source had a shape in its place, the fading (an
        # unfinished removal) keeps that shape's outline unless the pixels clearly say otherwise.
        h, w = cover.shape
        for prior in priors:
            if not _in_place_of(prior, shape, same_kind=False):
                continue
            same = replace(prior, shade=None, alpha=1.0)
            err = float(np.abs(coverage(same, size, (x0, y0), (w, h)) - cover).sum()) / max(float(cover.sum()), 1.0)
            if err <= residual + FAINT_MARGIN:
                shape, residual = same, err
                break
    if fill.alpha < FAINT:
        # and so is its colour: a tenth of a fill's difference from the background is a few levels, which a slight
        # colour cast or noise moves toward another palette colour.
        for prior in priors:
            if not _in_place_of(prior, shape):
                continue
            faded = _faded(box_arr[core], plain[core], tone, prior.colour, prior.shade, prior.rgb)
            if faded is not None and faded.alpha < FAINT and faded.residual <= fill.residual + FAINT_COLOUR:
                fill = faded
            break
    shape = replace(shape, colour=fill.colour, shade=fill.shade, alpha=round(fill.alpha, 3))
    return ShapeReading(shape, residual, fill.residual, len(ys), fill.palette)


def _stroke(
    box_arr: np.ndarray,
    box_bg: np.ndarray,
    first: tuple[_Fill, np.ndarray, Shape, float],
    tone: float,
    others: np.ndarray,
    mine: np.ndarray,
    origin: tuple[int, int],
    size: int,
) -> tuple[_Fill, np.ndarray, Shape, float]:
    """An outline's fill and outline, read together.

    A stroke a pixel or two wide covers few pixels whole, so the fill read from its most changed pixels is partly
    background: a lighter shade and a wider ring explain them as well as the true colour and ring do, as far as
    those pixels go. Each candidate fill (the one read, the palette colour of that name, its near shade) gives its
    coverage and its best outline; the candidate whose drawing reproduces the pixels best is the reading.

    Args:
        first: the fill, coverage, outline and outline residual read first.
    """
    h, w = mine.shape
    fill = first[0]
    candidates = [fill]
    for shade in (None, _near_shade(COLOURS[fill.colour])):
        rgb = np.array(COLOURS[fill.colour] if shade is None else shade, dtype=np.float32)
        if (shade, 1.0) != (fill.shade, fill.alpha):
            candidates.append(_Fill(fill.colour, shade, 1.0, 0.0, rgb))
    near = _dilate(mine, 2) & ~others
    best: tuple[float, _Fill, np.ndarray, Shape, float] | None = None
    for cand in candidates:
        if cand is fill:
            _, cover, fitted, residual = first
        else:
            cover = _cover(box_arr, box_bg, cand, tone, others, mine)
            fitted, residual = fit_outline(cover, origin, size, mine)
        drawn = coverage(fitted, size, origin, (w, h))[..., None] * cand.alpha
        model = box_bg + drawn * (tone_shift(cand.rgb, round(18 * tone)) - box_bg)
        err = float(np.abs(model - box_arr)[near].mean())
        if best is None or err < best[0]:
            best = (err, cand, cover, fitted, residual)
    assert best is not None
    _, chosen, cover, fitted, residual = best
    if chosen is not fill:
        # how far the stroke's pixels, unmixed from the background by the drawn coverage, are from the fill
        drawn = coverage(fitted, size, origin, (w, h))
        stroke = mine & (drawn >= 0.5)
        if stroke.sum():
            unmixed = box_bg[stroke] + (box_arr[stroke] - box_bg[stroke]) / drawn[stroke][:, None]
            target = tone_shift(chosen.rgb, round(18 * tone))
            chosen = replace(chosen, residual=float(np.abs(unmixed - target).mean()))
    return chosen, cover, fitted, residual


def _cover(
    box_arr: np.ndarray, box_bg: np.ndarray, fill: _Fill, tone: float, others: np.ndarray, mine: np.ndarray
) -> np.ndarray:
    """How much of each pixel of the box ``fill`` covers (0-1): each pixel's share of the way from background to
    fill, kept to the component and its rim."""
    e = tone_shift(fill.rgb, round(18 * tone)) - box_bg
    d = box_arr - box_bg
    # A tone shift clips the background at 0 or 255 in red or blue while a mix with a darker fill is not clipped:
    # such channels say nothing about the share (a faint ghost read a fifth too faint); the others decide.
    clipped = (box_bg < 0.5) | (box_bg > 254.5)
    clipped &= ~clipped.all(axis=2, keepdims=True)
    e, d = np.where(clipped, 0.0, e), np.where(clipped, 0.0, d)
    cover = (d * e).sum(axis=2) / np.maximum((e * e).sum(axis=2), 1.0) / fill.alpha
    cover = np.clip(cover, 0.0, 1.0)
    cover[others | ~_dilate(mine, 2)] = 0.0
    return cover


def _erode(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    return out

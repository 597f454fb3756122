"""Read how degraded an image is: a severity (0-4) for each pixel-level kind of ``degrade.py``.

Blocks (JPEG) is read from the image alone: JPEG is applied last, so the luminance DCT coefficients of every 8x8
block sit on the lattice of one quantisation table. With the clean render of the scene, the other kinds are read by
analysis-by-synthesis: candidate degradations are applied to the clean render with ``degrade.apply_pixels`` and
compared with the image by robust statistics (L1 fits, trimmed means, areas of strong residual). The clean render is
found by :func:`read_quality`, which reads the scene under the degradations; without one no severity is read.

Array names carry their shape: ``img_HWC`` an RGB image as float32, ``mask_HW`` a boolean map, ``coef_BK`` the 64
DCT coefficients of each of B blocks.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, replace
from functools import cache, lru_cache

import numpy as np
from PIL import Image

from firm.worlds.shapes.broken import read_broken
from firm.worlds.shapes.degrade import _BLUR, _JPEG, _LEVELS, _MARKS, _NOISE, _WASHOUT, Degradation, apply_pixels
from firm.worlds.shapes.read import SceneReading, Unreadable, read_scene
from firm.worlds.shapes.render import MIN_SIZE, render
from firm.worlds.shapes.scene import BACKGROUNDS, COLOURS, TEXTURES, Background, Scene

PIXEL_KINDS = ("marks", "washout", "blur", "noise", "blocks", "banding")
#: Smallest image side read; JPEG blocks and the flat-region statistics need a few 8 x 8 blocks.
MIN_SIDE = 16

_SEVERITIES = range(5)
#: Seeds of the synthetic noise and marks that calibrate the statistics (fixed, so readings repeat).
_SYNTH_SEEDS = tuple(range(101, 109))
#: Spread (log units) of the stroke area of one mark, and of the log piece count, over seeds (train split, 64 px).
_AREA_SPREAD, _PIECE_SPREAD = 0.8, 0.35


@dataclass(frozen=True)
class FlawReading:
    """What :func:`read_flaws` measured.

    Attributes:
        severities: severity 0-4 of each kind in :data:`PIXEL_KINDS`.
        evidence: the statistic behind each severity: ``marks`` the share of pixels in stray strokes, ``washout``
            the blend factor toward grey, ``blur`` the Gaussian radius in pixels, ``noise`` the noise sigma,
            ``blocks`` the JPEG quality whose table fits (100 when none does), ``banding`` the number of grey levels
            (256 when not quantised); from :func:`read_quality` also ``broken``, the share of shapes read as broken.
        broken: severity 0-4 of broken shapes, None when not read (:func:`read_flaws` reads pixels only).
        broken_exact: whether ``broken`` is certain (see :func:`~firm.worlds.shapes.broken.read_broken`);
            otherwise it is the best estimate, and ``broken_reason`` says why it is not certain.
        broken_reason: why ``broken`` is not exact ('' when it is, or when it was not read).
    """

    severities: dict[str, int]
    evidence: dict[str, float]
    broken: int | None = None
    broken_exact: bool = False
    broken_reason: str = ""

    @property
    def degradation(self) -> Degradation:
        """The reading as a :class:`Degradation` (``broken`` 0 when it was not read)."""
        return Degradation(**self.severities, broken=self.broken or 0)

    @property
    def sub_scores(self) -> tuple[int, int, int]:
        """(aesthetics, technical, structure) of the reading; structure is 5 when broken shapes were not read."""
        return self.degradation.sub_scores


def read_flaws(image: Image.Image, clean: Image.Image) -> FlawReading:
    """Read the severity of each pixel-level degradation of ``image``.

    Args:
        image: the image to judge; L, RGBA, P and other modes are converted to RGB.
        clean: the same scene rendered without degradation (same size; :func:`read_quality` finds it). Small local
            differences (a misread shape) are tolerated.

    Returns:
        A :class:`FlawReading` with a severity and the evidence for each kind.

    Raises:
        ValueError: for an image smaller than :data:`MIN_SIDE` on a side, or a ``clean`` of another size.

    Example:
        >>> reading = read_flaws(world.gen_image(case), world.render(case.drawn))  # doctest: +SKIP
        >>> reading.sub_scores  # doctest: +SKIP
        (5, 3, 5)
    """
    img = _rgb(image, "image")
    arr_HWC = np.asarray(img, dtype=np.float32)
    blocks, _ = read_blocks(np.asarray(img))
    ref = _rgb(clean, "clean")
    if ref.size != img.size:
        raise ValueError(f"clean render is {ref.size[0]}x{ref.size[1]} but the image is {img.size[0]}x{img.size[1]}")
    return _read_with_clean(arr_HWC, ref, blocks)


def _rgb(image: Image.Image, name: str) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name} must be a PIL image, got {type(image).__name__}")
    if min(image.size) < MIN_SIDE:
        raise ValueError(
            f"{name} is {image.size[0]}x{image.size[1]}; flaws are read on images of at least {MIN_SIDE}x{MIN_SIDE} px"
        )
    return image if image.mode == "RGB" else image.convert("RGB")


# --- blocks (JPEG), read from the image alone ---------------------------------------------------------------------


@cache
def _luma_table(quality: int) -> np.ndarray:
    """The luminance quantisation table the encoder uses at ``quality`` (natural order), as 64 values."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG", quality=quality)
    tables = Image.open(io.BytesIO(buf.getvalue())).quantization  # type: ignore[attr-defined]
    return np.array(tables[0], dtype=np.float64)


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    k = np.arange(8)
    m = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    m[0] /= np.sqrt(2)
    return m


def read_blocks(rgb: np.ndarray) -> tuple[int, float]:
    """The JPEG severity of an RGB uint8 array, and the quality whose quantisation table fits (100: none).

    Every block's luminance DCT coefficients are tested against each candidate table: a coefficient near a multiple
    of its step is evidence for the table in proportion to the step (a coarse table fitting by chance is unlikely),
    one far from it is evidence against. Blocks with a clipped pixel (0 or 255) are skipped, since clipping moves
    their coefficients off the lattice, and repeated blocks (flat background) count once.
    """
    h, w = rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8
    px = rgb[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 64, 3)
    usable = ~((px == 0) | (px == 255)).any(axis=(1, 2))
    if not usable.any():
        return 0, 100.0
    luma = px[usable].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) - 128
    d = _dct_matrix()
    coef_BK = (d @ luma.reshape(-1, 8, 8) @ d.T).reshape(-1, 64)
    # Rounding the decoded RGB moves AC coefficients by well under 1, but a flat block's DC by up to 8 x 0.5.
    spread = np.full(64, 0.7)
    spread[0] = 2.5
    informative = np.abs(coef_BK) > np.where(np.arange(64) == 0, 5.0, 2.0)
    _, inverse, counts = np.unique(np.round(coef_BK * 2), axis=0, return_inverse=True, return_counts=True)
    weight_BK = informative / counts[inverse.reshape(-1)][:, None]
    best, best_llr = 0, 0.0
    for severity in range(1, 5):
        step = _luma_table(_JPEG[severity])
        off = np.abs(coef_BK - step * np.round(coef_BK / step))
        ratio = 0.95 * step * np.exp(-0.5 * (off / spread) ** 2) / (spread * np.sqrt(2 * np.pi)) + 0.05
        llr = float((np.log(ratio) * weight_BK).sum())
        if llr > best_llr:
            best, best_llr = severity, llr
    return best, float(_JPEG[best]) if best else 100.0


# --- with the clean render: analysis by synthesis -----------------------------------------------------------------


def _synth(clean: Image.Image, deg: Degradation) -> np.ndarray:
    return np.asarray(apply_pixels(clean, deg), dtype=np.float32)


def _fit_synthesis(clean: Image.Image, arr_HWC: np.ndarray, blocks: int) -> tuple[Degradation, np.ndarray]:
    """The washout, banding, blur and JPEG whose synthesis is nearest the image in mean absolute error.

    Coordinate descent: washout and banding change flat colours, blur only edges, so they barely interact. Noise is
    zero-mean, so the L1 distance is minimised by the right settings despite it. What the synthesis cannot explain
    at all (strokes, a misread shape) is found after a first fit and left out of a second, since it would pull the
    blur toward whatever smears it best. The JPEG read from the coefficients (``blocks``) is kept unless another
    quality fits clearly better: without noise the right one reproduces the image almost exactly.

    Returns:
        The fitted degradation, and the map of pixels the synthesis explains (strokes and misreads left out).
    """
    keep_HW = np.ones(arr_HWC.shape[:2], dtype=bool)
    best = _descend(clean, arr_HWC, keep_HW, blocks, (0, 0, 0, blocks))
    res_HW = np.abs(_box3(arr_HWC - _synth(clean, best))).max(axis=-1)
    outliers_HW = res_HW > max(_OUT_T, _OUT_K * float(np.median(res_HW)))
    keep_HW = ~_dilate(outliers_HW, int(np.ceil(2 * _BLUR[best.blur] * arr_HWC.shape[1] / 64)) + 2)
    if keep_HW.mean() < 0.5:
        return best, keep_HW
    start = (best.washout, best.banding, best.blur, best.blocks)
    return _descend(clean, arr_HWC, keep_HW, blocks, start), keep_HW


def _descend(
    clean: Image.Image, arr_HWC: np.ndarray, keep_HW: np.ndarray, blocks: int, start: tuple[int, int, int, int]
) -> Degradation:
    cache: dict[tuple[int, int, int, int], float] = {}
    target = arr_HWC[keep_HW]

    def err(w: int, b: int, r: int, q: int) -> float:
        if (w, b, r, q) not in cache:
            deg = Degradation(washout=w, banding=b, blur=r, blocks=q)
            cache[(w, b, r, q)] = float(np.abs(_synth(clean, deg)[keep_HW] - target).mean())
        return cache[(w, b, r, q)]

    best = start
    for _ in range(4):
        r, q = best[2], best[3]
        w, b = min(itertools.product(_SEVERITIES, _SEVERITIES), key=lambda wb: (err(wb[0], wb[1], r, q), wb))
        r = min(_SEVERITIES, key=lambda r: (err(w, b, r, q), r))
        q_fit = min(_SEVERITIES, key=lambda q: (err(w, b, r, q), q))
        q = q_fit if err(w, b, r, q_fit) + 0.05 < 0.85 * (err(w, b, r, blocks) + 0.05) else blocks
        if (w, b, r, q) == best:
            break
        best = (w, b, r, q)
    return Degradation(washout=best[0], banding=best[1], blur=best[2], blocks=best[3])


def _box3(a: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3 x 3 neighbourhood (edges repeated)."""
    p = np.pad(a, ((1, 1), (1, 1)) + ((0, 0),) * (a.ndim - 2), mode="edge")
    h, w = a.shape[:2]
    return sum((p[i : i + h, j : j + w] for i in range(3) for j in range(3)), np.zeros_like(a)) / 9


def _shifts(a: np.ndarray, radius: int, fill: float) -> list[np.ndarray]:
    """``a`` shifted by every offset within ``radius`` pixels (chessboard distance), padded with ``fill``."""
    h, w = a.shape[:2]
    p = np.pad(a, ((radius, radius), (radius, radius)) + ((0, 0),) * (a.ndim - 2), constant_values=fill)
    n = 2 * radius + 1
    return [p[i : i + h, j : j + w] for i in range(n) for j in range(n)]


def _dilate(mask_HW: np.ndarray, radius: int) -> np.ndarray:
    """Dilation by a (2 radius + 1)-pixel square, done as a row pass and a column pass."""
    return ~_erode(~mask_HW, radius)


def _erode(mask_HW: np.ndarray, radius: int) -> np.ndarray:
    """Erosion by a (2 radius + 1)-pixel square (outside the image counts as set), as two 1-D passes."""
    out = mask_HW
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, constant_values=True)
        out = np.logical_and.reduce([np.take(p, range(k, k + n), axis=axis) for k in range(2 * radius + 1)])
    return out


def _components(mask_HW: np.ndarray, min_size: int) -> int:
    """Number of 8-connected components of at least ``min_size`` pixels (label propagation, pointer jumping)."""
    h, w = mask_HW.shape
    none = h * w
    labels = np.where(mask_HW, np.arange(none).reshape(h, w), none)
    while True:
        nxt = np.minimum.reduce(_shifts(labels, 1, none))
        flat = np.where(mask_HW, nxt, none).reshape(-1)
        for _ in range(4):  # jump to the label's label: long strokes converge in a few rounds, not one per pixel
            flat = np.minimum(flat, np.append(flat, none)[flat])
        nxt = flat.reshape(h, w)
        if np.array_equal(nxt, labels):
            break
        labels = nxt
    _, counts = np.unique(labels[mask_HW], return_counts=True)
    return int((counts >= min_size).sum())


def _spread(res_HWC: np.ndarray, keep_HW: np.ndarray, size: int = 8) -> float:
    """How large a residual is where it is smallest: the mean absolute residual of each ``size`` x ``size`` block
    (pixels in ``keep_HW`` only), averaged over the quieter half of the blocks. Noise is the same everywhere; what a
    stroke, its JPEG ringing or a misread shape leaves is local, so it stays in the louder half."""
    h, w = res_HWC.shape[0] // size * size, res_HWC.shape[1] // size * size
    err = (np.abs(res_HWC[:h, :w]).mean(axis=-1) * keep_HW[:h, :w]).reshape(h // size, size, w // size, size)
    count = keep_HW[:h, :w].reshape(h // size, size, w // size, size).sum(axis=(1, 3))
    used = count >= size * size // 2
    if not used.any():
        return _spread(res_HWC, np.ones_like(keep_HW), size)
    per_block = np.sort(err.sum(axis=(1, 3))[used] / count[used])
    return float(per_block[: max(1, per_block.size // 2)].mean())


def _pick(value: float, ladder: list[float], floor: float) -> int:
    """The severity whose synthetic statistic ``ladder[s]`` is nearest ``value`` on a log scale (``floor`` added).

    A step that the statistic cannot tell apart (``ladder`` flat) is never taken: ties read as the milder severity.
    """
    severity = 0
    for s in range(1, len(ladder)):
        lo, hi = max(ladder[:s]) + floor, ladder[s] + floor
        if hi > 1.05 * lo and value + floor > np.sqrt(lo * hi):
            severity = s
    return severity


def _interp(value: float, ladder: list[float], settings: tuple[float, ...]) -> float:
    """The setting (e.g. noise sigma) whose statistic would be ``value``, by interpolating the ladder."""
    xs = np.maximum.accumulate(np.array(ladder, dtype=np.float64)) + np.arange(len(ladder)) * 1e-9
    return float(np.interp(value, xs, np.array(settings, dtype=np.float64)))


def _read_noise(
    clean: Image.Image, arr_HWC: np.ndarray, ref_HWC: np.ndarray, base: Degradation, keep_HW: np.ndarray
) -> tuple[int, float]:
    """Noise severity and sigma: the residual spread against the spread that synthetic noise leaves.

    Under JPEG a stroke's error spreads over its 16 x 16 coding unit (colour is coded at half resolution), so whole
    units around what the synthesis cannot explain are left out.
    """
    if base.blocks:
        h, w = keep_HW.shape
        units = ~keep_HW[: h // 16 * 16, : w // 16 * 16].reshape(h // 16, 16, w // 16, 16).all(axis=(1, 3))
        wide = keep_HW.copy()
        wide[: h // 16 * 16, : w // 16 * 16] &= ~np.repeat(np.repeat(units, 16, axis=0), 16, axis=1)
        keep_HW = wide if wide.mean() > 0.25 else keep_HW
    spread = _spread(arr_HWC - ref_HWC, keep_HW)
    ladder = [0.0] + [
        _spread(_synth(clean, replace(base, noise=s, seed=_SYNTH_SEEDS[0])) - ref_HWC, keep_HW) for s in range(1, 5)
    ]
    return _pick(spread, ladder, 1.0), _interp(spread, ladder, _NOISE)


#: Stroke finder settings: how far (px per 32 px of side) a misplaced shape may be off, how far past the stroke width
#: a blob is, how much of a blob's rim is left out, and the covered share of a flat region that marks it misread.
_REACH_PER_32, _THICK, _GROW, _MISREAD_SHARE = 1, 1, 3, 0.85
#: A pixel is an outlier of the first synthesis fit above this residual, or this multiple of the median residual.
_OUT_T, _OUT_K = 25.0, 4.0


class _StrokeFinder:
    """Finds stray strokes: strong residual that no small shift of the reference explains and that is thin.

    A shape the judge misplaced a little leaves residual that a shift of the reference explains, one it misread
    (another colour) leaves a blob; strokes are neither. ``threshold`` is set above what noise alone leaves.
    """

    def __init__(self, clean_HWC: np.ndarray, ref_HWC: np.ndarray, blur: int, noise_HWC: np.ndarray) -> None:
        size = ref_HWC.shape[1]
        self.width = max(1, round(size / 40))  # the stroke width of ``degrade._marks``
        self.reach = max(1, round(size * _REACH_PER_32 / 32))
        self.ref_shifts = _shifts(_box3(ref_HWC), self.reach, -1e4)
        blur_px = _BLUR[blur] * size / 64
        self.thick = int(np.ceil(self.width / 2 + 1 + 1.5 * blur_px))
        self.margin = self.reach + int(np.ceil(1.5 * blur_px)) + 1
        self.scale = max(1, size // 64)
        self.segments_HW = _segments(clean_HWC)
        self.segment_size = np.bincount(self.segments_HW.reshape(-1))
        self.threshold = max(40.0, float(np.quantile(self._unexplained(ref_HWC + noise_HWC), 0.999)) + 5.0)

    def _unexplained(self, img_HWC: np.ndarray) -> np.ndarray:
        smooth = _box3(img_HWC)
        return np.minimum.reduce([np.abs(smooth - ref).max(axis=-1) for ref in self.ref_shifts])

    def mask(self, img_HWC: np.ndarray) -> np.ndarray:
        strong = self._unexplained(img_HWC) > self.threshold
        # A flat region of the clean render mostly covered is a misread shape (another colour), not strokes.
        covered = np.bincount(self.segments_HW[strong], minlength=self.segment_size.size) / self.segment_size
        small = (self.segment_size >= 4 * self.scale**2) & (self.segment_size < 0.2 * strong.size)
        misread = small & (covered > _MISREAD_SHARE)
        if misread.any():
            strong &= ~_dilate(misread[self.segments_HW], self.margin)
        blobs = _dilate(_erode(strong, self.thick + _THICK), self.thick + _THICK + _GROW)
        return strong & ~blobs

    def features(self, img_HWC: np.ndarray) -> tuple[float, int]:
        """(share of stroke pixels, number of stroke pieces), pieces counted at about 64 px."""
        m = self.mask(img_HWC)
        k = self.scale
        h, w = m.shape[0] // k * k, m.shape[1] // k * k
        small = m[:h, :w].reshape(h // k, k, w // k, k).any(axis=(1, 3))
        return float(m.mean()), _components(np.asarray(small, dtype=bool), 4)


def _segments(img_HWC: np.ndarray) -> np.ndarray:
    """Labels (0..n-1) of the 4-connected regions of exactly equal colour."""
    key = (img_HWC[..., 0].astype(np.int64) * 256 + img_HWC[..., 1]) * 256 + img_HWC[..., 2]
    h, w = key.shape
    none = h * w
    labels = np.arange(none).reshape(h, w)
    while True:
        nxt = labels.copy()
        for dy, dx in ((0, 1), (1, 0)):
            a, b = (slice(None, h - dy), slice(None, w - dx)), (slice(dy, None), slice(dx, None))
            same = key[a] == key[b]
            low = np.minimum(nxt[a], nxt[b])
            nxt[a] = np.where(same, low, nxt[a])
            nxt[b] = np.where(same, np.minimum(nxt[b], low), nxt[b])
        flat = nxt.reshape(-1)
        for _ in range(4):
            flat = np.minimum(flat, flat[flat])
        nxt = flat.reshape(h, w)
        if np.array_equal(nxt, labels):
            break
        labels = nxt
    return np.unique(labels, return_inverse=True)[1].reshape(h, w)


def _read_marks(clean: Image.Image, arr_HWC: np.ndarray, ref_HWC: np.ndarray, noisy: Degradation) -> tuple[int, float]:
    """Marks severity and stroke-pixel share, by the stroke area and piece count nearest those of synthetic marks.

    Each severity is synthesised with several seeds (stroke lengths vary a lot); the distance to a severity weighs
    the log area by its spread (which shrinks as strokes add up) and the log piece count, which tells one long stroke
    from three short ones.
    """
    finder = _StrokeFinder(np.asarray(clean), ref_HWC, noisy.blur, _synth(clean, noisy) - ref_HWC)
    area, pieces = finder.features(arr_HWC)
    best, best_dist = 0, np.inf
    for s in _SEVERITIES:
        seeds = _SYNTH_SEEDS if s else _SYNTH_SEEDS[:1]
        feats = [finder.features(_synth(clean, replace(noisy, marks=s, seed=seed))) for seed in seeds]
        mean_area = float(np.mean([f[0] for f in feats]))
        mean_pieces = float(np.mean([np.log1p(f[1]) for f in feats]))
        area_spread = _AREA_SPREAD / np.sqrt(_MARKS[s]) if s else 0.5
        dist = ((np.log(area + 0.002) - np.log(mean_area + 0.002)) / area_spread) ** 2
        dist += ((np.log1p(pieces) - mean_pieces) / _PIECE_SPREAD) ** 2
        if dist < best_dist:
            best, best_dist = s, dist
    return best, area


def _read_with_clean(arr_HWC: np.ndarray, clean: Image.Image, blocks: int) -> FlawReading:
    base, keep_HW = _fit_synthesis(clean, arr_HWC, blocks)
    ref_HWC = _synth(clean, base)
    noise, sigma = _read_noise(clean, arr_HWC, ref_HWC, base, keep_HW)
    marks, area = _read_marks(clean, arr_HWC, ref_HWC, replace(base, noise=noise, seed=_SYNTH_SEEDS[0]))
    severities = {
        "marks": marks,
        "washout": base.washout,
        "blur": base.blur,
        "noise": noise,
        "blocks": base.blocks,
        "banding": base.banding,
    }
    evidence = {
        "marks": area,
        "washout": _WASHOUT[base.washout],
        "blur": _BLUR[base.blur] * arr_HWC.shape[1] / 64,
        "noise": sigma,
        "blocks": float(_JPEG[base.blocks]) if base.blocks else 100.0,
        "banding": float(_LEVELS[base.banding]),
    }
    return FlawReading(severities, evidence)


# --- the whole quality reading: the scene under the degradations, then the flaws ----------------------------------

#: Largest mean residual (levels, 3 x 3 smoothed, clipped at 60) of the best synthesis for an image to count as a
#: degraded ShapesWorld render; ShapesWorld's worst noise leaves about 20, an unrelated image far more.
MAX_SYNTHESIS_ERROR = 30.0


def read_quality(image: Image.Image) -> FlawReading:
    """Read every degradation of a ShapesWorld generation: the six pixel kinds and broken shapes.

    The scene is read under the degradations first: washout and banding (which move every colour) are fitted on the
    background, then each pixel is snapped to the palette colour whose degraded look is nearest (averaging the
    colour distances over a small window under noise) and the snapped images, and the image itself, are read with
    :func:`~firm.worlds.shapes.read.read_scene`. The reading whose render, degraded alike, best explains the image
    gives the clean render for :func:`read_flaws`. Broken shapes are read by matching each shape against every
    broken outline ShapesWorld can draw (:func:`~firm.worlds.shapes.broken.read_broken`); ``broken_exact`` says
    whether that reading is certain.

    Args:
        image: a square RGB image of at least 32 px.

    Returns:
        A :class:`FlawReading` with ``broken`` set.

    Raises:
        Unreadable: when no ShapesWorld scene, degraded by ShapesWorld's degradations, explains the image.
    """
    img = image if image.mode == "RGB" else image.convert("RGB")
    if img.width != img.height or img.width < MIN_SIZE:
        read_scene(img)  # raises Unreadable with the reason
    arr_HWC = np.asarray(img, dtype=np.float32)
    bg, washout, banding, blur = _fit_global(arr_HWC)
    best: tuple[float, SceneReading] | None = None
    for candidate in [img] + [_snap(arr_HWC, bg, washout, banding, radius) for radius in (0, 1, 2)]:
        try:
            reading = read_scene(candidate)
        except Unreadable:
            continue
        synth = apply_pixels(render(reading.scene, img.width), Degradation(washout=washout, banding=banding, blur=blur))
        err = float(np.clip(np.abs(_box3(np.asarray(synth, dtype=np.float32)) - _box3(arr_HWC)).max(-1), 0, 60).mean())
        if best is None or err < best[0]:
            best = (err, reading)
    if best is None or best[0] > MAX_SYNTHESIS_ERROR:
        detail = "no scene could be read" if best is None else f"the best leaves {best[0]:.0f} levels unexplained"
        raise Unreadable(f"no ShapesWorld scene under ShapesWorld's degradations explains the image ({detail})")
    pixels = read_flaws(img, render(best[1].scene, img.width))
    broken = read_broken(arr_HWC, best[1], pixels.degradation)
    share = sum(m.shape.broken > 0 for m in broken.matches) / max(1, len(best[1].shapes))
    return replace(
        pixels,
        broken=broken.severity,
        broken_exact=broken.exact,
        broken_reason=broken.reason,
        evidence={**pixels.evidence, "broken": share},
    )


def _degrade_background(bg_HWC: np.ndarray, washout: int, banding: int) -> np.ndarray:
    """``apply_pixels``' washout and banding on a float array, to within rounding (fast enough to try them all)."""
    a = _WASHOUT[washout]
    out = bg_HWC * (1 - a) + 190.0 * a
    if banding:
        ramp = np.linspace(1.06, 0.8, out.shape[0], dtype=np.float32)[:, None, None]
        step = 255 / (_LEVELS[banding] - 1)
        out = np.clip(np.round(out * ramp / step) * step, 0, 255)
    return out


def _fit_global(arr_HWC: np.ndarray) -> tuple[Background, int, int, int]:
    """The background, washout, banding and blur whose synthesis of a shape-free image best fits ``arr_HWC``.

    Shapes cover a minority of a ShapesWorld image, so a clipped mean error is ruled by the background; both sides
    are smoothed over 3 x 3 pixels first so that noise does not favour a duller (washed-out) explanation.
    """
    size = arr_HWC.shape[0]
    target = _box3(arr_HWC)
    found: list[tuple[float, str, str, int, int]] = []
    for name in BACKGROUNDS:
        for texture in TEXTURES:
            bg_HWC = _box3(np.asarray(render(Scene(Background(name, texture)), size), dtype=np.float32))
            for washout, banding in itertools.product(_SEVERITIES, _SEVERITIES):
                synth = _degrade_background(bg_HWC, washout, banding)
                err = float(np.minimum(np.abs(target - synth).max(axis=-1), 40).mean())
                found.append((err, name, texture, washout, banding))
    _, name, _, washout, banding = min(found)
    # Texture and blur are told apart at full resolution: blur smooths away the texture a plain fit cannot explain.
    fits = []
    for texture in TEXTURES:
        clean = render(Scene(Background(name, texture)), size)
        for blur in _SEVERITIES:
            synth = np.asarray(apply_pixels(clean, Degradation(washout=washout, banding=banding, blur=blur)))
            err = float(np.minimum(np.abs(target - _box3(synth.astype(np.float32))).max(axis=-1), 40).mean())
            fits.append((err, texture, blur))
    _, texture, blur = min(fits)
    return Background(name, texture), washout, banding, blur


def _snap(arr_HWC: np.ndarray, bg: Background, washout: int, banding: int, radius: int) -> Image.Image:
    """Each pixel replaced by the palette colour (background, its texture ink, a shape colour) whose washed-out and
    banded look is nearest; with ``radius`` the colour distances are summed over a (2 radius + 1) square first."""
    h = arr_HWC.shape[0]
    # A plain background has no texture ink: offered it anyway, noise and blurred edges snap to it in specks that
    # read as faint black shapes.
    inks = [tuple(round(c * 0.9) for c in bg.rgb)] if bg.texture != "plain" else []
    palette_K3 = np.array([bg.rgb, *inks, *COLOURS.values()], dtype=np.uint8)
    column = Image.fromarray(np.repeat(palette_K3[None], h, axis=0))  # one palette row per image row: banding ramps
    looks_HK3 = np.asarray(apply_pixels(column, Degradation(washout=washout, banding=banding)), dtype=np.float32)
    dist_HWK = np.abs(arr_HWC[:, :, None, :] - looks_HK3[:, None, :, :]).sum(axis=-1)
    if radius:
        dist_HWK = sum(_shifts(dist_HWK, radius, 0.0), np.zeros_like(dist_HWK))
    return Image.fromarray(palette_K3[dist_HWK.argmin(axis=-1)])

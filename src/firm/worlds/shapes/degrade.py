"""Image degradations with a severity per kind, grouped into FIRM's three quality aspects.

- aesthetics: stray marks (clutter), washout (dull, low-contrast colour);
- technical: blur, noise, blockiness (JPEG), banding;
- structure: broken shapes (jagged outlines, chunks missing), applied to the scene before rendering.

Severity runs 0 (none) to 4 (severe); an aspect's sub-score is 5 minus its worst severity (see ``rubric.py``).
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, fields, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from firm.worlds.shapes.rubric import MAX_SEVERITY, aspect_score
from firm.worlds.shapes.scene import COLOURS, Scene

ASPECT_KINDS: dict[str, tuple[str, ...]] = {
    "aesthetics": ("marks", "washout"),
    "technical": ("blur", "noise", "blocks", "banding"),
    "structure": ("broken",),
}

# Per-severity settings, index = severity. Blur radius is in pixels of a 64 px image and scales with the size.
_BLUR = (0.0, 0.5, 1.0, 1.8, 3.0)
_NOISE = (0.0, 6.0, 14.0, 26.0, 45.0)
_JPEG = (95, 40, 20, 10, 4)
_LEVELS = (256, 24, 12, 7, 4)
_MARKS = (0, 1, 3, 6, 10)
_WASHOUT = (0.0, 0.2, 0.4, 0.6, 0.75)
_BROKEN = (0.0, 0.3, 0.55, 0.8, 1.0)  # damage of each broken shape
_BROKEN_SHARE = (0.0, 0.0, 0.0, 0.5, 1.0)  # share of shapes broken (at least one)


@dataclass(frozen=True)
class Degradation:
    """Severity (0-4) of each degradation kind, and the seed of its random parts (noise, marks, which shapes)."""

    marks: int = 0
    washout: int = 0
    blur: int = 0
    noise: int = 0
    blocks: int = 0
    banding: int = 0
    broken: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "seed" and not 0 <= getattr(self, f.name) <= MAX_SEVERITY:
                raise ValueError(f"degradation {f.name} must be in 0-{MAX_SEVERITY}, got {getattr(self, f.name)}")

    def severities(self, aspect: str) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in ASPECT_KINDS[aspect]}

    @property
    def sub_scores(self) -> tuple[int, int, int]:
        """(aesthetics, technical, structure), in :data:`firm.critics.answer.QUALITY_ASPECTS` order."""
        a, t, s = (aspect_score(self.severities(aspect).values()) for aspect in ASPECT_KINDS)
        return a, t, s

    @property
    def active(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "seed" and getattr(self, f.name)}


def sample_degradation(rng: random.Random, quality: int) -> Degradation:
    """A degradation whose quality score (min of the sub-scores) is exactly ``quality``.

    One aspect, chosen at random, gets sub-score ``quality``; each other aspect gets a random sub-score no lower.
    Within an aspect one kind carries the aspect's severity, sometimes joined by a milder second kind.
    """
    if quality not in range(1, 6):
        raise ValueError(f"quality must be in 1-5, got {quality}")
    worst = rng.choice(list(ASPECT_KINDS))
    settings: dict[str, int] = {}
    for aspect, kinds in ASPECT_KINDS.items():
        severity = 5 - (quality if aspect == worst else rng.randint(quality, 5))
        if severity == 0:
            continue
        main, *rest = rng.sample(list(kinds), len(kinds))
        settings[main] = severity
        if rest and rng.random() < 0.3:
            settings[rng.choice(rest)] = rng.randint(0, severity)
    return Degradation(**settings, seed=rng.getrandbits(32))


def break_shapes(scene: Scene, deg: Degradation) -> Scene:
    """The scene with the structure degradation applied: some shapes jagged and bitten (at least one)."""
    if not deg.broken or not scene.shapes:
        return scene
    rng = random.Random(deg.seed)
    n = max(1, math.ceil(len(scene.shapes) * _BROKEN_SHARE[deg.broken]))
    chosen = {s.id for s in rng.sample(list(scene.shapes), n)}
    damage = _BROKEN[deg.broken]
    return replace(scene, shapes=tuple(replace(s, broken=damage) if s.id in chosen else s for s in scene.shapes))


def apply_pixels(img: Image.Image, deg: Degradation) -> Image.Image:
    """The image with every pixel-level degradation applied (all but broken shapes), deterministic in ``deg.seed``."""
    size = img.width
    rng = random.Random(deg.seed + 1)
    if deg.washout:
        img = Image.blend(img, Image.new("RGB", img.size, (190, 190, 190)), _WASHOUT[deg.washout])
    if deg.banding:
        img = _band(img, _LEVELS[deg.banding])
    if deg.marks:
        img = _marks(img, _MARKS[deg.marks], rng)
    if deg.blur:
        img = img.filter(ImageFilter.GaussianBlur(_BLUR[deg.blur] * size / 64))
    if deg.noise:
        arr = np.asarray(img, dtype=np.float32)
        noise = np.random.default_rng(deg.seed).normal(0.0, _NOISE[deg.noise], arr.shape)
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    if deg.blocks:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=_JPEG[deg.blocks])
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def _band(img: Image.Image, levels: int) -> Image.Image:
    """A soft vertical light falloff, then quantised: smooth shading turns into visible steps."""
    arr = np.asarray(img, dtype=np.float32)
    ramp = np.linspace(1.06, 0.8, arr.shape[0], dtype=np.float32)[:, None, None]
    step = 255 / (levels - 1)
    return Image.fromarray(np.clip(np.round(arr * ramp / step) * step, 0, 255).astype(np.uint8))


def _marks(img: Image.Image, count: int, rng: random.Random) -> Image.Image:
    img = img.copy()
    draw = ImageDraw.Draw(img)
    size = img.width
    colours = list(COLOURS.values())
    for _ in range(count):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        pts = [(x, y)]
        for _ in range(rng.randint(2, 4)):
            x += rng.uniform(-0.2, 0.2) * size
            y += rng.uniform(-0.2, 0.2) * size
            pts.append((x, y))
        draw.line(pts, fill=rng.choice(colours), width=max(1, round(size / 40)))
    return img

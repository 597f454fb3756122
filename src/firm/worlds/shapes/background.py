"""Which ShapesWorld background explains an image: a palette colour and texture, a grey tint, a tone shift.

The reader (``read``) starts here: the commonest colour is explained as a palette background (or its texture ink)
with a tint and a tone, every texture is rendered, and the explanations that fit about as well as the best are kept
for the shapes to decide between. A slight colour cast (a few levels in any channel) is read through.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from firm.worlds.shapes.render import render
from firm.worlds.shapes.scene import BACKGROUNDS, TEXTURES, Background, Scene

#: Largest grey tint and tone shift (in levels) the background model explains.
MAX_TINT, MAX_SHIFT = 20, 20


def tone_shift(rgb: np.ndarray, s: float) -> np.ndarray:
    """The renderer's tone shift: red up, blue down by ``s`` levels, clipped."""
    return np.clip(rgb + np.array([s, 0.0, -s], dtype=np.float32), 0, 255)


def explanations(arr: np.ndarray) -> tuple[np.ndarray, list[tuple[float, Background, float]]]:
    """The commonest colour of an image, and the background explanations (error, background, tone) of it: the best,
    and any that tie with it (none when no ShapesWorld background explains that colour)."""
    size = arr.shape[0]
    mode = _mode_colour(arr)
    found: list[tuple[float, Background, float]] = []
    for name, base in BACKGROUNDS.items():
        for tint, shift in _tint_and_shift(mode, np.array(base, dtype=np.float32)):
            for texture in TEXTURES:
                bg = Background(name, texture, (tint, tint, tint))
                tone = shift / 18
                shown = rendered(bg, tone, size)
                err = float(np.minimum(np.abs(arr - shown).max(axis=2), 40).mean())
                # The plainest explanation wins unless another is clearly better.
                found.append((err + 0.25 * (tint != 0) + 0.25 * (shift != 0), bg, tone))
    if not found:
        return mode, []
    found.sort(key=lambda f: f[0])
    # Within the parsimony penalty of the best, another palette colour is a real alternative (one of each colour).
    # A plain palette background a few levels off (a colour cast) is one too: a cast can mimic another background
    # under a tint and a tone, which shift the shapes' colours differently.
    options: dict[str, tuple[float, Background, float]] = {}
    for f in found:
        plain = f[1].tint == (0, 0, 0) and f[2] == 0
        if (f[0] <= found[0][0] + 0.6 or (plain and f[0] <= found[0][0] + 6)) and f[1].colour not in options:
            options[f[1].colour] = f
    return mode, list(options.values())


def _mode_colour(arr: np.ndarray) -> np.ndarray:
    """The commonest colour: exact when one colour fills a good share of the image, else the mean of the commonest
    bin 8 levels wide (robust to noise and compression)."""
    exact = arr.astype(np.int32)
    keys = (exact[..., 0] << 16) | (exact[..., 1] << 8) | exact[..., 2]
    values, counts = np.unique(keys, return_counts=True)
    if counts.max() >= 0.05 * keys.size:
        top = int(values[np.argmax(counts)])
        return np.array([top >> 16, (top >> 8) & 255, top & 255], dtype=np.float32)
    q = (arr // 8).astype(np.int32)
    keys = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]
    values, counts = np.unique(keys, return_counts=True)
    top = values[np.argmax(counts)]
    centre = arr[keys == top].mean(axis=0)
    for _ in range(3):  # re-centre on every pixel near it, so a bin edge does not bias the mean under noise
        near = np.abs(arr - centre).max(axis=2) <= 14
        centre = arr[near].mean(axis=0)
    return np.asarray(centre, dtype=np.float32)


def _tint_and_shift(mode: np.ndarray, base: np.ndarray) -> Iterator[tuple[int, int]]:
    """(tint, shift) pairs under which ``base`` renders as ``mode``, as the plain colour or as texture ink."""
    for ink in (False, True):
        scale = 0.9 if ink else 1.0
        if float(np.abs((np.round(base * 0.9) if ink else base) - mode).max()) <= 6:
            # A few levels off in any channel is a slight colour cast, compression or noise, not a tint or a tone
            # (ShapesWorld's are 9 levels or more, and a tone moves red and blue together)
            yield 0, 0
            continue
        cast = _cast_explained(mode, base, ink)
        if cast is not None:
            yield cast
        tint = round(float(mode[1]) / scale - float(base[1]))
        if not -MAX_TINT <= tint <= 2:
            continue
        shown = np.clip(base + tint, 0, 255)
        shown = np.round(shown * 0.9) if ink else shown
        # The tone shift moves red up and blue down; read it from whichever channel was not clipped.
        shift = round(float(mode[0] - shown[0])) if mode[0] < 253 else round(float(shown[2] - mode[2]))
        if abs(shift) > MAX_SHIFT:
            continue
        if float(np.abs(tone_shift(shown, shift) - mode).max()) <= 6:
            # A level or four either way is compression or noise, not a tint or a tone (ShapesWorld's are 9 or more).
            tint, shift = (0 if abs(tint) <= 4 else tint), (0 if abs(shift) <= 4 else shift)
            # Ink is rounded after scaling and clipped channels hide part of a shift: neighbours render alike, so
            # they are tried too and the whole background decides.
            for dt in (0, -1, 1) if tint else (0,):
                for ds in (0, -1, 1) if shift else (0,):
                    yield tint + dt, shift + ds


_TINTS_TRIED = np.array([0, *range(-9, -MAX_TINT - 1, -1)], dtype=np.float32)
_SHIFTS_TRIED = np.array([0, *range(9, MAX_SHIFT + 1), *range(-9, -MAX_SHIFT - 1, -1)], dtype=np.float32)


def _cast_explained(mode: np.ndarray, base: np.ndarray, ink: bool) -> tuple[int, int] | None:
    """The ShapesWorld-sized tint and tone shift (9 levels or more, or none) under which ``base`` renders nearest
    ``mode``, when a slight colour cast (6 levels or less per channel) explains the rest; None when none does.

    The exact reading above takes the tint from green and the shift from red, which a cast on those channels throws
    off; this looks at every tint and shift ShapesWorld draws."""
    shown = np.clip(base[None, None, :] + _TINTS_TRIED[:, None, None], 0, 255)  # [T, 1, 3]
    shown = np.round(shown * 0.9) if ink else shown
    step = np.stack([_SHIFTS_TRIED, np.zeros_like(_SHIFTS_TRIED), -_SHIFTS_TRIED], axis=-1)  # [S, 3]
    looks = np.clip(shown + step[None, :, :], 0, 255)  # [T, S, 3]
    off = np.abs(looks - mode).max(axis=-1)
    t, k = np.unravel_index(int(np.argmin(off)), off.shape)
    if off[t, k] > 6 or (t == 0 and k == 0):
        return None
    return int(_TINTS_TRIED[t]), int(_SHIFTS_TRIED[k])


@lru_cache(maxsize=128)
def _rendered_bytes(bg: Background, tone: float, size: int) -> bytes:
    return render(Scene(bg, (), tone), size).tobytes()


def rendered(bg: Background, tone: float, size: int) -> np.ndarray:
    """The background alone, rendered at ``size`` with ``tone`` (float32 RGB; cached)."""
    data = _rendered_bytes(bg, tone, size)
    return np.frombuffer(data, dtype=np.uint8).reshape(size, size, 3).astype(np.float32)

"""Rendering: deterministic, any size 32-512, and pixels differ exactly where the scene graphs differ."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firm.data import encode_png
from firm.worlds.shapes.diff import diff
from firm.worlds.shapes.edit import build_edit_case
from firm.worlds.shapes.render import render
from firm.worlds.shapes.scene import COLOURS, Background, Scene, Shape, sample_scene

SIZE = 64


def _px(scene: Scene, size: int = SIZE) -> np.ndarray:
    return np.asarray(render(scene, size), dtype=np.int16)


def _box(shape: Shape, size: int = SIZE) -> tuple[slice, slice]:
    e = shape.extent * size + 2  # antialiasing spills at most a pixel or two past the outline
    return (
        slice(max(0, int(shape.y * size - e)), int(shape.y * size + e) + 1),
        slice(max(0, int(shape.x * size - e)), int(shape.x * size + e) + 1),
    )


@pytest.mark.parametrize("size", [32, 64, 100, 256, 512])
def test_any_size_renders_the_same_picture(size: int) -> None:
    scene = Scene(Background("pale blue", "checkered"), (Shape(0, "circle", "red", 0.5, 0.5, 0.14),))
    img = render(scene, size)
    assert img.size == (size, size) and img.mode == "RGB"
    assert img.getpixel((size // 2, size // 2)) == COLOURS["red"]
    # the antialiased edge holds blends of red and background, not just the two colours
    row = np.asarray(img)[size // 2]
    assert len({tuple(p) for p in row}) > 3


@pytest.mark.parametrize("size", [16, 31, 513])
def test_sizes_outside_the_range_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="32-512"):
        render(Scene(Background("white")), size)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_scene_and_image_are_pure_functions_of_the_seed(seed: int) -> None:
    a, b = sample_scene(random.Random(seed), (1, 5)), sample_scene(random.Random(seed), (1, 5))
    assert a == b
    assert encode_png(render(a, SIZE)) == encode_png(render(b, SIZE))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), execution=st.integers(2, 5), consistency=st.integers(2, 5))
def test_images_differ_where_and_only_where_the_scene_graphs_differ(
    seed: int, execution: int, consistency: int
) -> None:
    case = build_edit_case(random.Random(seed), execution, consistency)
    src, out = _px(case.source), _px(case.edited)
    changed = np.any(src != out, axis=2)
    changes = diff(case.source, case.edited)
    if not changes:
        assert not changed.any()
        return
    if any(c.subject is None for c in changes):  # a background tint or a tone shift touches the background
        corner = changed.copy()
        for shape in case.source.shapes + case.edited.shapes:
            corner[_box(shape)] = False
        assert corner.any()
        return
    before = {s.id: s for s in case.source.shapes}
    after = {s.id: s for s in case.edited.shapes}
    allowed = np.zeros_like(changed)
    for sid in {c.subject for c in changes}:
        states = [s for s in (before.get(sid), after.get(sid)) if s is not None]
        region = np.zeros_like(changed)
        for s in states:
            region[_box(s)] = True
        assert (changed & region).any(), f"shape {sid} changed in the graph but not in the image"
        allowed |= region
    assert not (changed & ~allowed).any(), "pixels changed away from every changed shape"


def test_an_unintended_recolour_is_really_drawn() -> None:
    scene = Scene(
        Background("white"), (Shape(0, "square", "green", 0.3, 0.3, 0.1), Shape(1, "star", "red", 0.7, 0.7, 0.1))
    )
    out = scene.with_shape(replace(scene.get(0), colour="yellow"))
    assert render(out, SIZE).getpixel((19, 19)) == COLOURS["yellow"]
    assert render(scene, SIZE).getpixel((19, 19)) == COLOURS["green"]


def test_faded_and_erased_shapes_show_the_background() -> None:
    base = Shape(0, "square", "black", 0.5, 0.5, 0.2)
    bg = Background("white")
    faded = np.asarray(render(Scene(bg, (replace(base, alpha=0.5),)), SIZE))[32, 32]
    assert 100 < faded[0] < 160
    half = np.asarray(render(Scene(bg, (replace(base, erase=0.5),)), SIZE))
    assert tuple(half[32, 24]) == COLOURS["black"] and tuple(half[32, 40]) == (250, 250, 250)


def test_tone_shift_warms_every_pixel() -> None:
    scene = Scene(Background("light grey"))
    warm = render(replace(scene, tone=1.0), SIZE).getpixel((5, 5))
    assert warm[0] > 218 > warm[2]


def test_overlap_is_an_option_and_off_by_default() -> None:
    def overlapping(scene: Scene) -> bool:
        shapes = scene.shapes
        return any(
            ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5 < a.extent + b.extent
            for i, a in enumerate(shapes)
            for b in shapes[i + 1 :]
        )

    rng = random.Random(0)
    assert not any(overlapping(sample_scene(rng, (6, 6))) for _ in range(50))
    assert any(overlapping(sample_scene(rng, (6, 6), overlap=True)) for _ in range(50))

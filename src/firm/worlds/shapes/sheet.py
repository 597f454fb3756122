"""Contact sheets: a PNG grid of edits (source, edited, instruction, scores) or generations (image, prompt, scores).

The cells cycle through the score levels so one sheet shows the whole 1-5 range of each dimension.
"""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont

from firm.worlds.shapes.world import ShapesWorld

_PAD = 6
_FONT_PX = 12
_LINES = 9


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=_FONT_PX)


def _cell(images: list[Image.Image], lines: list[str], width: int) -> Image.Image:
    size = images[0].width
    cell = Image.new("RGB", (width, size + _PAD * 2 + _LINES * (_FONT_PX + 2)), "white")
    for i, img in enumerate(images):
        cell.paste(img, (_PAD + i * (size + _PAD), _PAD))
    draw = ImageDraw.Draw(cell)
    chars = max(10, (width - 2 * _PAD) * 2 // _FONT_PX)  # the default font is about half as wide as tall
    wrapped = [part for line in lines for part in textwrap.wrap(line, chars)][:_LINES]
    for k, text in enumerate(wrapped):
        draw.text((_PAD, size + _PAD * 2 + k * (_FONT_PX + 2)), text, fill="black", font=_font())
    return cell


def _grid(cells: list[Image.Image], cols: int) -> Image.Image:
    w, h = cells[0].size
    rows = -(-len(cells) // cols)
    sheet = Image.new("RGB", (cols * w, rows * h), (200, 200, 200))
    for i, cell in enumerate(cells):
        sheet.paste(cell, ((i % cols) * w, (i // cols) * h))
        ImageDraw.Draw(sheet).rectangle(
            ((i % cols) * w, (i // cols) * h, (i % cols + 1) * w - 1, (i // cols + 1) * h - 1), outline=(160, 160, 160)
        )
    return sheet


def edit_sheet(world: ShapesWorld, n: int = 15, cols: int = 3) -> Image.Image:
    """Edits with execution 5..1 crossed with consistency 5..1: source | edited, instruction, both scores."""
    cells = []
    for i in range(n):
        e = 5 - i % 5
        c = 1 if e == 1 and i % 10 == 9 else 5 - (i // 5 + i) % 4
        case = world.edit_case(i, e, c)
        outcomes = ", ".join(o.value for o in case.outcomes)
        u = case.unintended
        lines = [
            case.instruction,
            f"execution {case.execution} ({outcomes})",
            f"consistency {case.consistency} ({u.significant} significant, {u.minor} minor"
            f"{', excused tone shift' if u.excused else ''}{', new image' if case.replaced else ''})",
        ]
        size = world.size
        cells.append(_cell([world.render(case.source), world.render(case.edited)], lines, 3 * _PAD + 2 * size))
    return _grid(cells, cols)


def gen_sheet(world: ShapesWorld, n: int = 15, cols: int = 5) -> Image.Image:
    """Generations with instruction following 5..1 crossed with quality 5..1: image, prompt, scores."""
    cells = []
    for i in range(n):
        case = world.gen_case(i, instruction=5 - i % 5, quality=5 - (i // 5 + i) % 5)
        image = world.gen_image(case)
        a, t, s = case.sub_scores
        missed = [r.check for r, ans in case.answers if ans == "no"]
        lines = [
            case.prompt,
            f"instruction {case.instruction}" + (f" (missed: {', '.join(missed)})" if missed else ""),
            f"quality {case.quality} (aesth {a}, tech {t}, struct {s})",
        ]
        cells.append(_cell([image], lines, max(2 * _PAD + world.size, 240)))
    return _grid(cells, cols)

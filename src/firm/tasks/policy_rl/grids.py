"""Pictures of an RL run: image grids with their rewards, and the reward curve."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["reward_curve", "reward_grid"]

#: Images smaller than this are enlarged (nearest neighbour) so that a grid of tiny images can be looked at.
_MIN_CELL = 96
_CAPTION = 14


def reward_grid(
    images: Sequence[Image.Image], rewards: Sequence[float], prompts: Sequence[str], per_row: int
) -> Image.Image:
    """One row per prompt (its group), each image with its reward under it and the prompt above the row.

    Args:
        images: the images, ``per_row`` consecutive ones per prompt.
        rewards: one reward per image (NaN is written as "invalid").
        prompts: one per row.
        per_row: images per prompt.
    """
    if not images:
        raise ValueError("no images to put in a grid")
    width, height = images[0].size
    scale = max(1, math.ceil(_MIN_CELL / max(width, height)))
    cell_w, cell_h = width * scale, height * scale
    rows = math.ceil(len(images) / per_row)
    row_h = _CAPTION + cell_h + _CAPTION
    grid = Image.new("RGB", (per_row * cell_w, rows * row_h), "white")
    draw = ImageDraw.Draw(grid)
    for row in range(rows):
        top = row * row_h
        text = prompts[row] if row < len(prompts) else ""
        draw.text((2, top + 1), text[: per_row * cell_w // 6], fill="black")
        for col in range(per_row):
            i = row * per_row + col
            if i >= len(images):
                break
            image = images[i].convert("RGB").resize((cell_w, cell_h), Image.Resampling.NEAREST)
            grid.paste(image, (col * cell_w, top + _CAPTION))
            reward = rewards[i]
            label = "invalid" if math.isnan(reward) else f"{reward:.3f}"
            draw.text((col * cell_w + 2, top + _CAPTION + cell_h + 1), label, fill="black")
    return grid


def reward_curve(history: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """A PNG of reward against step, one line per series (``train``: the rollouts' mean reward, ``eval``: the
    evaluation prompts'); NaN points are left out."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for name, points in history.items():
        kept = [(s, r) for s, r in points if not math.isnan(r)]
        if kept:
            steps, values = zip(*kept, strict=True)
            axes.plot(steps, values, marker="o" if name == "eval" else None, linewidth=1.0, label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("reward")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

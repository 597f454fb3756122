"""Rewards that score images directly, without a critic: simple, exact targets for RL checks and plugins.

An :class:`ImageReward` turns images (and their prompts) into one number per image; called on
:class:`~firm.rewards.RewardSample` objects it answers like :class:`~firm.rewards.CriticReward` does (a
:class:`~firm.rewards.ScoredBatch`, with no verdicts), so an RL task takes either. Plug your own in by subclassing
:class:`ImageReward` and naming its class path in a recipe (``reward: {class_path: my_pkg.MyReward}``).

- :class:`ColourFraction`: the share of pixels within a distance of a target colour (default: pure red).
- :class:`MeanColour`: how close the image's pixels are to a target colour on average, in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from firm.rewards.base import RewardOutput
from firm.rewards.critic_reward import RewardSample, ScoredBatch

__all__ = ["ColourFraction", "ImageReward", "MeanColour"]

#: The largest distance between two RGB colours in [0, 1]^3.
_MAX_DISTANCE = float(np.sqrt(3.0))


class ImageReward(ABC):
    """A reward computed from the images themselves; NaN marks an image it cannot score (left out of RL's statistics).

    Args:
        name: the reward's name in logs (the class name when empty).
    """

    def __init__(self, name: str = "") -> None:
        self.name = name or type(self).__name__

    @abstractmethod
    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> Tensor:
        """One float32 reward per image ``[B]``."""

    def __call__(self, samples: Sequence[RewardSample]) -> ScoredBatch:
        total = self.score([s.image for s in samples], [s.text for s in samples]).float()
        output = RewardOutput(total=total, components={self.name: total.clone()}, valid=~total.isnan())
        return ScoredBatch(self.name, output, [{} for _ in samples])


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _check_colour(colour: Sequence[int]) -> np.ndarray:
    if len(colour) != 3 or not all(0 <= int(c) <= 255 for c in colour):
        raise ValueError(f"colour must be three integers in 0-255 (R, G, B), got {list(colour)}")
    return np.asarray(colour, dtype=np.float32) / 255.0


class ColourFraction(ImageReward):
    """The share of pixels within ``tolerance`` (Euclidean distance in RGB, channels in [0, 1]) of ``colour``.

    Args:
        colour: the target colour as (R, G, B) in 0-255.
        tolerance: how far a pixel may be from it and still count, in [0, sqrt(3)].

    Raises:
        ValueError: for a colour that is not three values in 0-255, or a tolerance outside the range.
    """

    def __init__(self, colour: Sequence[int] = (255, 0, 0), tolerance: float = 0.5, name: str = "") -> None:
        super().__init__(name)
        self.colour = _check_colour(colour)
        if not 0.0 < tolerance <= _MAX_DISTANCE:
            raise ValueError(f"tolerance must be in (0, {_MAX_DISTANCE:.3f}], got {tolerance}")
        self.tolerance = tolerance

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> Tensor:
        shares = [float((np.linalg.norm(_pixels(im) - self.colour, axis=-1) <= self.tolerance).mean()) for im in images]
        return torch.tensor(shares, dtype=torch.float32)


class MeanColour(ImageReward):
    """``1 - mean distance / sqrt(3)`` of the pixels to ``colour``: 1 for an image of exactly that colour, a smooth
    signal (unlike :class:`ColourFraction`) that moves with every pixel.

    Args:
        colour: the target colour as (R, G, B) in 0-255.

    Raises:
        ValueError: for a colour that is not three values in 0-255.
    """

    def __init__(self, colour: Sequence[int] = (255, 0, 0), name: str = "") -> None:
        super().__init__(name)
        self.colour = _check_colour(colour)

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> Tensor:
        values = [
            1.0 - float(np.linalg.norm(_pixels(im) - self.colour, axis=-1).mean()) / _MAX_DISTANCE for im in images
        ]
        return torch.tensor(values, dtype=torch.float32)

"""Rewards as RL calls them: image rewards computed from pixels, and critic rewards described in a recipe
(:class:`FromCritic`), whose invalid verdicts stay invalid."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from firm.critics.factory import CriticSpecError
from firm.rewards import ColourFraction, FromCritic, MeanColour, RewardSample, RLReward


def _image(colour: tuple[int, int, int], red_share: float = 0.0) -> Image.Image:
    image = Image.new("RGB", (20, 10), colour)
    width = round(20 * red_share)
    if width:
        image.paste((255, 0, 0), (0, 0, width, 10))
    return image


def test_colour_fraction_counts_the_pixels_near_the_colour() -> None:
    reward = ColourFraction(colour=(255, 0, 0), tolerance=0.2)
    scored = reward([RewardSample("p", _image((0, 0, 255), share)) for share in (0.0, 0.25, 1.0)])
    torch.testing.assert_close(scored.output.total, torch.tensor([0.0, 0.25, 1.0]))
    assert scored.output.valid.all() and list(scored.output.components) == ["ColourFraction"]
    assert isinstance(reward, RLReward)


def test_mean_colour_is_one_at_the_colour_and_falls_with_distance() -> None:
    reward = MeanColour(colour=(255, 0, 0))
    totals = reward.score([_image((255, 0, 0)), _image((128, 0, 0)), _image((0, 255, 255))], ["", "", ""])
    assert totals[0] == pytest.approx(1.0)
    assert totals[0] > totals[1] > totals[2] == pytest.approx(0.0, abs=1e-6)


def test_bad_colours_are_refused() -> None:
    with pytest.raises(ValueError, match="three integers"):
        MeanColour(colour=(300, 0, 0))
    with pytest.raises(ValueError, match="tolerance"):
        ColourFraction(tolerance=0.0)
    with pytest.raises(ValueError, match="retries"):
        FromCritic(retries=-1)
    # A misspelt critic setting fails when the recipe is read, not hours later when the critic is first called.
    with pytest.raises(CriticSpecError, match="does not take url; its settings are base_url"):
        FromCritic(critic="openai", settings={"url": "http://127.0.0.1:8000/v1"})


def test_from_critic_keeps_unreadable_images_invalid_after_retries() -> None:
    # The ShapesWorld judge reads its own renders exactly and refuses noise: QMA must stay NaN there, retries or not.
    from firm.worlds.shapes import ShapesWorld

    world = ShapesWorld(size=64, split="test")
    case = world.gen_case(0, quality=5)
    noise = Image.fromarray((torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy(), "RGB")
    reward = FromCritic(critic="shapes", strategy="qma", retries=2)
    scored = reward([RewardSample(case.prompt, world.gen_image(case)), RewardSample(case.prompt, noise)])
    assert scored.output.valid.tolist() == [True, False]
    assert math.isnan(float(scored.output.total[1])) and not math.isnan(float(scored.output.total[0]))
    assert reward.retried == 2  # the noise image was asked twice more
    assert not scored.verdicts[1]["instruction"].valid

import math

import pytest
import torch

from firm import plugins
from firm.rewards import RewardInput
from firm_example import GeometricMean


def test_geometric_mean_values():
    reward = GeometricMean()
    out = reward(
        RewardInput(
            {"execution": torch.tensor([5.0, 3.0, 1.0, math.nan]), "consistency": torch.tensor([5.0, 5.0, 5.0, 5.0])}
        )
    )
    assert out.total[:3].tolist() == pytest.approx([1.0, math.sqrt(0.5), 0.0])
    assert out.valid.tolist() == [True, True, True, False]


def test_registered_through_entry_point(monkeypatch):
    monkeypatch.setenv("FIRM_LOAD_PLUGINS", "firm-example")
    plugin = plugins.get("firm.rewards", "geometric_mean")
    assert plugin.distribution == "firm-example"
    assert plugin.load() is GeometricMean

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from firm.algorithms import group_advantages

nan = math.nan
EPS = 1e-4


def test_invalid_rewards_change_no_statistic_and_get_exactly_zero():
    # Group 10: valid 1.0, 0.0, 0.5 and a NaN; group 3: valid 0.2, 0.6, 1.0 and a 9.0 marked invalid.
    rewards = torch.tensor([1.0, 0.2, 0.0, nan, 0.6, 0.5, 9.0, 1.0])
    groups = torch.tensor([10, 3, 10, 10, 3, 10, 3, 3])
    valid = torch.tensor([True, True, True, True, True, True, False, True])
    out = group_advantages(rewards, groups, valid_B=valid)

    kept = torch.tensor([0, 1, 2, 4, 5, 7])
    alone = group_advantages(rewards[kept], groups[kept])
    assert torch.allclose(out.advantages[kept], alone.advantages)
    assert out.advantages[3].item() == 0.0 and out.advantages[6].item() == 0.0
    assert out.valid.tolist() == [True, True, True, False, True, True, False, True]
    assert out.num_invalid == 2 and out.num_groups == 2

    # By hand: group 10 mean 0.5, population std sqrt((0.25 + 0.25 + 0) / 3); group 3 mean 0.6, std sqrt(0.32 / 3).
    std10, std3 = math.sqrt(0.5 / 3), math.sqrt(0.32 / 3)
    expected = [0.5 / (std10 + EPS), -0.4 / (std3 + EPS), -0.5 / (std10 + EPS), 0.0]
    expected += [0.0, 0.0, 0.0, 0.4 / (std3 + EPS)]
    assert out.advantages.tolist() == pytest.approx(expected, abs=1e-5)


def test_std_is_the_population_std():
    out = group_advantages(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]))
    # np.std([0, 1]) = 0.5; the sample std (ddof=1) would be 0.707 and give +-0.707.
    assert out.advantages.tolist() == pytest.approx([-0.5 / (0.5 + EPS), 0.5 / (0.5 + EPS)])


def test_global_std_divides_by_the_std_of_all_valid_rewards():
    rewards = torch.tensor([0.0, 1.0, nan, 0.5, 1.0, 100.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    valid = torch.tensor([True, True, True, True, True, False])
    out = group_advantages(rewards, groups, valid_B=valid, global_std=True)
    # Valid rewards 0, 1, 0.5, 1: mean 0.625, squared deviations 0.390625 + 0.140625 + 0.015625 + 0.140625 = 0.6875.
    scale = math.sqrt(0.6875 / 4) + EPS
    expected = [-0.5 / scale, 0.5 / scale, 0.0, -0.25 / scale, 0.25 / scale, 0.0]
    assert out.advantages.tolist() == pytest.approx(expected, abs=1e-6)


def test_advantages_are_clipped():
    rewards = torch.tensor([0.0] * 9 + [1.0])  # mean 0.1, population std sqrt((9 * 0.01 + 0.81) / 10) = 0.3
    groups = torch.zeros(10, dtype=torch.long)
    unclipped = group_advantages(rewards, groups)
    assert unclipped.advantages[-1].item() == pytest.approx(0.9 / 0.3001)
    clipped = group_advantages(rewards, groups, clip=2.0)
    assert clipped.advantages[-1].item() == 2.0
    assert clipped.advantages[0].item() == pytest.approx(-0.1 / 0.3001)


def test_zero_spread_groups_get_exactly_zero_and_are_counted():
    # Equal rewards whose float mean is not exactly 0.3; one valid reward; a real spread; no valid reward at all.
    rewards = torch.tensor([0.3, 0.3, 0.3, 0.2, nan, 0.0, 1.0, nan, nan])
    groups = torch.tensor([5, 5, 5, 6, 6, 7, 7, 8, 8])
    out = group_advantages(rewards, groups)
    assert out.advantages[:5].tolist() == [0.0] * 5
    assert out.advantages[5].item() < 0 < out.advantages[6].item()
    assert out.zero_spread_fraction == pytest.approx(2 / 3)  # the all-invalid group is not counted
    assert out.num_groups == 4 and out.num_invalid == 3


def test_zero_spread_fraction_is_nan_when_nothing_is_valid():
    out = group_advantages(torch.tensor([nan, nan]), torch.tensor([0, 1]))
    assert math.isnan(out.zero_spread_fraction)
    assert out.advantages.tolist() == [0.0, 0.0] and out.num_invalid == 2


@pytest.mark.parametrize("global_std", [False, True])
def test_uninformative_groups_are_flagged_and_skipped_on_request(global_std):
    # Group 0: all good and alike (std 0.008, mean 0.96); group 1: spread out; group 2: alike but bad (mean 0.107).
    rewards = torch.tensor([0.95, 0.97, 0.96, 0.95, 0.5, 1.0, 0.1, 0.1, 0.12])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    kept = group_advantages(rewards, groups, global_std=global_std)
    assert kept.uninformative.tolist() == [True] * 3 + [False] * 6
    assert kept.num_uninformative_groups == 1
    assert kept.advantages[0].item() < 0 < kept.advantages[1].item()  # flagged, not skipped

    skipped = group_advantages(rewards, groups, global_std=global_std, skip_uninformative=True)
    assert skipped.advantages[:3].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(skipped.advantages[3:], kept.advantages[3:])
    stricter = group_advantages(rewards, groups, skip_uninformative=True, min_std=0.005)
    assert not stricter.uninformative.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rewards_B": torch.ones(2, 2), "group_ids_B": torch.zeros(2, 2, dtype=torch.long)}, "1-D"),
        ({"rewards_B": torch.ones(3), "group_ids_B": torch.zeros(2, dtype=torch.long)}, "one id per reward"),
        ({"rewards_B": torch.ones(2), "group_ids_B": torch.zeros(2)}, "integer"),
        ({"rewards_B": torch.tensor([1.0, math.inf]), "group_ids_B": torch.zeros(2, dtype=torch.long)}, "infinite"),
        ({"rewards_B": torch.ones(2, dtype=torch.long), "group_ids_B": torch.zeros(2, dtype=torch.long)}, "floating"),
        (
            {"rewards_B": torch.ones(2), "group_ids_B": torch.zeros(2, dtype=torch.long), "valid_B": torch.ones(2)},
            "bool",
        ),
        ({"rewards_B": torch.ones(2), "group_ids_B": torch.zeros(2, dtype=torch.long), "clip": 0.0}, "clip"),
    ],
)
def test_bad_inputs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(**kwargs)


def _reference(rewards: list[float], groups: list[int], clip: float) -> list[float]:
    """Per-group population statistics in plain Python, invalid (NaN) rewards left out."""
    out = []
    for reward, group in zip(rewards, groups, strict=True):
        mates = [r for r, g in zip(rewards, groups, strict=True) if g == group and not math.isnan(r)]
        if math.isnan(reward) or max(mates) == min(mates):
            out.append(0.0)
            continue
        z = (reward - statistics.fmean(mates)) / (statistics.pstdev(mates) + EPS)
        out.append(min(max(z, -clip), clip))
    return out


samples = st.lists(
    st.tuples(st.one_of(st.floats(0, 1, width=32), st.just(nan)), st.sampled_from([-7, 0, 3, 1000])),
    min_size=1,
    max_size=24,
)


@settings(max_examples=60, deadline=None)
@given(samples=samples, clip=st.sampled_from([0.5, 2.0, 5.0]))
def test_matches_plain_python_statistics(samples, clip):
    rewards, groups = zip(*samples, strict=True)
    out = group_advantages(torch.tensor(rewards), torch.tensor(groups), clip=clip)
    assert out.advantages.tolist() == pytest.approx(_reference(list(rewards), list(groups), clip), abs=1e-3)
    assert out.advantages.abs().max() <= clip


@settings(max_examples=30, deadline=None)
@given(samples=samples, offset=st.integers(-(10**6), 10**6))
def test_group_ids_are_only_labels(samples, offset):
    rewards, groups = zip(*samples, strict=True)
    a = group_advantages(torch.tensor(rewards), torch.tensor(groups))
    b = group_advantages(torch.tensor(rewards), torch.tensor(groups, dtype=torch.int32) * 3 + offset)
    assert torch.equal(a.advantages, b.advantages)

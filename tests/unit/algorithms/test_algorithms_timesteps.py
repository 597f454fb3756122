import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from firm.algorithms import broadcast_per_sample, num_train_steps, subsample_timesteps


@pytest.mark.parametrize(
    ("num_steps", "fraction", "expected"),
    [
        (10, 0.99, 10),  # FIRM's "about 99%" of a 10-step schedule is every step
        (6, 0.99, 6),
        (10, 0.3, 3),  # 0.3 * 10 = 3.0000000000000004 in floating point: still 3
        (10, 0.25, 3),  # 2.5 rounds up
        (10, 0.01, 1),  # at least one
        (1, 0.5, 1),
        (10, 1.0, 10),
        (6, 0.5, 3),
    ],
)
def test_the_count_is_a_ceiling_and_at_least_one(num_steps, fraction, expected):
    assert num_train_steps(num_steps, fraction) == expected
    assert subsample_timesteps(num_steps, fraction).shape == (expected,)


@given(st.integers(1, 60), st.floats(0.001, 1.0))
def test_the_count_covers_the_fraction_and_no_more(num_steps, fraction):
    k = num_train_steps(num_steps, fraction)
    assert 1 <= k <= num_steps
    assert k >= fraction * num_steps - 1e-6 and (k - 1 < fraction * num_steps or k == 1)


def test_indices_are_distinct_steps_of_the_schedule():
    chosen = subsample_timesteps(10, 0.5, generator=torch.Generator().manual_seed(0))
    assert chosen.dtype == torch.long and chosen.shape == (5,)
    assert len(set(chosen.tolist())) == 5 and all(0 <= i < 10 for i in chosen.tolist())


def test_per_sample_choices_are_shuffled_independently():
    chosen = subsample_timesteps(10, 1.0, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert chosen.shape == (8, 10) and chosen.dtype == torch.long
    assert all(sorted(row) == list(range(10)) for row in chosen.tolist())
    assert len({tuple(row) for row in chosen.tolist()}) > 1
    assert subsample_timesteps(6, 0.5, batch_size=3).shape == (3, 3)


def test_a_seeded_generator_makes_the_choice_reproducible():
    def draw(seed: int) -> torch.Tensor:
        return subsample_timesteps(20, 0.5, batch_size=4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
    single = [subsample_timesteps(20, 0.5, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*single)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_steps": 0, "fraction": 0.5}, "num_steps"),
        ({"num_steps": 10, "fraction": 0.0}, "fraction"),
        ({"num_steps": 10, "fraction": 1.5}, "fraction"),
        ({"num_steps": 10, "fraction": 0.5, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        subsample_timesteps(**kwargs)


def test_broadcast_per_sample_shapes():
    latents = torch.zeros(3, 4, 5)
    assert broadcast_per_sample(0.5, latents).shape == (1, 1, 1)
    per_sample = broadcast_per_sample(torch.tensor([0.1, 0.2, 0.3], dtype=torch.bfloat16), latents)
    assert per_sample.shape == (3, 1, 1) and per_sample.dtype == torch.float32
    assert broadcast_per_sample(torch.tensor(0.5, dtype=torch.float64), latents).dtype == torch.float64
    with pytest.raises(ValueError, match=r"t must be .* one value per sample \[3\]"):
        broadcast_per_sample(torch.ones(2), latents, "t")

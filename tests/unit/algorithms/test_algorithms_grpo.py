import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from firm.algorithms import gaussian_mean_kl, grpo_loss, sde_step_logprob


def _batch(b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, 3, 3, generator=gen), torch.randn(b, 2, 3, 3, generator=gen)


def test_step_mean_and_std_by_hand():
    x_t, v = torch.ones(1, 1), torch.full((1, 1), 0.5)
    step = sde_step_logprob(x_t, v, 0.5, 0.25, 0.7, prev_sample_BX=torch.zeros(1, 1))
    # sigma = 0.7 sqrt(0.5 / 0.5) = 0.7, h = 0.25:
    # mean = 1 (1 - 0.49 * 0.25 / 1) - 0.5 * 0.25 (1 + 0.49 * 0.5 / 1) = 0.8775 - 0.155625; std = 0.7 * 0.5.
    assert step.mean.item() == pytest.approx(0.721875)
    assert step.std.tolist() == pytest.approx([0.35])
    log_density = -(0.721875**2) / (2 * 0.35**2) - math.log(0.35) - 0.5 * math.log(2 * math.pi)
    assert step.log_prob.item() == pytest.approx(log_density)


def test_log_prob_matches_torch_normal():
    x_t, v = _batch()
    t, t_prev = torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.8, 0.5, 0.45, 0.0])
    step = sde_step_logprob(x_t, v, t, t_prev, 0.7, generator=torch.Generator().manual_seed(1))
    sigma = 0.7 * torch.sqrt(t / (1 - t))
    h = t - t_prev
    std = (sigma * h.sqrt()).view(4, 1, 1, 1)
    mean = x_t * (1 - (sigma**2 * h / (2 * t))).view(4, 1, 1, 1) - v * (h * (1 + sigma**2 * (1 - t) / (2 * t))).view(
        4, 1, 1, 1
    )
    expected = Normal(mean, std).log_prob(step.prev_sample).mean(dim=(1, 2, 3))
    assert torch.allclose(step.mean, mean, atol=1e-6)
    assert torch.allclose(step.log_prob, expected, atol=1e-5)
    assert step.log_prob.shape == (4,) and step.std.shape == (4,)


def test_first_step_from_pure_noise_uses_1_minus_t_prev():
    x_t, v = _batch(2)
    step = sde_step_logprob(x_t, v, 1.0, 0.8, 0.7, generator=torch.Generator().manual_seed(0))
    # sigma = 0.7 sqrt(1 / (1 - 0.8)), h = 0.2
    assert step.std.tolist() == pytest.approx([0.7 * math.sqrt(5.0) * math.sqrt(0.2)] * 2)
    assert torch.isfinite(step.log_prob).all() and torch.isfinite(step.prev_sample).all()


def test_on_policy_ratio_is_exactly_one_and_nothing_is_clipped():
    x_t, v = _batch()
    sampled = sde_step_logprob(x_t, v, 0.6, 0.4, 0.7, generator=torch.Generator().manual_seed(3))
    v_train = v.clone().requires_grad_()
    again = sde_step_logprob(x_t, v_train, 0.6, 0.4, 0.7, prev_sample_BX=sampled.prev_sample)
    assert torch.equal(again.log_prob, sampled.log_prob)
    advantages = torch.tensor([1.0, -2.0, 0.5, 0.0])
    out = grpo_loss(again.log_prob, sampled.log_prob, advantages)
    assert torch.equal(out.ratio, torch.ones(4))
    assert out.clip_fraction.item() == 0.0 and out.approx_kl.item() == 0.0
    assert out.loss.item() == pytest.approx(-advantages.mean().item())
    out.loss.backward()
    assert v_train.grad is not None and v_train.grad.abs().sum() > 0


def test_log_prob_does_not_depend_on_the_batch():
    x_t, v = _batch()
    t, t_prev = torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.8, 0.5, 0.45, 0.0])
    batch = sde_step_logprob(x_t, v, t, t_prev, 0.7, generator=torch.Generator().manual_seed(5))
    for i in range(4):
        alone = sde_step_logprob(
            x_t[i : i + 1], v[i : i + 1], t[i : i + 1], t_prev[i : i + 1], 0.7, batch.prev_sample[i : i + 1]
        )
        assert torch.equal(alone.log_prob[0], batch.log_prob[i])
        assert torch.equal(alone.mean[0], batch.mean[i])


def test_low_precision_inputs_are_computed_in_float32():
    x_t, v = _batch()
    prev = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    low = sde_step_logprob(x_t.bfloat16(), v.bfloat16(), 0.6, 0.4, 0.7, prev.bfloat16())
    rounded = sde_step_logprob(x_t.bfloat16().float(), v.bfloat16().float(), 0.6, 0.4, 0.7, prev.bfloat16().float())
    assert low.log_prob.dtype == torch.float32 and low.mean.dtype == torch.float32
    assert torch.equal(low.log_prob, rounded.log_prob)
    drawn = sde_step_logprob(x_t.half(), v.half(), 0.6, 0.4, 0.7)
    assert drawn.prev_sample.dtype == torch.float32


def test_drawn_samples_have_the_step_mean_and_std():
    x_t, v = torch.full((2, 40_000), 0.8), torch.full((2, 40_000), -0.3)
    step = sde_step_logprob(x_t, v, 0.7, 0.5, 0.7, generator=torch.Generator().manual_seed(0))
    sigma = 0.7 * math.sqrt(0.7 / 0.3)
    mean = 0.8 * (1 - sigma**2 * 0.2 / 1.4) + 0.3 * 0.2 * (1 + sigma**2 * 0.3 / 1.4)
    std = sigma * math.sqrt(0.2)
    assert step.prev_sample.mean().item() == pytest.approx(mean, abs=0.01)
    assert step.prev_sample.std().item() == pytest.approx(std, rel=0.01)
    # Different draws for the two samples of the batch, the same draws again under the same seed.
    assert not torch.equal(step.prev_sample[0], step.prev_sample[1])
    repeat = sde_step_logprob(x_t, v, 0.7, 0.5, 0.7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(step.prev_sample, repeat.prev_sample)


def test_caller_drawn_noise_gives_the_outcome_and_its_log_prob():
    x_t, v = _batch(3)
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))
    step = sde_step_logprob(x_t, v, 0.6, 0.4, 0.7, noise_BX=noise)
    torch.testing.assert_close(step.prev_sample, step.mean + step.std.view(-1, 1, 1, 1) * noise)
    again = sde_step_logprob(x_t, v, 0.6, 0.4, 0.7, prev_sample_BX=step.prev_sample)
    assert torch.equal(again.log_prob, step.log_prob)
    with pytest.raises(ValueError, match="noise must have"):
        sde_step_logprob(x_t, v, 0.6, 0.4, 0.7, noise_BX=noise[:1])


@pytest.mark.parametrize(
    ("t", "t_prev", "noise_level", "message"),
    [
        (0.5, 0.5, 0.7, "t_prev < t"),
        (0.3, 0.5, 0.7, "t_prev < t"),
        (1.2, 0.5, 0.7, "0 < t <= 1"),
        (0.5, 0.2, 0.0, "noise_level"),
    ],
)
def test_bad_steps_are_rejected(t, t_prev, noise_level, message):
    x_t, v = _batch(2)
    with pytest.raises(ValueError, match=message):
        sde_step_logprob(x_t, v, t, t_prev, noise_level)


def test_bad_shapes_are_rejected():
    x_t, v = _batch(2)
    with pytest.raises(ValueError, match="share one shape"):
        sde_step_logprob(x_t, v[:1], 0.5, 0.4, 0.7)
    with pytest.raises(ValueError, match="one value per sample"):
        sde_step_logprob(x_t, v, torch.tensor([0.5, 0.5, 0.5]), 0.4, 0.7)
    with pytest.raises(ValueError, match="prev_sample"):
        sde_step_logprob(x_t, v, 0.5, 0.4, 0.7, prev_sample_BX=torch.zeros(2, 3))


def test_ratio_above_the_trust_region_is_clipped_for_positive_advantages_only():
    eps = 1e-4
    old = torch.tensor([-1.0, -1.0])
    log_prob = (old + 0.1).requires_grad_()  # ratio e^0.1 = 1.105 > 1 + eps
    out = grpo_loss(log_prob, old, torch.tensor([2.0, -2.0]), eps)
    # A = 2: max(-2 * 1.105, -2 * (1 + eps)) = -2 (1 + eps), constant; A = -2: max(2 * 1.105, 2 * (1 + eps)) = 2.21.
    ratio = math.exp(0.1)
    assert out.loss.item() == pytest.approx((-2 * (1 + eps) + 2 * ratio) / 2)
    assert out.clip_fraction.item() == 1.0
    assert out.approx_kl.item() == pytest.approx(0.5 * 0.01)
    out.loss.backward()
    assert log_prob.grad[0].item() == 0.0  # clipped: no push further up
    assert log_prob.grad[1].item() == pytest.approx(2 * ratio / 2)  # d/dlogp (-A ratio) / B


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-0.01, 0.01), st.floats(-3, 3)), min_size=1, max_size=8),
    st.sampled_from([1e-4, 1e-2, 0.2]),
)
def test_policy_loss_is_the_ppo_pessimistic_bound(pairs, eps):
    log_ratio, advantages = (torch.tensor(column, dtype=torch.float64) for column in zip(*pairs, strict=True))
    out = grpo_loss(log_ratio, torch.zeros_like(log_ratio), advantages, eps)
    expected = 0.0
    for lr, a in pairs:
        ratio = math.exp(lr)
        expected += max(-a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps)) / len(pairs)
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)


def test_kl_between_step_gaussians_has_its_closed_form():
    mean_theta = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    mean_ref = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    std = torch.tensor([0.5, 1.0])
    kl = gaussian_mean_kl(mean_theta, mean_ref, std)
    # sample 0: (1 + 4) / 2 / (2 * 0.25) = 5; sample 1: (0 + 4) / 2 / (2 * 1) = 1.
    assert kl.tolist() == pytest.approx([5.0, 1.0])
    exact = kl_divergence(Normal(mean_theta, std[:, None]), Normal(mean_ref, std[:, None])).mean(dim=1)
    assert torch.allclose(kl, exact)
    assert gaussian_mean_kl(mean_theta, mean_ref, 1.0).tolist() == pytest.approx([1.25, 1.0])


def test_grpo_loss_adds_the_weighted_kl():
    log_prob = torch.zeros(2)
    kl = torch.tensor([0.5, 1.5])
    out = grpo_loss(log_prob, log_prob, torch.tensor([1.0, 3.0]), kl_B=kl, kl_weight=0.04)
    assert out.loss.item() == pytest.approx(-2.0 + 0.04 * 1.0)
    assert out.policy_loss.item() == pytest.approx(-2.0) and out.kl.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs kl"):
        grpo_loss(log_prob, log_prob, torch.ones(2), kl_weight=0.1)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(log_prob, log_prob, torch.ones(3))
    with pytest.raises(ValueError, match="clip_range"):
        grpo_loss(log_prob, log_prob, torch.ones(2), 0.0)

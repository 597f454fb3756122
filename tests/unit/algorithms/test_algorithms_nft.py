import pytest
import torch

from firm.algorithms import ema_update_, nft_loss, nft_optimality, old_ema_decay


def test_optimality_maps_advantages_linearly_into_the_unit_interval():
    r = nft_optimality(torch.tensor([-10.0, -5.0, -2.5, 0.0, 2.5, 5.0, 10.0]))
    assert r.tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert nft_optimality(torch.tensor([1.0]), a_max=2.0).item() == 0.75
    with pytest.raises(ValueError, match="a_max"):
        nft_optimality(torch.zeros(1), a_max=0.0)


def test_velocity_loss_on_hand_computed_tensors():
    v_old = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    v_theta = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    v = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    r = torch.tensor([1.0, 0.25])
    out = nft_loss(v_theta, v_old, v, r, beta=1.0)
    # beta = 1: v_pos = v_theta; v_neg = 2 v_old - v_theta = [[-1, 0], [1, -1]].
    # sample 0: r = 1, ((1-1)^2 + (0-1)^2) / 2 = 0.5; sample 1: 0.25 * (1 + 9) / 2 + 0.75 * (1 + 1) / 2 = 2.0.
    assert out.per_sample.tolist() == pytest.approx([0.5, 2.0])
    assert out.loss.item() == pytest.approx(1.25)
    assert out.positive.tolist() == pytest.approx([0.5, 5.0]) and out.negative.tolist() == pytest.approx([2.5, 1.0])
    assert out.r_mean.item() == pytest.approx(0.625) and out.kl is None

    half = nft_loss(v_theta, v_old, v, r, beta=0.5)
    # sample 0: v_pos = 0.5 * 0 + 0.5 * [1, 0] = [0.5, 0]; error [-0.5, -1] -> (0.25 + 1) / 2.
    assert half.per_sample[0].item() == pytest.approx(0.625)
    assert nft_loss(v_theta, v_old, v, r, policy_weight=5.0).loss.item() == pytest.approx(5 * 1.25)


def _sgd_step(r: float, form: str, beta: float = 1.0) -> tuple[float, float]:
    """Distance of v_theta to the target before and after one SGD step, starting at the old policy."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 4, generator=gen), torch.randn(3, 4, 4, generator=gen)
    t = torch.tensor([0.2, 0.5, 0.9])
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    v_target = eps - x0
    v_theta = torch.randn(3, 4, 4, generator=gen).requires_grad_()
    extra = {"x_t_BX": x_t, "t_B": t, "x0_BX": x0} if form == "x0" else {}
    out = nft_loss(v_theta, v_theta.detach().clone(), v_target, torch.full((3,), r), beta, form=form, **extra)
    out.loss.backward()
    before = (v_theta - v_target).norm().item()
    with torch.no_grad():
        v_theta -= 0.1 * v_theta.grad
    return before, (v_theta - v_target).norm().item()


@pytest.mark.parametrize("form", ["velocity", "x0"])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_one_sgd_step_moves_towards_the_target_when_r_is_1_and_away_when_r_is_0(form, beta):
    before, after = _sgd_step(1.0, form, beta)
    assert after < before
    before, after = _sgd_step(0.0, form, beta)
    assert after > before


def test_x0_form_is_self_normalised_with_a_detached_weight():
    t = 0.5
    v_target = torch.tensor([[0.0, 0.0]])
    v_theta = torch.tensor([[1.0, -3.0]], requires_grad=True)
    x0 = torch.tensor([[0.2, -0.4]])
    x_t = x0 + t * v_target  # x_t - t v = x0
    out = nft_loss(v_theta, v_theta.detach(), v_target, torch.ones(1), form="x0", x_t_BX=x_t, t_B=t, x0_BX=x0)
    # x0_pos - x0 = -t (v_theta - v) = [-0.5, 1.5]: mean square 1.25 over a weight mean |.| = 1.0.
    assert out.loss.item() == pytest.approx(1.25)
    out.loss.backward()
    # With the weight w held constant: d/dv mean(e^2) / w = 2 e (-t) / (2 w) = [0.25, -0.75].
    assert v_theta.grad.tolist() == [[pytest.approx(0.25), pytest.approx(-0.75)]]
    derived = nft_loss(v_theta, v_theta.detach(), v_target, torch.ones(1), form="x0", x_t_BX=x_t, t_B=t)
    assert derived.loss.item() == pytest.approx(1.25)  # x0 defaults to x_t - t v_target


def test_x0_form_of_a_perfect_prediction_is_zero_not_nan():
    v = torch.ones(2, 3)
    out = nft_loss(v, v, v, torch.tensor([1.0, 0.0]), form="x0", x_t_BX=torch.zeros(2, 3), t_B=torch.tensor([0.3, 0.7]))
    assert out.per_sample.tolist() == [0.0, 0.0]


def test_kl_term_pulls_towards_the_reference():
    v_theta = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    v_ref = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    v = v_theta.detach()
    base = nft_loss(v_theta, v, v, torch.ones(2))  # zero policy term: every prediction is the target
    out = nft_loss(v_theta, v, v, torch.ones(2), v_ref_BX=v_ref, kl_weight=0.1)
    # ||v_theta - v_ref||^2: (1 + 4) / 2 = 2.5 and (0 + 1) / 2 = 0.5.
    assert out.kl.item() == pytest.approx(1.5)
    assert out.per_sample.tolist() == pytest.approx([0.25, 0.05])
    assert out.loss.item() == pytest.approx(base.loss.item() + 0.15)
    logged = nft_loss(v_theta, v, v, torch.ones(2), v_ref_BX=v_ref)
    assert logged.kl.item() == pytest.approx(1.5) and logged.loss.item() == 0.0


def test_low_precision_inputs_give_a_float32_loss():
    v = torch.randn(2, 8).to(torch.bfloat16)
    out = nft_loss(v, v, torch.zeros(2, 8, dtype=torch.bfloat16), torch.ones(2))
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx((v.float() ** 2).mean().item())


def test_bad_arguments_are_rejected_or_warned_about():
    v, r = torch.zeros(2, 3), torch.ones(2)
    with pytest.raises(ValueError, match="v_old"):
        nft_loss(v, torch.zeros(2, 4), v, r)
    with pytest.raises(ValueError, match="one value per sample"):
        nft_loss(v, v, v, torch.ones(3))
    with pytest.raises(ValueError, match="latent dim"):
        nft_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), r)
    with pytest.raises(ValueError, match="needs x_t and t"):
        nft_loss(v, v, v, r, form="x0")
    with pytest.raises(ValueError, match="form"):
        nft_loss(v, v, v, r, form="eps")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs v_ref"):
        nft_loss(v, v, v, r, kl_weight=1e-4)
    with pytest.raises(ValueError, match="beta"):
        nft_loss(v, v, v, r, beta=0.0)
    with pytest.warns(UserWarning, match="ignores"):
        nft_loss(v, v, v, r, t_B=0.5)


def test_old_policy_decay_schedule():
    assert [old_ema_decay(s) for s in (0, 1, 100, 499, 500, 10_000)] == pytest.approx([0, 0.001, 0.1, 0.499, 0.5, 0.5])
    assert old_ema_decay(10, rate=0.05, cap=0.3) == 0.3
    with pytest.raises(ValueError, match="cap"):
        old_ema_decay(1, cap=1.5)


def test_ema_update_blends_in_place_without_recording_gradients():
    old = [torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.nn.Parameter(torch.tensor([[4.0]]))]
    new = [torch.tensor([3.0, 6.0]), torch.tensor([[0.0]])]
    ema_update_(old, new, 0.25)
    # 0.25 * old + 0.75 * new
    assert old[0].tolist() == [2.5, 5.0] and old[1].tolist() == [[1.0]]
    assert old[0].grad_fn is None and old[0].requires_grad
    ema_update_(old, new, 0.0)
    assert old[0].tolist() == [3.0, 6.0]
    with pytest.raises(ValueError, match="length"):
        ema_update_(old, new[:1], 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update_(old[:1], [torch.zeros(3)], 0.5)
    with pytest.raises(ValueError, match="decay"):
        ema_update_(old, new, 1.5)

"""DiffusionNFT (PAPER.md section 5): a likelihood-free policy loss on the forward process, and its "old" policy EMA.

Rectified-flow convention: ``x_t = (1 - t) x0 + t eps``, target velocity ``v = eps - x0``, ``x0_hat = x_t - t v``.

Shapes: B samples, X any number of latent dims. Per-sample quantities are means over the X dims.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from firm.algorithms.timesteps import broadcast_per_sample

# The floor on the x0 form's self-normalising weight, as in the released DiffusionNFT code.
X0_WEIGHT_FLOOR = 1e-5


@dataclass(frozen=True)
class NFTLoss:
    """The DiffusionNFT loss and its diagnostics (diagnostics are detached).

    Attributes:
        loss: the scalar to backpropagate, ``per_sample.mean()``.
        per_sample: ``[B]`` each sample's policy term plus its KL term.
        positive: ``[B]`` detached, the (weighted) error of the implicit positive policy.
        negative: ``[B]`` detached, the (weighted) error of the implicit negative policy.
        r_mean: detached scalar, the mean optimality ``r``.
        kl: detached scalar, mean ``||v_theta - v_ref||^2``; None when no ``v_ref`` was given.
    """

    loss: Tensor
    per_sample: Tensor
    positive: Tensor
    negative: Tensor
    r_mean: Tensor
    kl: Tensor | None


def nft_optimality(advantages_B: Tensor, a_max: float = 5.0) -> Tensor:
    """Optimality probability ``r = clip(A / (2 a_max) + 0.5, 0, 1)``: 0 at ``-a_max``, 0.5 at 0, 1 at ``a_max``.

    Args:
        advantages_B: advantages, as from :func:`~firm.algorithms.group_advantages`.
        a_max: the advantage that maps to certainty (the advantage clip, 5 in FIRM).

    Returns:
        ``r`` with the shape of ``advantages_B``.

    Raises:
        ValueError: if ``a_max <= 0``.
    """
    if a_max <= 0:
        raise ValueError(f"a_max must be > 0, got {a_max}")
    return (advantages_B / (2 * a_max) + 0.5).clamp(0.0, 1.0)


def _per_sample_mean(x_BX: Tensor) -> Tensor:
    return x_BX.flatten(1).mean(dim=1)


def _x0_form_error(x0_pred_BX: Tensor, x0_BX: Tensor) -> Tensor:
    """``||x0_pred - x0||^2 / w`` per sample with ``w = mean |x0_pred - x0|``, detached, floored at 1e-5."""
    error_BX = x0_pred_BX - x0_BX
    with torch.no_grad():
        weight_B = _per_sample_mean(error_BX.abs()).clamp_min(X0_WEIGHT_FLOOR)
    return _per_sample_mean(error_BX**2) / weight_B


def _check_nft_shapes(v_theta_BX: Tensor, others: dict[str, Tensor | None], r_B: Tensor) -> None:
    if v_theta_BX.ndim < 2:
        raise ValueError(f"velocities must be [B, ...] with at least one latent dim, got {list(v_theta_BX.shape)}")
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != v_theta_BX.shape:
            raise ValueError(f"{name} must have v_theta's shape {list(v_theta_BX.shape)}, got {list(tensor.shape)}")
    if r_B.shape != v_theta_BX.shape[:1]:
        raise ValueError(f"r must be one value per sample [{v_theta_BX.shape[0]}], got shape {list(r_B.shape)}")


def nft_loss(
    v_theta_BX: Tensor,
    v_old_BX: Tensor,
    v_target_BX: Tensor,
    r_B: Tensor,
    beta: float = 1.0,
    *,
    form: Literal["velocity", "x0"] = "velocity",
    x_t_BX: Tensor | None = None,
    t_B: float | Tensor | None = None,
    x0_BX: Tensor | None = None,
    v_ref_BX: Tensor | None = None,
    kl_weight: float = 0.0,
    policy_weight: float = 1.0,
) -> NFTLoss:
    """DiffusionNFT's loss: pull an implicit positive policy towards the data, push an implicit negative one away.

    With ``v_pos = (1 - beta) v_old + beta v_theta`` and ``v_neg = (1 + beta) v_old - beta v_theta``:

    - ``form="velocity"`` (the paper): ``L = r ||v_pos - v||^2 + (1 - r) ||v_neg - v||^2``.
    - ``form="x0"`` (the released code): ``x0_pos = x_t - t v_pos``, ``x0_neg = x_t - t v_neg`` and
      ``L = r ||x0_pos - x0||^2 / w_pos + (1 - r) ||x0_neg - x0||^2 / w_neg``, where each ``w`` is that sample's
      ``mean |x0_pred - x0|``, detached and floored at 1e-5. Since ``x0_pred - x0 = -t (v_pred - v)``, this is the
      velocity form reweighted per sample by ``t / mean |v_pred - v|``: self-normalising, so every sample and
      timestep pulls with a comparable force whatever its error scale.

    ``||.||^2`` is a mean over the latent dims; the loss is the mean over samples of ``policy_weight`` times the policy
    term plus ``kl_weight * ||v_theta - v_ref||^2``. The released code also divides the policy term by ``beta`` and
    multiplies it by the advantage clip (5): pass ``policy_weight=5 / beta`` to match its scale (with AdamW this matters
    only against the KL term and gradient clipping). ``v_old``, ``v_target``, ``x_t``, ``x0`` and ``v_ref`` are
    treated as constants (detached). Samples with ``r = 0.5`` (advantage 0) still pull ``v_theta`` towards ``v_old``;
    drop invalid or skipped samples before calling rather than relying on a zero advantage.

    Args:
        v_theta_BX: the trained policy's velocity at ``(x_t, t)``; gradients flow through it.
        v_old_BX: the old (sampling) policy's velocity at the same point.
        v_target_BX: the flow-matching target ``eps - x0``.
        r_B: optimality per sample, from :func:`nft_optimality`.
        beta: how far the implicit policies sit from the old one (1.0 in FIRM).
        form: ``"velocity"`` or ``"x0"`` (see above).
        x_t_BX: the noised latents; required by the x0 form.
        t_B: the timestep, a float or one per sample; required by the x0 form.
        x0_BX: the clean latents for the x0 form; ``x_t - t v_target`` (the same thing) when None.
        v_ref_BX: the reference (base model) velocity, for the KL term.
        kl_weight: weight of the KL term (1e-4 in FIRM); needs ``v_ref_BX`` when > 0.
        policy_weight: a constant factor on the policy term.

    Returns:
        An :class:`NFTLoss`; the loss is computed in at least float32.

    Raises:
        ValueError: for mismatched shapes, ``beta <= 0``, a negative weight, an unknown form, an x0 form without
            ``x_t_BX`` and ``t_B``, or ``kl_weight > 0`` without ``v_ref_BX``.
    """
    _check_nft_shapes(v_theta_BX, {"v_old": v_old_BX, "v_target": v_target_BX, "v_ref": v_ref_BX}, r_B)
    if beta <= 0 or kl_weight < 0 or policy_weight < 0:
        raise ValueError(f"need beta > 0, kl_weight >= 0, policy_weight >= 0; got {beta}, {kl_weight}, {policy_weight}")
    if kl_weight > 0 and v_ref_BX is None:
        raise ValueError("kl_weight > 0 needs v_ref (the reference model's velocity, LoRA disabled)")
    dtype = torch.promote_types(v_theta_BX.dtype, torch.float32)
    v_theta = v_theta_BX.to(dtype)
    v_old = v_old_BX.detach().to(dtype)
    v_target = v_target_BX.detach().to(dtype)
    v_pos = (1 - beta) * v_old + beta * v_theta
    v_neg = (1 + beta) * v_old - beta * v_theta

    if form == "velocity":
        if x_t_BX is not None or t_B is not None or x0_BX is not None:
            warnings.warn("nft_loss(form='velocity') ignores x_t, t and x0", stacklevel=2)
        positive_B = _per_sample_mean((v_pos - v_target) ** 2)
        negative_B = _per_sample_mean((v_neg - v_target) ** 2)
    elif form == "x0":
        if x_t_BX is None or t_B is None:
            raise ValueError("nft_loss(form='x0') needs x_t and t")
        _check_nft_shapes(v_theta_BX, {"x_t": x_t_BX, "x0": x0_BX}, r_B)
        x_t = x_t_BX.detach().to(dtype)
        t = broadcast_per_sample(t_B, x_t, "t").to(dtype)
        x0 = x_t - t * v_target if x0_BX is None else x0_BX.detach().to(dtype)
        positive_B = _x0_form_error(x_t - t * v_pos, x0)
        negative_B = _x0_form_error(x_t - t * v_neg, x0)
    else:
        raise ValueError(f"nft_loss form must be 'velocity' or 'x0', got {form!r}")

    r = r_B.detach().to(dtype)
    per_sample_B = policy_weight * (r * positive_B + (1 - r) * negative_B)
    kl = None
    if v_ref_BX is not None:
        kl_B = _per_sample_mean((v_theta - v_ref_BX.detach().to(dtype)) ** 2)
        per_sample_B = per_sample_B + kl_weight * kl_B
        kl = kl_B.detach().mean()
    return NFTLoss(
        loss=per_sample_B.mean(),
        per_sample=per_sample_B,
        positive=positive_B.detach(),
        negative=negative_B.detach(),
        r_mean=r.mean(),
        kl=kl,
    )


def old_ema_decay(step: int, rate: float = 0.001, cap: float = 0.5) -> float:
    """The old policy's EMA decay ``d = min(rate * step, cap)``: the old policy follows closely at first, lags later.

    Raises:
        ValueError: for a negative step or rate, or a cap outside ``[0, 1]``.
    """
    if step < 0 or rate < 0 or not 0.0 <= cap <= 1.0:
        raise ValueError(f"need step >= 0, rate >= 0 and 0 <= cap <= 1; got step={step} rate={rate} cap={cap}")
    return min(rate * step, cap)


def ema_update_(old_params: Iterable[Tensor], new_params: Iterable[Tensor], decay: float) -> None:
    """In place, without gradients: ``old <- decay * old + (1 - decay) * new`` for each pair of tensors.

    Args:
        old_params: the old policy's tensors (updated).
        new_params: the trained policy's tensors, in the same order.
        decay: the share of the old value kept, in ``[0, 1]`` (see :func:`old_ema_decay`).

    Raises:
        ValueError: for a decay outside ``[0, 1]``, or lists of different lengths or shapes.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
    old, new = list(old_params), list(new_params)
    if len(old) != len(new):
        raise ValueError(f"old and new parameter lists differ in length: {len(old)} vs {len(new)}")
    for i, (o, n) in enumerate(zip(old, new, strict=True)):
        if o.shape != n.shape:
            raise ValueError(f"parameter {i}: old shape {list(o.shape)} differs from new {list(n.shape)}")
    with torch.no_grad():
        for o, n in zip(old, new, strict=True):
            o.lerp_(n.to(o.dtype), 1.0 - decay)

"""Flow-GRPO (PAPER.md section 5): an SDE sampling step with its log-probability, and the PPO-clipped loss.

Rectified-flow convention: ``x_t = (1 - t) x0 + t eps``, t from 1 (noise) to 0 (data); a step goes from ``t`` to
``t_prev < t`` with ``h = t - t_prev``.

Shapes: B samples, X any number of latent dims. Per-sample quantities are means over the X dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from firm.algorithms.timesteps import broadcast_per_sample

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class SDEStep:
    """One stochastic sampling step, all in float32 (float64 for float64 inputs).

    Attributes:
        prev_sample: ``[B, X]`` the sample at ``t_prev`` (drawn, or the one given).
        log_prob: ``[B]`` mean over latent elements of the Gaussian log-density of ``prev_sample``.
        mean: ``[B, X]`` the Gaussian's mean.
        std: ``[B]`` the Gaussian's standard deviation ``sigma_t sqrt(h)``.
    """

    prev_sample: Tensor
    log_prob: Tensor
    mean: Tensor
    std: Tensor


@dataclass(frozen=True)
class GRPOLoss:
    """The PPO-clipped loss and its diagnostics (diagnostics are detached).

    Attributes:
        loss: the scalar to backpropagate, policy loss plus ``kl_weight`` times the mean KL.
        policy_loss: detached scalar, the clipped surrogate alone.
        ratio: ``[B]`` detached, ``exp(log_prob - old_log_prob)``.
        clip_fraction: detached scalar, the share of samples with ``|ratio - 1| > clip_range``.
        approx_kl: detached scalar, ``mean((log_prob - old_log_prob)^2) / 2``, the drift from the sampling policy.
        kl: detached scalar, the mean of the given KL; None when none was given.
    """

    loss: Tensor
    policy_loss: Tensor
    ratio: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor
    kl: Tensor | None


def _step_times(t_B: float | Tensor, t_prev_B: float | Tensor, like_BX: Tensor) -> tuple[Tensor, Tensor]:
    t = broadcast_per_sample(t_B, like_BX, "t").to(like_BX.dtype)
    t_prev = broadcast_per_sample(t_prev_B, like_BX, "t_prev").to(like_BX.dtype)
    if ((t <= 0) | (t > 1)).any() or (t_prev < 0).any():
        raise ValueError("SDE step times must satisfy 0 < t <= 1 and t_prev >= 0")
    if (t - t_prev <= 0).any():
        raise ValueError("an SDE step must go towards the data: t_prev < t (h = t - t_prev > 0)")
    return t, t_prev


def sde_step_logprob(
    x_t_BX: Tensor,
    v_BX: Tensor,
    t_B: float | Tensor,
    t_prev_B: float | Tensor,
    noise_level: float,
    prev_sample_BX: Tensor | None = None,
    generator: torch.Generator | None = None,
    noise_BX: Tensor | None = None,
) -> SDEStep:
    """Flow-GRPO's SDE step from ``t`` to ``t_prev`` and the log-probability of its outcome.

    ``sigma_t = a sqrt(t / (1 - t))``, ``h = t - t_prev``,
    ``mean = x_t (1 - sigma_t^2 h / (2 t)) - v h (1 + sigma_t^2 (1 - t) / (2 t))``, ``std = sigma_t sqrt(h)``.
    At ``t = 1`` (pure noise) ``sigma_t`` is infinite; there ``1 - t`` is replaced by ``1 - t_prev``, as Flow-GRPO
    does (it uses the schedule's second sigma, which is ``t_prev`` on the first step).

    Everything is computed in float32 whatever the input dtype (float64 stays float64): bf16 inputs are cast
    first, so the log-prob equals the float32 computation on the bf16 values. The log-prob is per sample, so it does
    not depend on the batch a sample is in. To recompute the same log-prob later (ratio exactly 1 on-policy), keep
    the returned float32 ``prev_sample``; a bf16 copy of it is a different sample.

    Args:
        x_t_BX: the latents at ``t``.
        v_BX: the policy's velocity at ``(x_t, t)``.
        t_B: the current time, a float or one per sample, in ``(0, 1]``.
        t_prev_B: the next (less noisy) time, a float or one per sample, in ``[0, t)``.
        noise_level: ``a`` (0.7 for SD3.5 in FIRM); must be > 0, a deterministic step has no density.
        prev_sample_BX: the outcome whose log-prob to compute (training); drawn when None (sampling).
        generator: the generator for the noise when drawing, on ``x_t_BX``'s device.
        noise_BX: the standard normal noise of the draw, when the caller draws it (one generator per sample, so a
            sample's outcome does not depend on its batch); ``generator`` is then unused.

    Returns:
        An :class:`SDEStep`.

    Raises:
        ValueError: for mismatched shapes, latents without a latent dim, times outside the ranges above, or
            ``noise_level <= 0``.
    """
    if x_t_BX.ndim < 2 or v_BX.shape != x_t_BX.shape:
        raise ValueError(
            "x_t and v must share one shape [B, ...] with a latent dim, "
            f"got {list(x_t_BX.shape)} and {list(v_BX.shape)}"
        )
    if prev_sample_BX is not None and prev_sample_BX.shape != x_t_BX.shape:
        raise ValueError(f"prev_sample must have x_t's shape {list(x_t_BX.shape)}, got {list(prev_sample_BX.shape)}")
    if noise_level <= 0:
        raise ValueError(f"noise_level must be > 0 (a deterministic step has no log-prob), got {noise_level}")
    dtype = torch.promote_types(x_t_BX.dtype, torch.float32)
    x_t = x_t_BX.to(dtype)
    v = v_BX.to(dtype)
    t, t_prev = _step_times(t_B, t_prev_B, x_t)
    h = t - t_prev
    sigma = noise_level * (t / torch.where(t >= 1, 1 - t_prev, 1 - t)).sqrt()
    mean = x_t * (1 - sigma**2 * h / (2 * t)) - v * h * (1 + sigma**2 * (1 - t) / (2 * t))
    std = sigma * h.sqrt()
    if prev_sample_BX is None:
        if noise_BX is None:
            noise_BX = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=dtype)
        elif noise_BX.shape != x_t_BX.shape:
            raise ValueError(f"noise must have x_t's shape {list(x_t_BX.shape)}, got {list(noise_BX.shape)}")
        prev_sample = mean + std * noise_BX.to(dtype)
    else:
        prev_sample = prev_sample_BX.to(dtype)
    log_density = -((prev_sample.detach() - mean) ** 2) / (2 * std**2) - std.log() - _HALF_LOG_2PI
    std_B = std.flatten().expand(x_t.shape[0]) if std.numel() == 1 else std.flatten()
    return SDEStep(prev_sample=prev_sample, log_prob=log_density.flatten(1).mean(dim=1), mean=mean, std=std_B)


def gaussian_mean_kl(mean_theta_BX: Tensor, mean_ref_BX: Tensor, std_B: float | Tensor) -> Tensor:
    """KL between two Gaussians of equal std: ``||mu_theta - mu_ref||^2 / (2 std^2)``, a mean over latent elements.

    Args:
        mean_theta_BX: the trained policy's step mean (:attr:`SDEStep.mean`).
        mean_ref_BX: the reference policy's step mean at the same point.
        std_B: the step's std, a float or one per sample (:attr:`SDEStep.std`).

    Returns:
        ``[B]`` the KL per sample, in at least float32; gradients flow through ``mean_theta_BX`` only.

    Raises:
        ValueError: for mismatched shapes.
    """
    if mean_theta_BX.ndim < 2 or mean_ref_BX.shape != mean_theta_BX.shape:
        raise ValueError(
            "mean_theta and mean_ref must share one shape [B, ...] with a latent dim, got "
            f"{list(mean_theta_BX.shape)} and {list(mean_ref_BX.shape)}"
        )
    dtype = torch.promote_types(mean_theta_BX.dtype, torch.float32)
    std = broadcast_per_sample(std_B, mean_theta_BX, "std").to(dtype)
    difference = mean_theta_BX.to(dtype) - mean_ref_BX.detach().to(dtype)
    return (difference**2 / (2 * std**2)).flatten(1).mean(dim=1)


def grpo_loss(
    log_prob_B: Tensor,
    old_log_prob_B: Tensor,
    advantages_B: Tensor,
    clip_range: float = 1e-4,
    *,
    kl_B: Tensor | None = None,
    kl_weight: float = 0.0,
) -> GRPOLoss:
    """PPO's clipped objective on log-prob ratios: ``mean(max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)))``.

    Args:
        log_prob_B: the trained policy's log-prob of each stored step outcome; gradients flow through it.
        old_log_prob_B: the log-prob recorded when sampling (treated as a constant).
        advantages_B: advantages per sample.
        clip_range: ``eps``, the ratio's trust region (about 1e-4 for Flow-GRPO: per-element mean log-probs are small).
        kl_B: optional per-sample KL to a reference, as from :func:`gaussian_mean_kl`.
        kl_weight: weight of the mean KL in the loss; needs ``kl_B`` when > 0.

    Returns:
        A :class:`GRPOLoss`.

    Raises:
        ValueError: for tensors that are not the same ``[B]`` shape, ``clip_range <= 0``, ``kl_weight < 0``, or
            ``kl_weight > 0`` without ``kl_B``.
    """
    shapes = {"log_prob": log_prob_B, "old_log_prob": old_log_prob_B, "advantages": advantages_B, "kl": kl_B}
    for name, tensor in shapes.items():
        if tensor is not None and (tensor.ndim != 1 or tensor.shape != log_prob_B.shape):
            raise ValueError(f"{name} must be 1-D with one value per sample like log_prob, got {list(tensor.shape)}")
    if clip_range <= 0 or kl_weight < 0:
        raise ValueError(f"need clip_range > 0 and kl_weight >= 0, got clip_range={clip_range} kl_weight={kl_weight}")
    if kl_weight > 0 and kl_B is None:
        raise ValueError("kl_weight > 0 needs kl (e.g. gaussian_mean_kl of the policy and reference step means)")
    log_ratio = log_prob_B - old_log_prob_B.detach()
    ratio = log_ratio.exp()
    advantages = advantages_B.detach().to(ratio.dtype)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    policy_loss = torch.maximum(unclipped, clipped).mean()
    loss = policy_loss + kl_weight * kl_B.mean() if kl_B is not None else policy_loss
    return GRPOLoss(
        loss=loss,
        policy_loss=policy_loss.detach(),
        ratio=ratio.detach(),
        clip_fraction=((ratio.detach() - 1).abs() > clip_range).to(ratio.dtype).mean(),
        approx_kl=0.5 * (log_ratio.detach() ** 2).mean(),
        kl=None if kl_B is None else kl_B.detach().mean(),
    )

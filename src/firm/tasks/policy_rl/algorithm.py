"""The RL algorithms as objects the task is given: how to roll out, and the losses of one update.

:class:`PolicyRLTask <firm.tasks.policy_rl.PolicyRLTask>` calls an :class:`RLAlgorithm` without knowing which one it
is: :meth:`~RLAlgorithm.rollout_settings` and :attr:`~RLAlgorithm.rollout_role` say how to sample, and
:meth:`~RLAlgorithm.losses` yields one loss per trained timestep of a micro-batch (the task backpropagates each as it
comes, so only one timestep's graph is alive). The math is :mod:`firm.algorithms`'; this module is the glue between
it and a :class:`~firm.policies.Policy`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from firm.algorithms import (
    gaussian_mean_kl,
    grpo_loss,
    nft_loss,
    nft_optimality,
    old_ema_decay,
    sde_step_logprob,
    subsample_timesteps,
)
from firm.policies.base import Condition, Policy, Role, RolloutSettings
from firm.policies.samplers import per_sample_noise

__all__ = ["NFT", "FlowGRPO", "RLAlgorithm", "TrainBatch"]


@dataclass
class TrainBatch:
    """A micro-batch of rollout samples to learn from (``b`` samples).

    Attributes:
        latents: ``[b, X]`` the final clean latents.
        condition: the samples' condition.
        advantages: ``[b]`` their advantages.
        sigmas: ``[T + 1]`` the rollout's times.
        trajectory: ``[b, T + 1, X]`` the latents visited (SDE rollouts).
        log_probs: ``[b, T]`` each step's log-prob at sampling time (SDE rollouts).
        generators: one CPU generator per sample, for the training noise.
        weights: ``[b]`` 1 for samples to learn from, 0 for invalid or skipped ones (they still run, so that every
            rank makes the same passes, but add nothing to the gradient).
        guidance_scale: the guidance the rollout used.
    """

    latents: Tensor
    condition: Condition
    advantages: Tensor
    sigmas: Tensor
    generators: list[torch.Generator]
    weights: Tensor
    trajectory: Tensor | None = None
    log_probs: Tensor | None = None
    guidance_scale: float = 1.0


@dataclass
class StepLoss:
    """One trained timestep's loss: the weighted *sum* over the micro-batch times the caller's ``scale``, and its
    diagnostics."""

    loss: Tensor
    metrics: dict[str, Tensor]


class RLAlgorithm(ABC):
    """How an RL method samples and learns."""

    #: The adapter that samples rollouts.
    rollout_role: Role = "train"

    def rollout_settings(self, settings: RolloutSettings) -> RolloutSettings:
        """The rollout settings this method needs (given the recipe's)."""
        return settings

    @abstractmethod
    def timesteps(self, num_steps: int, generator: torch.Generator) -> Tensor:
        """Indices (into the rollout's steps) to train on this update."""

    @abstractmethod
    def losses(self, policy: Policy, batch: TrainBatch, steps: Tensor, scale: float) -> Iterator[StepLoss]:
        """One loss per trained timestep in ``steps``: the sum over the micro-batch of each sample's loss times its
        weight, multiplied by ``scale``."""

    def after_update(self, policy: Policy, step: int) -> dict[str, float]:
        """Called after each RL step's optimizer update (the old-policy EMA of DiffusionNFT); returns what to log."""
        return {}


@dataclass
class NFT(RLAlgorithm):
    """DiffusionNFT (FIRM's choice): likelihood-free, any sampler; rollouts come from the ``old`` adapter.

    For each trained timestep ``t`` and fresh noise ``eps``: ``x_t = (1 - t) x0 + t eps``, the target ``eps - x0``,
    the loss :func:`~firm.algorithms.nft_loss` with optimality ``r = clip(A / (2 A_max) + 0.5, 0, 1)``, plus the KL
    to the reference (LoRA off). After each update ``old <- d old + (1 - d) train`` with ``d = min(rate step, cap)``.

    Raises:
        ValueError: for settings outside their ranges.
    """

    beta: float = 1.0
    """Distance of the implicit positive and negative policies from the old one (FIRM: 1.0)."""
    form: Literal["velocity", "x0"] = "x0"
    """``x0``: the released code's loss, self-normalised per sample; ``velocity``: the paper's."""
    kl_weight: float = 1e-4
    """Weight of ``||v_theta - v_ref||^2``; 0 skips the reference forward pass."""
    a_max: float = 5.0
    """Advantage scale of the optimality ``r``."""
    policy_weight: float = 1.0
    """A constant factor on the policy term (the released code's scale is ``a_max / beta``)."""
    timestep_fraction: float = 0.99
    """Share of the sampler's steps trained on per update (a ceiling: 0.99 of 10 steps is all 10)."""
    ema_rate: float = 0.001
    """The old adapter's EMA decay grows by this much per step ..."""
    ema_cap: float = 0.5
    """... up to this cap."""
    rollout_role: Role = "old"
    """The adapter that samples (DiffusionNFT samples with the old policy)."""

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.kl_weight < 0 or self.a_max <= 0 or self.policy_weight < 0:
            raise ValueError("NFT needs beta > 0, kl_weight >= 0, a_max > 0 and policy_weight >= 0")
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ValueError(f"NFT timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        old_ema_decay(0, self.ema_rate, self.ema_cap)  # validates rate and cap

    def timesteps(self, num_steps: int, generator: torch.Generator) -> Tensor:
        return subsample_timesteps(num_steps, self.timestep_fraction, generator=generator)

    def losses(self, policy: Policy, batch: TrainBatch, steps: Tensor, scale: float) -> Iterator[StepLoss]:
        x0 = batch.latents.float()
        r = nft_optimality(batch.advantages, self.a_max)
        for j in steps.tolist():
            t = float(batch.sigmas[j])
            noise = per_sample_noise(x0.shape[1:], batch.generators, x0.device)
            x_t = (1 - t) * x0 + t * noise
            target = noise - x0
            with torch.no_grad():
                with policy.role("old"):
                    v_old = policy.velocity(x_t, t, batch.condition, batch.guidance_scale)
                v_ref = None
                if self.kl_weight > 0:
                    with policy.role("reference"):
                        v_ref = policy.velocity(x_t, t, batch.condition, batch.guidance_scale)
            v_theta = policy.velocity(x_t, t, batch.condition, batch.guidance_scale)
            out = nft_loss(
                v_theta, v_old, target, r, self.beta, form=self.form, x_t_BX=x_t if self.form == "x0" else None,
                t_B=t if self.form == "x0" else None, x0_BX=x0 if self.form == "x0" else None, v_ref_BX=v_ref,
                kl_weight=self.kl_weight, policy_weight=self.policy_weight,
            )  # fmt: skip
            metrics = {"optimality": out.r_mean.detach()}
            metrics["positive"], metrics["negative"] = out.positive.mean(), out.negative.mean()
            if out.kl is not None:
                metrics["kl"] = out.kl
            yield StepLoss((out.per_sample * batch.weights).sum() * scale, metrics)

    def after_update(self, policy: Policy, step: int) -> dict[str, float]:
        decay = old_ema_decay(step, self.ema_rate, self.ema_cap)
        policy.update_old(decay)
        return {"old_decay": decay}


@dataclass
class FlowGRPO(RLAlgorithm):
    """Flow-GRPO: PPO on the SDE sampler's per-step log-probs; rollouts from the trained adapter, on-policy.

    For each trained step ``j`` the trained policy's log-prob of the stored step ``x_j -> x_{j+1}`` against the one
    recorded while sampling gives the ratio; the loss is :func:`~firm.algorithms.grpo_loss` plus
    ``kl_weight * ||mu_theta - mu_ref||^2 / (2 std^2)`` (reference = LoRA off).

    Raises:
        ValueError: for settings outside their ranges.
    """

    clip_range: float = 1e-4
    """PPO's ratio clip ``eps`` (per-element mean log-probs make ratios close to 1)."""
    kl_weight: float = 0.04
    """Weight of the KL to the reference step mean (flow_grpo's SD3.5 setting); 0 skips the reference pass."""
    noise_level: float = 0.7
    """``a`` of the SDE (FIRM and flow_grpo: 0.7 for SD3.5)."""
    timestep_fraction: float = 0.99
    """Share of the sampler's steps trained on per update."""

    def __post_init__(self) -> None:
        if self.clip_range <= 0 or self.kl_weight < 0 or self.noise_level <= 0:
            raise ValueError("FlowGRPO needs clip_range > 0, kl_weight >= 0 and noise_level > 0")
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ValueError(f"FlowGRPO timestep_fraction must be in (0, 1], got {self.timestep_fraction}")

    def rollout_settings(self, settings: RolloutSettings) -> RolloutSettings:
        return dataclasses.replace(settings, sampler="sde", noise_level=self.noise_level)

    def timesteps(self, num_steps: int, generator: torch.Generator) -> Tensor:
        return subsample_timesteps(num_steps, self.timestep_fraction, generator=generator)

    def losses(self, policy: Policy, batch: TrainBatch, steps: Tensor, scale: float) -> Iterator[StepLoss]:
        if batch.trajectory is None or batch.log_probs is None:
            raise ValueError("Flow-GRPO trains on SDE rollouts: the batch needs its trajectory and log-probs")
        for j in steps.tolist():
            t, t_prev = float(batch.sigmas[j]), float(batch.sigmas[j + 1])
            x_t, x_prev = batch.trajectory[:, j], batch.trajectory[:, j + 1]
            v = policy.velocity(x_t, t, batch.condition, batch.guidance_scale)
            step = sde_step_logprob(x_t, v, t, t_prev, self.noise_level, prev_sample_BX=x_prev)
            kl = None
            if self.kl_weight > 0:
                with torch.no_grad(), policy.role("reference"):
                    v_ref = policy.velocity(x_t, t, batch.condition, batch.guidance_scale)
                    mean_ref = sde_step_logprob(x_t, v_ref, t, t_prev, self.noise_level, prev_sample_BX=x_prev).mean
                kl = gaussian_mean_kl(step.mean, mean_ref, step.std)
            # A weight-0 sample has advantage 0 and KL 0: it adds exactly nothing to the mean, which is then a sum.
            out = grpo_loss(
                step.log_prob, batch.log_probs[:, j], batch.advantages * batch.weights, self.clip_range,
                kl_B=None if kl is None else kl * batch.weights, kl_weight=self.kl_weight,
            )  # fmt: skip
            metrics = {
                "policy_loss": out.policy_loss,
                "ratio": out.ratio.mean(),
                "clip_fraction": out.clip_fraction,
                "approx_kl": out.approx_kl,
            }
            if out.kl is not None:
                metrics["kl"] = out.kl
            yield StepLoss(out.loss * len(batch.weights) * scale, metrics)

"""Samplers of a flow policy: one step from ``t`` to ``t_prev`` given the velocity, as small classes.

Rectified-flow convention (PAPER.md section 5): ``x_t = (1 - t) x0 + t eps``, ``t`` runs from 1 (noise) to 0 (data),
the velocity is ``v = eps - x0`` and the data prediction ``x0_hat = x_t - t v``.

- :class:`EulerSampler`: the deterministic ODE step ``x_prev = x_t + (t_prev - t) v``.
- :class:`DPM2Sampler`: DPM-Solver++(2M), a deterministic second-order multistep solver on the data prediction
  (FIRM's rollouts for DiffusionNFT); first order on the first and the last step.
- :class:`SDESampler`: Flow-GRPO's stochastic step (:func:`~firm.algorithms.sde_step_logprob`); it records each
  step's log-probability, which Flow-GRPO needs and DiffusionNFT does not.

Samplers are stateless objects; what a multistep solver carries from one step to the next lives in a
:class:`SamplerState` made per rollout. Noise is drawn per sample from its own generator, so a sample's trajectory
does not depend on the batch it is in.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from firm.algorithms import sde_step_logprob

__all__ = [
    "SAMPLERS",
    "DPM2Sampler",
    "EulerSampler",
    "SDESampler",
    "Sampler",
    "SamplerState",
    "per_sample_noise",
    "sampler_for",
    "shifted_sigmas",
]


def shifted_sigmas(num_steps: int, shift: float = 1.0) -> Tensor:
    """``num_steps + 1`` times from 1 to 0, evenly spaced then shifted: ``s' = shift s / (1 + (shift - 1) s)``.

    A shift above 1 spends more steps at high noise (SD3 uses 3.0).

    Example:
        >>> shifted_sigmas(2, shift=3.0).tolist()
        [1.0, 0.75, 0.0]
    """
    if num_steps < 1 or shift <= 0:
        raise ValueError(f"need num_steps >= 1 and shift > 0, got num_steps={num_steps} shift={shift}")
    s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).to(torch.float32)


def per_sample_noise(
    shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device | str = "cpu"
) -> Tensor:
    """Standard normal noise ``[B, *shape]``, sample ``i`` drawn from ``generators[i]`` (CPU generators, so the same
    seed gives the same noise on any device)."""
    rows = [torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(rows).to(device)


@dataclass
class SamplerState:
    """What a rollout carries between steps: the generators of its samples and a solver's history."""

    generators: list[torch.Generator]
    previous_x0: Tensor | None = None
    previous_h: float | None = None
    log_probs: list[Tensor] = field(default_factory=list)


class Sampler(ABC):
    """One step of a flow sampler.

    Attributes:
        stochastic: steps draw noise and have a log-probability (Flow-GRPO needs this).
    """

    stochastic = False

    @abstractmethod
    def step(self, x_t_BX: Tensor, v_BX: Tensor, t: float, t_prev: float, state: SamplerState) -> Tensor:
        """The sample at ``t_prev`` (float32) from the sample and velocity at ``t``."""


class EulerSampler(Sampler):
    """The deterministic Euler ODE step."""

    def step(self, x_t_BX: Tensor, v_BX: Tensor, t: float, t_prev: float, state: SamplerState) -> Tensor:
        return x_t_BX.float() + (t_prev - t) * v_BX.float()


class DPM2Sampler(Sampler):
    """DPM-Solver++(2M) on the data prediction, with ``alpha = 1 - t``, ``sigma = t``, ``lambda = log(alpha/sigma)``.

    ``x_prev = (sigma_prev / sigma) x_t - alpha_prev (exp(-h) - 1) D`` with ``h = lambda_prev - lambda`` and
    ``D = (1 + 1/(2 r)) x0 - 1/(2 r) x0_last``, ``r = h_last / h``; first order (``D = x0``) on the first step, and
    the last step (to ``t_prev = 0``) returns the data prediction itself.
    """

    def step(self, x_t_BX: Tensor, v_BX: Tensor, t: float, t_prev: float, state: SamplerState) -> Tensor:
        x_t = x_t_BX.float()
        x0 = x_t - t * v_BX.float()
        if t_prev <= 0.0:
            state.previous_x0, state.previous_h = x0, None
            return x0
        if t >= 1.0:
            # lambda(1) is -inf: the first step from pure noise is an Euler step (exact for the data prediction).
            state.previous_x0, state.previous_h = x0, None
            return x_t + (t_prev - t) * v_BX.float()
        lam, lam_prev = math.log((1 - t) / t), math.log((1 - t_prev) / t_prev)
        h = lam_prev - lam
        d = x0
        if state.previous_x0 is not None and state.previous_h is not None:
            r = state.previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state.previous_x0
        state.previous_x0, state.previous_h = x0, h
        return (t_prev / t) * x_t - (1 - t_prev) * math.expm1(-h) * d


class SDESampler(Sampler):
    """Flow-GRPO's SDE step with ``sigma_t = noise_level sqrt(t / (1 - t))``; records each step's log-prob.

    Args:
        noise_level: ``a`` in the formula (0.7 for SD3.5); must be > 0.
    """

    stochastic = True

    def __init__(self, noise_level: float = 0.7) -> None:
        if noise_level <= 0:
            raise ValueError(f"the SDE sampler needs noise_level > 0, got {noise_level}")
        self.noise_level = noise_level

    def step(self, x_t_BX: Tensor, v_BX: Tensor, t: float, t_prev: float, state: SamplerState) -> Tensor:
        noise = per_sample_noise(x_t_BX.shape[1:], state.generators, x_t_BX.device)
        step = sde_step_logprob(x_t_BX, v_BX, t, t_prev, self.noise_level, noise_BX=noise)
        state.log_probs.append(step.log_prob)
        return step.prev_sample


#: Sampler names a rollout setting accepts.
SAMPLERS = ("euler", "dpm2", "sde")


def sampler_for(name: str, noise_level: float = 0.7) -> Sampler:
    """The sampler called ``name`` (one of :data:`SAMPLERS`).

    Raises:
        ValueError: for another name.
    """
    if name == "euler":
        return EulerSampler()
    if name == "dpm2":
        return DPM2Sampler()
    if name == "sde":
        return SDESampler(noise_level)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")

"""Timesteps: which steps of a sampler's schedule to train on, and a timestep broadcast over a latent batch.

Shapes: B samples, K chosen steps, X any number of latent dims (``C, H, W`` for SD3, ``L, C`` for packed latents).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# fraction * num_steps is computed in binary floating point: 0.3 * 10 is 3.0000000000000004, whose ceiling would be 4.
_ROUNDING_SLACK = 1e-9


def num_train_steps(num_steps: int, fraction: float) -> int:
    """How many of ``num_steps`` steps :func:`subsample_timesteps` chooses: ``ceil(fraction * num_steps)``, at least 1.

    The ceiling makes ``fraction`` a floor on the share trained: FIRM's "about 99%" of a 6- or 10-step schedule is
    every step. (The released DiffusionNFT and Flow-GRPO code truncate with ``int(...)``, so 0.99 of 10 steps is 9
    there; pass ``fraction=0.9`` to train the same count.)

    Raises:
        ValueError: if ``num_steps < 1`` or ``fraction`` is not in ``(0, 1]``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"timestep fraction must lie in (0, 1], got {fraction}")
    return max(1, math.ceil(fraction * num_steps - _ROUNDING_SLACK))


def subsample_timesteps(
    num_steps: int, fraction: float, *, generator: torch.Generator | None = None, batch_size: int | None = None
) -> Tensor:
    """Indices of the sampler's steps to train on, chosen without replacement in a random order.

    Args:
        num_steps: the sampler's number of steps; indices run from 0 (the first, noisiest step) to ``num_steps - 1``.
        fraction: the share of steps to train on; the count is :func:`num_train_steps` (a ceiling, at least 1).
        generator: a CPU generator for reproducible choices; the global RNG when None.
        batch_size: when given, each of ``batch_size`` samples gets its own choice and order.

    Returns:
        A long tensor ``[K]``, or ``[B, K]`` when ``batch_size`` is given, on the CPU.

    Raises:
        ValueError: for ``num_steps < 1``, ``fraction`` outside ``(0, 1]`` or ``batch_size < 1``.

    Example:
        >>> subsample_timesteps(10, 0.99, generator=torch.Generator().manual_seed(0)).sort().values
        tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    k = num_train_steps(num_steps, fraction)
    if batch_size is None:
        return torch.randperm(num_steps, generator=generator)[:k]
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 when given, got {batch_size}")
    # One permutation per row: ranks of independent uniforms are uniformly random permutations.
    return torch.rand(batch_size, num_steps, generator=generator).argsort(dim=1)[:, :k]


def broadcast_per_sample(value: float | Tensor, like_BX: Tensor, name: str = "timestep") -> Tensor:
    """A timestep (or any per-sample scalar: one for all samples, or one each) shaped ``[B, 1, ..., 1]``.

    Args:
        value: a Python float, a 0-dim tensor or a ``[B]`` tensor.
        like_BX: the batch it applies to (its device and number of dims are used; its dtype is not).
        name: what ``value`` is, for the error message.

    Returns:
        A float32 tensor (float64 when ``value`` is float64) of shape ``[B or 1, 1, ..., 1]`` on ``like_BX``'s
        device, ready to broadcast over ``like_BX``.

    Raises:
        ValueError: if ``value`` is a tensor that is neither 0-dim nor ``[B]``.
    """
    value_B = torch.as_tensor(value, device=like_BX.device)
    value_B = value_B.to(torch.promote_types(value_B.dtype, torch.float32))
    if value_B.ndim == 0:
        value_B = value_B.reshape(1)
    elif value_B.shape != like_BX.shape[:1]:
        raise ValueError(
            f"{name} must be a float, a 0-dim tensor or one value per sample [{like_BX.shape[0]}], "
            f"got shape {list(value_B.shape)}"
        )
    return value_B.reshape(-1, *([1] * (like_BX.ndim - 1)))

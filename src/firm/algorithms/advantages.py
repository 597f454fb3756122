"""Group-relative advantages (PAPER.md section 5): each reward against the other samples of its prompt.

Shapes: B samples in the gathered batch, G groups (prompts) among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GroupAdvantages:
    """What :func:`group_advantages` computed, with what a training loop should log.

    Attributes:
        advantages: ``[B]`` clipped standardised rewards; exactly 0 for invalid samples, samples of a group whose
            valid rewards are all equal, and (when skipping) samples of an uninformative group.
        valid: ``[B]`` bool, the samples whose rewards entered the statistics (not NaN and not marked invalid).
        uninformative: ``[B]`` bool, samples whose group has reward std below ``min_std`` and mean above
            ``max_mean`` (whether or not they were skipped).
        zero_spread_fraction: share of groups with at least one valid reward whose valid rewards are all equal
            (a group with one valid reward counts); NaN when no group has a valid reward.
        num_invalid: how many samples were left out of the statistics.
        num_groups: how many distinct group ids the batch holds.
        num_uninformative_groups: how many groups were found uninformative.
    """

    advantages: Tensor
    valid: Tensor
    uninformative: Tensor
    zero_spread_fraction: float
    num_invalid: int
    num_groups: int
    num_uninformative_groups: int


def _check_inputs(rewards_B: Tensor, group_ids_B: Tensor, valid_B: Tensor | None) -> None:
    if rewards_B.ndim != 1 or rewards_B.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-D tensor [B], got shape {list(rewards_B.shape)}")
    if not rewards_B.is_floating_point():
        raise ValueError(f"rewards must be floating point (NaN marks an invalid reward), got {rewards_B.dtype}")
    if rewards_B.isinf().any():
        raise ValueError("rewards must be finite or NaN (invalid); got an infinite reward")
    if group_ids_B.shape != rewards_B.shape:
        raise ValueError(
            f"group_ids must have one id per reward, shape {list(rewards_B.shape)}, got {list(group_ids_B.shape)}"
        )
    if group_ids_B.is_floating_point() or group_ids_B.is_complex() or group_ids_B.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids_B.dtype}")
    if valid_B is not None and (valid_B.dtype != torch.bool or valid_B.shape != rewards_B.shape):
        raise ValueError(
            f"valid must be a bool tensor of shape {list(rewards_B.shape)}, got {valid_B.dtype} {list(valid_B.shape)}"
        )


def group_advantages(
    rewards_B: Tensor,
    group_ids_B: Tensor,
    *,
    global_std: bool = False,
    clip: float = 5.0,
    eps: float = 1e-4,
    valid_B: Tensor | None = None,
    skip_uninformative: bool = False,
    min_std: float = 0.05,
    max_mean: float = 0.9,
) -> GroupAdvantages:
    """``A = clip((R - mean_group) / (std + eps), -clip, clip)`` with invalid rewards left out of every statistic.

    Standard deviations are *population* ones (``unbiased=False``, dividing by the count, as NumPy's ``np.std``
    used by Flow-GRPO and DiffusionNFT does): a group of two rewards 0 and 1 has std 0.5, not 0.707.
    ``global_std`` divides by the std of all valid rewards of the batch about their overall mean (not a pooled
    within-group std); the mean subtracted is still the group's. A group whose valid rewards are all equal has
    advantage exactly 0 in both settings, so a group with a single valid reward teaches nothing.

    Gather groups from all ranks before calling: a group split across ranks would be standardised in pieces.

    Args:
        rewards_B: rewards, NaN where the critic's verdict was invalid.
        group_ids_B: any integer id per sample naming its prompt; ids need not be contiguous or sorted.
        global_std: divide by the batch's std instead of the group's (FIRM used it for SD3.5).
        clip: advantages are clipped to ``[-clip, clip]``.
        eps: added to the std before dividing.
        valid_B: optional bool mask; False leaves a sample out exactly as a NaN reward does.
        skip_uninformative: give advantage 0 to samples of uninformative groups (std < ``min_std`` and
            mean > ``max_mean``: every sample already good, nothing to learn).
        min_std: the group std below which a group can be uninformative (the group's std in both settings).
        max_mean: the group mean above which a group can be uninformative.

    Returns:
        A :class:`GroupAdvantages`; ``advantages`` has ``rewards_B``'s dtype, promoted to at least float32.

    Raises:
        ValueError: for a shape or dtype mismatch, an infinite reward, or ``clip <= 0`` / ``eps < 0``.

    Example:
        >>> out = group_advantages(torch.tensor([0.0, 1.0, 0.5, 0.5]), torch.tensor([7, 7, 3, 3]))
        >>> out.advantages, out.zero_spread_fraction
        (tensor([-0.9998,  0.9998,  0.0000,  0.0000]), 0.5)
    """
    _check_inputs(rewards_B, group_ids_B, valid_B)
    if clip <= 0 or eps < 0:
        raise ValueError(f"advantage clip must be > 0 and eps >= 0, got clip={clip} eps={eps}")
    dtype = torch.promote_types(rewards_B.dtype, torch.float32)
    rewards_B = rewards_B.to(dtype)
    ok_B = ~rewards_B.isnan() if valid_B is None else valid_B & ~rewards_B.isnan()
    _, group_B = torch.unique(group_ids_B, return_inverse=True)
    num_groups = int(group_B.max()) + 1
    r_B = torch.where(ok_B, rewards_B, torch.zeros_like(rewards_B))

    def group_sum(values_B: Tensor) -> Tensor:
        return torch.zeros(num_groups, dtype=dtype, device=rewards_B.device).index_add_(0, group_B, values_B)

    count_G = group_sum(ok_B.to(dtype))
    mean_G = group_sum(r_B) / count_G.clamp_min(1)
    deviation_B = torch.where(ok_B, rewards_B - mean_G[group_B], torch.zeros_like(rewards_B))
    std_G = (group_sum(deviation_B**2) / count_G.clamp_min(1)).sqrt()
    # Spread from max - min, which is exactly 0 for equal rewards where a computed std may be 1e-9.
    high_G = torch.full_like(count_G, -torch.inf).scatter_reduce(0, group_B, r_B.masked_fill(~ok_B, -torch.inf), "amax")
    low_G = torch.full_like(count_G, torch.inf).scatter_reduce(0, group_B, r_B.masked_fill(~ok_B, torch.inf), "amin")
    has_valid_G = count_G > 0
    zero_spread_G = has_valid_G & (high_G == low_G)

    if global_std:
        valid_rewards = rewards_B[ok_B]
        scale = valid_rewards.std(unbiased=False) if valid_rewards.numel() else rewards_B.new_tensor(0.0)
        denominator_B = scale + eps
    else:
        denominator_B = std_G[group_B] + eps
    advantages_B = (deviation_B / denominator_B).clamp(-clip, clip)

    uninformative_G = has_valid_G & (std_G < min_std) & (mean_G > max_mean)
    uninformative_B = uninformative_G[group_B]
    keep_B = ok_B & ~zero_spread_G[group_B]
    if skip_uninformative:
        keep_B &= ~uninformative_B
    advantages_B = torch.where(keep_B, advantages_B, torch.zeros_like(advantages_B))

    groups_with_valid = int(has_valid_G.sum())
    return GroupAdvantages(
        advantages=advantages_B,
        valid=ok_B,
        uninformative=uninformative_B,
        zero_spread_fraction=int(zero_spread_G.sum()) / groups_with_valid if groups_with_valid else float("nan"),
        num_invalid=int((~ok_B).sum()),
        num_groups=num_groups,
        num_uninformative_groups=int(uninformative_G.sum()),
    )

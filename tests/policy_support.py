"""Helpers for tests of RL policies."""

from __future__ import annotations

import torch

from firm.policies import Policy


def perturb_trained(policy: Policy, seed: int = 0) -> None:
    """Move the trained adapter away from its zero start, so that it changes the policy's velocities."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in policy.adapter_parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))

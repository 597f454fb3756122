"""What every policy family shares, on each family's tiny real pipeline: the LoRA roles (trained, old, reference) and
SDE log-probs that recompute exactly on-policy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from policy_support import perturb_trained

from firm.algorithms import sde_step_logprob
from firm.policies import Policy, QwenImageGenerator, RolloutSettings, SD3Generator, TinyQwenImage, TinySD3

SMALL = RolloutSettings(height=32, width=32, num_steps=4, sampler="euler")
FAMILIES: dict[str, Callable[[int], Policy]] = {
    "sd3": lambda seed: SD3Generator(tiny=TinySD3(seed=seed)),
    "qwen_image": lambda seed: QwenImageGenerator(tiny=TinyQwenImage(seed=seed)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_roles_answer_as_trained_old_and_reference(family: str) -> None:
    policy = FAMILIES[family](1)
    x, t = torch.randn(2, 4, 4, 4), torch.tensor(0.6)
    condition = policy.encode(["a red circle", "blue"], None, SMALL)
    with torch.no_grad():
        base = policy.velocity(x, t, condition)
    policy.add_adapters()
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n and ".trained." in n for n in trainable)
    targeted = {n.split(".lora_")[0].rsplit(".attn.", 1)[1] for n in trainable}
    assert targeted == set(type(policy).lora_targets)
    perturb_trained(policy)
    with torch.no_grad():
        trained = policy.velocity(x, t, condition)
        with policy.role("old"):
            old = policy.velocity(x, t, condition)
        with policy.role("reference"):
            reference = policy.velocity(x, t, condition)
    torch.testing.assert_close(old, base)  # old started as the zero-initialised adapter: the base model
    torch.testing.assert_close(reference, base)
    assert (trained - base).abs().max() > 1e-4
    # Switching roles leaves exactly the trained adapter trainable.
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable
    policy.update_old(0.0)  # old <- trained
    with torch.no_grad(), policy.role("old"):
        torch.testing.assert_close(policy.velocity(x, t, condition), trained)


@pytest.mark.parametrize("family", FAMILIES)
def test_sde_rollout_log_probs_recompute_exactly(family: str) -> None:
    policy = FAMILIES[family](0)
    sde = RolloutSettings(height=32, width=32, num_steps=3, sampler="sde", noise_level=0.7)
    rollout = policy.sample(["a red circle", "blue"], sde, group_size=2, seeds=[1, 2, 3, 4])
    assert rollout.trajectory is not None and rollout.log_probs is not None
    assert rollout.log_probs.shape == (4, 3) and rollout.trajectory.shape[:2] == (4, 4)
    with torch.no_grad():
        for j in range(3):
            t, t_prev = float(rollout.sigmas[j]), float(rollout.sigmas[j + 1])
            x_t = rollout.trajectory[:, j]
            v = policy.velocity(x_t, t, rollout.condition)
            step = sde_step_logprob(x_t, v, t, t_prev, 0.7, prev_sample_BX=rollout.trajectory[:, j + 1])
            ratio = (step.log_prob - rollout.log_probs[:, j]).exp()
            assert torch.equal(ratio, torch.ones(4)), ratio

"""The SD3 policy on a tiny real StableDiffusion3Pipeline: sampling, seeds, samplers and the LoRA export that
diffusers loads (LoRA roles and log-probs: test_policies_roles.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from policy_support import perturb_trained

from firm.policies import RolloutSettings, SD3Generator, TinySD3, build_tiny_sd3
from firm.policies.export import LORA_FILE, write_lora
from firm.policies.samplers import DPM2Sampler, EulerSampler, SamplerState, shifted_sigmas

SMALL = RolloutSettings(height=32, width=32, num_steps=4, sampler="euler")


@pytest.fixture(scope="module")
def policy() -> SD3Generator:
    return SD3Generator(tiny=TinySD3())


def test_same_seeds_same_images_whatever_the_batch(policy: SD3Generator) -> None:
    both = policy.sample(["a red circle", "two blue squares"], SMALL, group_size=2, seeds=[5, 6, 7, 8])
    alone = policy.sample(["two blue squares"], SMALL, group_size=2, seeds=[7, 8])
    assert both.images.shape == (4, 3, 32, 32)
    assert both.group_index.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(alone.latents, both.latents[2:], atol=1e-5, rtol=0)
    other = policy.sample(["two blue squares"], SMALL, group_size=2, seeds=[9, 10])
    assert (other.latents - alone.latents).abs().max() > 0.1


def test_sampling_in_chunks_gives_the_same_rollout(policy: SD3Generator) -> None:
    sde = RolloutSettings(height=32, width=32, num_steps=3, sampler="sde")
    whole = policy.sample(["a red circle", "blue"], sde, group_size=3, seeds=range(6))
    chunked = policy.sample(["a red circle", "blue"], sde, group_size=3, seeds=range(6), batch_size=4)
    assert whole.log_probs is not None and chunked.log_probs is not None and chunked.trajectory is not None
    torch.testing.assert_close(chunked.images, whole.images, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.log_probs, whole.log_probs, atol=1e-4, rtol=0)
    assert chunked.trajectory.shape == (6, 4, 4, 8, 8)  # samples, times visited, latent channels, height, width


def test_oracle_velocity_lands_on_the_data_with_both_deterministic_samplers() -> None:
    # With the exact velocity of a straight path (v = eps - x0 everywhere on it) every step stays on the path.
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigmas = shifted_sigmas(6, shift=3.0)
    for sampler in (EulerSampler(), DPM2Sampler()):
        state = SamplerState([torch.Generator() for _ in range(3)])
        x = eps.clone()
        for t, t_prev in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
            x = sampler.step(x, eps - x0, t, t_prev, state)
        torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


def test_bad_sizes_and_seed_counts_are_refused(policy: SD3Generator) -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        policy.sample(["x"], RolloutSettings(height=36, width=32, num_steps=2))
    with pytest.raises(ValueError, match="one seed per sample"):
        policy.sample(["x"], SMALL, group_size=2, seeds=[1])
    with pytest.raises(ValueError, match="sampler"):
        RolloutSettings(sampler="heun")


def test_a_saved_pipeline_folder_loads_as_the_same_policy(tmp_path: Path, policy: SD3Generator) -> None:
    build_tiny_sd3(TinySD3()).save_pretrained(tmp_path / "tiny-sd3")
    loaded = SD3Generator(model=str(tmp_path / "tiny-sd3"))
    a = policy.sample(["a red circle"], SMALL, seeds=[3])
    b = loaded.sample(["a red circle"], SMALL, seeds=[3])
    torch.testing.assert_close(a.images, b.images)


def test_exported_lora_gives_diffusers_the_same_images(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    policy = SD3Generator(tiny=TinySD3(seed=2))
    policy.add_adapters()
    perturb_trained(policy, seed=3)
    state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    out = write_lora(state, policy.export_meta(), tmp_path / "lora")
    assert (out / LORA_FILE).is_file()

    pipeline = build_tiny_sd3(TinySD3(seed=2))
    pipeline.load_lora_weights(out)
    seeds = [11, 12]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    images = pipeline(
        ["a red circle", "a red circle"], height=32, width=32, num_inference_steps=4, guidance_scale=1.0,
        generator=generators, output_type="pt", max_sequence_length=policy.max_sequence_length,
    ).images  # fmt: skip
    ours = policy.sample(["a red circle"], SMALL, group_size=2, seeds=seeds)
    torch.testing.assert_close(images.float(), ours.images, atol=2e-3, rtol=0)
    base = policy.sample(["a red circle"], SMALL, group_size=2, seeds=seeds, role="reference")
    assert (ours.images - base.images).abs().max() > 1e-3  # the adapter does change the images

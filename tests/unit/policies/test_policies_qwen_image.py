"""The Qwen-Image policy on a tiny real QwenImagePipeline: sampling, seeds, the pipeline's schedule, true CFG and the
LoRA export that diffusers loads (LoRA roles and log-probs: test_policies_roles.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from policy_support import perturb_trained

from firm.policies import QwenImageGenerator, RolloutSettings, TinyQwenImage, build_tiny_qwen_image
from firm.policies.export import LORA_FILE, write_lora
from firm.policies.qwen_image import pack, unpack

SMALL = RolloutSettings(height=32, width=32, num_steps=4, sampler="euler")


@pytest.fixture(scope="module")
def policy() -> QwenImageGenerator:
    return QwenImageGenerator(tiny=TinyQwenImage())


def test_packing_matches_the_pipeline_and_round_trips() -> None:
    from diffusers import QwenImagePipeline

    latents = torch.randn(2, 4, 6, 8)
    tokens = pack(latents)
    assert tokens.shape == (2, 12, 16)
    torch.testing.assert_close(tokens, QwenImagePipeline._pack_latents(latents, 2, 4, 6, 8), rtol=0, atol=0)
    # The pipeline's unpack takes pixel sizes (latent size x its VAE factor) and adds the frame dim.
    expected = QwenImagePipeline._unpack_latents(tokens, 6 * 8, 8 * 8, 8)[:, :, 0]
    torch.testing.assert_close(unpack(tokens, 6, 8), expected, rtol=0, atol=0)
    torch.testing.assert_close(unpack(tokens, 6, 8), latents, rtol=0, atol=0)


def test_same_seeds_same_images_whatever_the_batch(policy: QwenImageGenerator) -> None:
    both = policy.sample(["a red circle", "two blue squares"], SMALL, group_size=2, seeds=[5, 6, 7, 8])
    alone = policy.sample(["two blue squares"], SMALL, group_size=2, seeds=[7, 8])
    assert both.images.shape == (4, 3, 32, 32) and both.latents.shape == (4, 4, 8, 8)
    assert both.group_index.tolist() == [0, 0, 1, 1]
    # The two prompts differ in length, so the batch pads one of them and masks its padding.
    assert not bool(both.condition.tensors["prompt_embeds_mask"].all())
    torch.testing.assert_close(alone.latents, both.latents[2:], atol=1e-5, rtol=0)
    other = policy.sample(["two blue squares"], SMALL, group_size=2, seeds=[9, 10])
    assert (other.latents - alone.latents).abs().max() > 0.1


def test_the_schedule_is_the_pipelines_dynamic_shift(policy: QwenImageGenerator) -> None:
    shape = policy.latent_shape(64, 32)
    assert shape == (4, 16, 8)
    sigmas = policy.sigmas(SMALL, shape)
    scheduler = policy.pipeline.scheduler
    # 32 image tokens: mu = 0.5 + (32 - 256) * 0.4 / 7936, an exponential shift; the last step ends at 0.02.
    mu = 0.5 + (32 - 256) * (0.9 - 0.5) / (8192 - 256)
    t = torch.linspace(1.0, 0.25, 4, dtype=torch.float64)
    shifted = torch.exp(torch.tensor(mu)) / (torch.exp(torch.tensor(mu)) + (1 / t - 1))
    stretched = 1 - (1 - shifted) / ((1 - shifted[-1]) / (1 - 0.02))
    torch.testing.assert_close(sigmas[:-1], stretched.float())
    assert sigmas[-1] == 0 and abs(float(sigmas[-2]) - scheduler.config.shift_terminal) < 1e-6
    assert len(policy.sigmas(RolloutSettings(num_steps=4, shift=3.0), shape)) == 5


def test_bad_sizes_sources_and_lengths_are_refused(policy: QwenImageGenerator) -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        policy.sample(["x"], RolloutSettings(height=36, width=32, num_steps=2))
    with pytest.raises(ValueError, match="no source images"):
        policy.encode(["x"], [], SMALL)
    with pytest.raises(ValueError, match="max_sequence_length"):
        QwenImageGenerator(tiny=TinyQwenImage(), max_sequence_length=2048)


def test_true_cfg_keeps_each_tokens_conditional_norm(policy: QwenImageGenerator) -> None:
    guided = RolloutSettings(height=32, width=32, num_steps=2, guidance_scale=4.0, negative_prompt="blurry")
    condition = policy.encode(["a red circle"], None, guided)
    assert condition.negative is not None
    x, t = torch.randn(1, 4, 8, 8), 0.7
    with torch.no_grad():
        v = policy.velocity(x, t, condition, 4.0)
        v_cond = policy.velocity(x, t, condition)
    torch.testing.assert_close(pack(v).norm(dim=-1), pack(v_cond).norm(dim=-1))
    assert (v - v_cond).abs().max() > 1e-3
    with pytest.raises(ValueError, match="negative prompt"):
        policy.velocity(x, t, policy.encode(["a red circle"], None, SMALL), 4.0)


def test_the_colour_decoder_shows_latent_channels_as_colours(policy: QwenImageGenerator) -> None:
    latents = torch.zeros(3, 4, 8, 8)
    for colour in range(3):
        latents[colour, colour] = 2.0
    with torch.no_grad():
        means = policy.decode(latents).mean(dim=(2, 3))
    assert torch.equal(means.argmax(dim=1), torch.arange(3))
    assert float(means.diagonal().min()) > 0.9 and float(means.max(dim=1).values.min() - means.median()) > 0.5


@pytest.mark.parametrize("prompts", [["a red circle", "a red circle"], ["a red circle", "two blue squares"]])
def test_exported_lora_gives_diffusers_the_same_images(tmp_path: Path, prompts: list[str]) -> None:
    pytest.importorskip("peft")
    policy = QwenImageGenerator(tiny=TinyQwenImage(seed=2))
    policy.add_adapters()
    perturb_trained(policy, seed=3)
    state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    meta = policy.export_meta()
    assert meta["pipeline"] == "diffusers.pipelines.qwenimage.pipeline_qwenimage.QwenImagePipeline"
    out = write_lora(state, meta, tmp_path / "lora")
    assert (out / LORA_FILE).is_file()

    pipeline = build_tiny_qwen_image(TinyQwenImage(seed=2))
    pipeline.load_lora_weights(out)
    seeds = [11, 12]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    images = pipeline(
        prompts, height=32, width=32, num_inference_steps=4, true_cfg_scale=1.0, generator=generators,
        output_type="pt", max_sequence_length=policy.max_sequence_length,
    ).images  # fmt: skip
    ours = policy.sample(prompts, SMALL, seeds=seeds)
    # Bit-identical on CPU today (same noise, times, masks and arithmetic); the tolerance only absorbs a future
    # ulp-level change in diffusers' scheduler.
    torch.testing.assert_close(images.float(), ours.images, atol=1e-6, rtol=0)
    base = policy.sample(prompts, SMALL, seeds=seeds, role="reference")
    assert (ours.images - base.images).abs().max() > 1e-3  # the adapter does change the images


def test_guided_sampling_is_the_pipelines_true_cfg(policy: QwenImageGenerator) -> None:
    guided = RolloutSettings(height=32, width=32, num_steps=3, sampler="euler", guidance_scale=4.0, negative_prompt=" ")
    ours = policy.sample(["a red circle"], guided, seeds=[4])
    images = policy.pipeline(
        ["a red circle"], negative_prompt=[" "], true_cfg_scale=4.0, height=32, width=32, num_inference_steps=3,
        generator=[torch.Generator().manual_seed(4)], output_type="pt",
    ).images  # fmt: skip
    torch.testing.assert_close(images.float(), ours.images, atol=1e-6, rtol=0)
    unguided = policy.sample(["a red circle"], replace(guided, guidance_scale=1.0), seeds=[4])
    assert (ours.images - unguided.images).abs().max() > 1e-3


def test_a_saved_pipeline_folder_loads_as_the_same_policy(tmp_path: Path, policy: QwenImageGenerator) -> None:
    build_tiny_qwen_image(TinyQwenImage()).save_pretrained(tmp_path / "tiny-qwen-image")
    loaded = QwenImageGenerator(model=str(tmp_path / "tiny-qwen-image"))
    assert loaded.pipeline.prompt_template_encode_start_idx == policy.pipeline.prompt_template_encode_start_idx
    a = policy.sample(["a red circle"], SMALL, seeds=[3])
    b = loaded.sample(["a red circle"], SMALL, seeds=[3])
    torch.testing.assert_close(a.images, b.images)

"""Stable Diffusion 3 / 3.5 as an RL policy (FIRM's generation policy is SD3.5-Medium).

The components are diffusers' own (``StableDiffusion3Pipeline``): three text encoders (two CLIP, one T5, the T5 may
be absent), the MM-DiT transformer that gets LoRA, the VAE, and the flow-matching scheduler whose shifted times the
rollouts follow.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import Tensor

from firm.policies.base import Condition, Policy, RolloutSettings
from firm.policies.tiny import TinySD3, build_tiny_sd3

__all__ = ["SD3Generator"]

log = logging.getLogger(__name__)
_PIPELINE_LOGGER = "diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3"


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence a library logger below ERROR within the block (diffusers warns about every truncated prompt, every
    step of an RL run; the policy warns once instead)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class SD3Generator(Policy):
    """An SD3 / SD3.5 text-to-image policy.

    Args:
        model: a hub id or local folder in diffusers format (``stabilityai/stable-diffusion-3.5-medium``).
        tiny: build a tiny random model from configs instead (tests, debug recipes); ``model`` is then ignored.
        dtype: the weights' dtype (``bfloat16`` on GPUs; LoRA weights stay float32).
        revision: the hub revision of ``model``.
        max_sequence_length: T5 tokens per prompt; None for SD3's 256, or fewer when the T5 tokenizer is shorter
            (tiny models).
        pipeline: an already built ``StableDiffusion3Pipeline`` (Python callers); overrides ``model`` and ``tiny``.
    """

    tiny_settings: ClassVar[type | None] = TinySD3

    def __init__(
        self,
        model: str = "stabilityai/stable-diffusion-3.5-medium",
        tiny: TinySD3 | None = None,
        dtype: str = "float32",
        revision: str | None = None,
        max_sequence_length: int | None = None,
        pipeline: Any = None,
    ) -> None:
        super().__init__()
        pipeline = self._pipeline_from(
            pipeline, model=model, tiny=tiny, dtype=dtype, revision=revision, build_tiny=build_tiny_sd3,
            pipeline_class="StableDiffusion3Pipeline",
        )  # fmt: skip
        if max_sequence_length is None:
            t5_tokenizer = pipeline.tokenizer_3
            max_sequence_length = min(256, t5_tokenizer.model_max_length) if t5_tokenizer is not None else 256
        self.max_sequence_length = max_sequence_length
        # Modules as attributes, so that Lightning moves them and counts them; the pipeline object is kept (outside
        # the module tree) for its prompt encoding.
        self.transformer = pipeline.transformer
        self.vae = pipeline.vae
        self.text_encoders = torch.nn.ModuleList(
            [e for e in (pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3) if e is not None]
        )
        self.requires_grad_(False)
        self.eval()
        self._pipeline = pipeline

    def encode(
        self, prompts: Sequence[str], sources: Sequence[Image.Image] | None, settings: RolloutSettings
    ) -> Condition:
        if sources is not None:
            raise ValueError("SD3Generator is a text-to-image policy; it takes no source images")
        guided = settings.guidance_scale > 1.0
        self._check_lengths(prompts)
        with torch.no_grad(), _quiet(_PIPELINE_LOGGER):
            embeds, negative, pooled, negative_pooled = self._pipeline.encode_prompt(
                prompt=list(prompts),
                prompt_2=None,
                prompt_3=None,
                device=self.device,
                do_classifier_free_guidance=guided,
                negative_prompt=settings.negative_prompt if guided else None,
                max_sequence_length=self.max_sequence_length,
            )
        tensors = {"prompt_embeds": embeds, "pooled_projections": pooled}
        negatives = {"prompt_embeds": negative, "pooled_projections": negative_pooled} if guided else None
        return Condition(tensors, negatives)

    def _check_lengths(self, prompts: Sequence[str]) -> None:
        if self._warned_truncation:
            return
        limits = [(self._pipeline.tokenizer, self._pipeline.tokenizer_max_length, "CLIP")]
        if self._pipeline.tokenizer_3 is not None:
            limits.append((self._pipeline.tokenizer_3, self.max_sequence_length, "T5"))
        for tokenizer, limit, name in limits:
            longest = max(len(tokenizer(p).input_ids) for p in prompts)
            if longest > limit:
                log.warning(
                    "prompts longer than %d %s tokens are cut (one here has %d); warned once per policy",
                    limit, name, longest,
                )  # fmt: skip
                self._warned_truncation = True
                return

    def transformer_velocity(self, x_t_BX: Tensor, t_B: Tensor, tensors: Mapping[str, Tensor]) -> Tensor:
        transformer: Any = self.transformer
        dtype = transformer.dtype
        out: Tensor = transformer(
            hidden_states=x_t_BX.to(dtype),
            timestep=(t_B * 1000).to(dtype),
            encoder_hidden_states=tensors["prompt_embeds"].to(dtype),
            pooled_projections=tensors["pooled_projections"].to(dtype),
            return_dict=False,
        )[0]
        return out

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        config: Any = self.transformer.config
        stride = self._pipeline.vae_scale_factor * config.patch_size
        if height % stride or width % stride:
            raise ValueError(f"SD3 images must be multiples of {stride} pixels on each side, got {width}x{height}")
        factor = self._pipeline.vae_scale_factor
        return (int(config.in_channels), height // factor, width // factor)

    def sigmas(self, settings: RolloutSettings, latent_shape: tuple[int, ...]) -> Tensor:
        if settings.shift is not None:
            return super().sigmas(settings, latent_shape)
        scheduler = type(self._pipeline.scheduler).from_config(self._pipeline.scheduler.config)
        scheduler.set_timesteps(settings.num_steps, device="cpu")
        return scheduler.sigmas.to(torch.float32)

    def decode(self, latents_BX: Tensor) -> Tensor:
        vae: Any = self.vae
        config = vae.config
        latents = latents_BX / config.scaling_factor + (config.shift_factor or 0.0)
        image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)

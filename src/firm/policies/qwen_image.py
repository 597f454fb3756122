"""Qwen-Image as an RL policy (FIRM's release trains it too; Qwen-Image-Edit shares its transformer).

The components are diffusers' own (``QwenImagePipeline``): the Qwen2.5-VL text encoder (its last hidden states under
a chat template, the template's system prefix dropped), the MM-DiT transformer that gets LoRA, the video-style VAE
(``AutoencoderKLQwenImage``, one frame) and the flow-matching scheduler with a resolution-dependent shift.

The policy's latent ``X`` is the VAE's unpacked ``[C, h, w]`` (one frame): the initial noise is then drawn exactly as
the pipeline draws it per generator, and :meth:`QwenImageGenerator.decode` needs no image size. The transformer sees
2x2 patches packed into tokens, ``[L, 4C]`` with ``L = h w / 4``; :func:`pack` and :func:`unpack` convert.

Shapes: ``B`` samples, ``C`` latent channels, ``h, w`` latent height and width, ``L`` image tokens, ``S`` text tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from firm.policies.base import Condition, Policy, RolloutSettings
from firm.policies.tiny import TinyQwenImage, build_tiny_qwen_image

__all__ = ["QwenImageGenerator", "pack", "unpack"]

log = logging.getLogger(__name__)
#: The pipeline refuses longer text (``check_inputs``).
_MAX_TEXT_TOKENS = 1024


def pack(latents_BChw: Tensor) -> Tensor:
    """``[B, C, h, w]`` latents as ``[B, h w / 4, 4 C]`` tokens of 2x2 patches (``QwenImagePipeline._pack_latents``)."""
    b, c, h, w = latents_BChw.shape
    x = latents_BChw.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens_BLD: Tensor, h: int, w: int) -> Tensor:
    """The inverse of :func:`pack`: ``[B, h w / 4, 4 C]`` tokens as ``[B, C, h, w]`` latents."""
    b, _, d = tokens_BLD.shape
    x = tokens_BLD.reshape(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


class QwenImageGenerator(Policy):
    """A Qwen-Image text-to-image policy.

    Classifier-free guidance (``guidance_scale > 1``) is Qwen-Image's ``true_cfg_scale``: the guided velocity of
    each image token is rescaled to the norm of the conditional one, as the pipeline does.

    Args:
        model: a hub id or local folder in diffusers format (``Qwen/Qwen-Image``).
        tiny: build a tiny random model from configs instead (tests, debug recipes); ``model`` is then ignored.
        dtype: the weights' dtype (``bfloat16`` on GPUs; LoRA weights stay float32).
        revision: the hub revision of ``model``.
        max_sequence_length: text tokens per prompt after the template's system prefix (the pipeline's 512 by
            default, at most 1024); longer prompts are cut.
        pipeline: an already built ``QwenImagePipeline`` (Python callers); overrides ``model`` and ``tiny``.

    Raises:
        ValueError: for an unknown dtype or a ``max_sequence_length`` outside 1..1024.
    """

    tiny_settings: ClassVar[type | None] = TinyQwenImage

    def __init__(
        self,
        model: str = "Qwen/Qwen-Image",
        tiny: TinyQwenImage | None = None,
        dtype: str = "float32",
        revision: str | None = None,
        max_sequence_length: int = 512,
        pipeline: Any = None,
    ) -> None:
        super().__init__()
        if not 1 <= max_sequence_length <= _MAX_TEXT_TOKENS:
            raise ValueError(f"max_sequence_length must be in 1..{_MAX_TEXT_TOKENS}, got {max_sequence_length}")
        pipeline = self._pipeline_from(
            pipeline, model=model, tiny=tiny, dtype=dtype, revision=revision, build_tiny=build_tiny_qwen_image,
            pipeline_class="QwenImagePipeline",
        )  # fmt: skip
        self.max_sequence_length = max_sequence_length
        # Modules as attributes, so that Lightning moves them and counts them; the pipeline object is kept (outside
        # the module tree) for its prompt encoding.
        self.transformer = pipeline.transformer
        self.vae = pipeline.vae
        self.text_encoder = pipeline.text_encoder
        self.requires_grad_(False)
        self.eval()
        self._pipeline = pipeline

    # -- conditioning -------------------------------------------------------------------------------------------

    def encode(
        self, prompts: Sequence[str], sources: Sequence[Image.Image] | None, settings: RolloutSettings
    ) -> Condition:
        if sources is not None:
            raise ValueError("QwenImageGenerator is a text-to-image policy; it takes no source images")
        self._check_lengths(prompts)
        tensors = self._encode_texts(list(prompts))
        negative = None
        if settings.guidance_scale > 1.0:
            negative = self._encode_texts([settings.negative_prompt] * len(prompts))
        return Condition(tensors, negative)

    def _encode_texts(self, texts: list[str]) -> dict[str, Tensor]:
        with torch.no_grad():
            embeds_BSD, mask_BS = self._pipeline.encode_prompt(
                prompt=texts, device=self.device, max_sequence_length=self.max_sequence_length
            )
        if mask_BS is None:  # the pipeline drops a mask without padding; a Condition keeps one per sample
            mask_BS = torch.ones(embeds_BSD.shape[:2], dtype=torch.long, device=embeds_BSD.device)
        return {"prompt_embeds": embeds_BSD, "prompt_embeds_mask": mask_BS}

    def _check_lengths(self, prompts: Sequence[str]) -> None:
        if self._warned_truncation:
            return
        pipeline = self._pipeline
        template, dropped = pipeline.prompt_template_encode, pipeline.prompt_template_encode_start_idx
        longest = max(len(pipeline.tokenizer(template.format(p)).input_ids) - dropped for p in prompts)
        if longest > self.max_sequence_length:
            log.warning(
                "prompts longer than %d tokens (template included) are cut (one here has %d); warned once per policy",
                self.max_sequence_length, longest,
            )  # fmt: skip
            self._warned_truncation = True

    # -- the transformer ----------------------------------------------------------------------------------------

    def transformer_velocity(self, x_t_BX: Tensor, t_B: Tensor, tensors: Mapping[str, Tensor]) -> Tensor:
        transformer: Any = self.transformer
        dtype = transformer.dtype
        b, _, h, w = x_t_BX.shape
        mask_BS = tensors["prompt_embeds_mask"]
        out_BLD: Tensor = transformer(
            hidden_states=pack(x_t_BX).to(dtype),
            # The pipeline passes scheduler timesteps / 1000, i.e. the sigma itself (up to float32 rounding).
            timestep=t_B.to(dtype),
            encoder_hidden_states=tensors["prompt_embeds"].to(dtype),
            # Without padding the pipeline passes no mask, which lets attention take its unmasked kernels.
            encoder_hidden_states_mask=None if bool(mask_BS.all()) else mask_BS,
            img_shapes=[[(1, h // 2, w // 2)]] * b,
            return_dict=False,
        )[0]
        return unpack(out_BLD, h, w)

    def velocity(
        self, x_t_BX: Tensor, t_B: Tensor | float, condition: Condition, guidance_scale: float = 1.0
    ) -> Tensor:
        """The velocity (float32) at ``(x_t, t)``; with ``guidance_scale > 1`` Qwen-Image's true CFG, whose guided
        velocity keeps each image token's conditional norm.

        Raises:
            ValueError: when guidance is asked of a condition encoded without its negative prompt.
        """
        if guidance_scale <= 1.0:
            return super().velocity(x_t_BX, t_B, condition)
        if condition.negative is None:
            raise ValueError("guidance_scale > 1 needs a condition encoded with guidance (its negative prompt)")
        t = torch.as_tensor(t_B, dtype=torch.float32, device=x_t_BX.device).expand(x_t_BX.shape[0])
        v_BLD = pack(self.transformer_velocity(x_t_BX, t, condition.tensors).float())
        v_uncond_BLD = pack(self.transformer_velocity(x_t_BX, t, condition.negative).float())
        guided_BLD = v_uncond_BLD + guidance_scale * (v_BLD - v_uncond_BLD)
        guided_BLD = guided_BLD * (v_BLD.norm(dim=-1, keepdim=True) / guided_BLD.norm(dim=-1, keepdim=True))
        return unpack(guided_BLD, x_t_BX.shape[2], x_t_BX.shape[3])

    # -- shapes, times and pixels -------------------------------------------------------------------------------

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        factor = self._pipeline.vae_scale_factor
        stride = 2 * factor
        if height % stride or width % stride:
            raise ValueError(
                f"Qwen-Image images must be multiples of {stride} pixels on each side, got {width}x{height}"
            )
        config: Any = self.vae.config
        return (int(config.z_dim), height // factor, width // factor)

    def sigmas(self, settings: RolloutSettings, latent_shape: tuple[int, ...]) -> Tensor:
        """Qwen-Image's schedule when ``settings.shift`` is None: ``linspace(1, 1/T, T)`` shifted by ``mu`` from the
        image's token count (``calculate_shift``), then ending at the scheduler's terminal time, then 0 — the times
        ``QwenImagePipeline`` visits."""
        if settings.shift is not None:
            return super().sigmas(settings, latent_shape)
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

        config = self._pipeline.scheduler.config
        _, h, w = latent_shape
        mu = calculate_shift(
            (h // 2) * (w // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        steps = settings.num_steps
        scheduler = type(self._pipeline.scheduler).from_config(config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device="cpu", mu=mu)
        return scheduler.sigmas.to(torch.float32)

    def decode(self, latents_BX: Tensor) -> Tensor:
        vae: Any = self.vae
        config = vae.config
        z = latents_BX.to(vae.dtype).unsqueeze(2)  # one frame: [B, C, 1, h, w]
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(z.device, z.dtype)
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(shape).to(z.device, z.dtype)
        image = vae.decode(z / inverse_std + mean, return_dict=False)[0][:, :, 0]  # the pipeline's arithmetic
        return (image.float() / 2 + 0.5).clamp(0, 1)

"""Tiny random flow policies built from configs: the same diffusers and transformers classes as the real models, a
few thousand parameters, no download. Tests and the debug recipes (``recipes/debug/rl_*``) use them.

Their tokenizers are byte-level and built in memory (one token per byte), so they read any prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "QWEN_IMAGE_SCHEDULER",
    "TinyQwenImage",
    "TinySD3",
    "build_tiny_qwen_image",
    "build_tiny_sd3",
    "byte_tokenizer",
    "colour_decoder_",
    "colour_qwen_decoder_",
]

#: Ids of the byte tokenizer's special tokens (after the 256 byte tokens).
_PAD, _BOS, _EOS = 256, 257, 258
_VOCAB = 259
#: Tokens per prompt of every tiny text encoder (bytes: longer prompts are cut), which keeps attention short.
_TEXT_TOKENS = 32


def byte_tokenizer(max_length: int) -> Any:
    """A fast tokenizer with one token per byte plus ``<pad>``, ``<s>`` and ``</s>``, which ends every text with
    ``</s>`` (CLIP pools the hidden state there)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "<s>", "</s>")])
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", _EOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", model_max_length=max_length
    )


@dataclass(frozen=True)
class TinySD3:
    """The size of a tiny SD3 pipeline (a real ``StableDiffusion3Pipeline``).

    The VAE downsamples by 4 and the transformer patches by 2, so images are multiples of 8 pixels.

    Raises:
        ValueError: for a width or head count that does not divide.
    """

    width: int = 32
    """The transformer's hidden size (heads x head dim) and the text encoders' width."""
    heads: int = 4
    """Attention heads of the transformer and the text encoders."""
    layers: int = 2
    """Transformer blocks (and text encoder layers)."""
    latent_channels: int = 4
    """Channels of the VAE latent space."""
    t5: bool = True
    """Include the T5 encoder (SD3's third text encoder); off leaves its embeddings zero, as SD3 allows."""
    seed: int = 0
    """Seed of the random weights."""
    colour_vae: bool = True
    """Make the VAE decoder show latent channels 0-2 as red, green and blue (see :func:`colour_decoder_`); a random
    decoder normalises colour away, and RL on a colour reward would have almost nothing to move."""

    def __post_init__(self) -> None:
        if self.width % self.heads or self.width < 8:
            raise ValueError(f"tiny.width must be a multiple of tiny.heads and at least 8, got {self.width}")
        if self.colour_vae and self.latent_channels < 3:
            raise ValueError("tiny.colour_vae needs at least 3 latent channels (one per colour)")


def _centre_identity_(conv: torch.nn.Conv2d, gain: float = 1.0) -> None:
    """Set ``conv`` to pass channel ``i`` through to channel ``i`` (centre tap ``gain``), others 0, bias 0."""
    weight = torch.zeros_like(conv.weight)
    k = conv.kernel_size[0] // 2
    for i in range(min(conv.in_channels, conv.out_channels)):
        weight[i, i, k, k] = gain
    conv.weight.data.copy_(weight)
    if conv.bias is not None:
        conv.bias.data.zero_()


@torch.no_grad()
def colour_decoder_(vae: Any) -> None:
    """Make an ``AutoencoderKL`` decoder (one norm group) a plain picture of its latents: every residual branch and
    attention output is zeroed (so blocks pass their input on), the input, upsampling and output convolutions pass
    channel ``i`` to channel ``i``, and the output is ``1.5 silu(normalised latent) - 0.5`` per colour. Channels 0, 1
    and 2 then read as red, green and blue, so a colour reward has a direct, smooth path back to the latents."""
    decoder = vae.decoder
    _centre_identity_(decoder.conv_in)
    blocks = [decoder.mid_block, *decoder.up_blocks]
    for block in blocks:
        for resnet in block.resnets:
            resnet.conv2.weight.zero_()
            resnet.conv2.bias.zero_()
        for attention in getattr(block, "attentions", None) or []:
            if attention is not None:
                attention.to_out[0].weight.zero_()
                attention.to_out[0].bias.zero_()
        for upsampler in getattr(block, "upsamplers", None) or []:
            _centre_identity_(upsampler.conv)
    _centre_identity_(decoder.conv_out, gain=1.5)
    decoder.conv_out.bias.fill_(-0.5)


def build_tiny_sd3(size: TinySD3 = TinySD3()) -> Any:
    """A ``StableDiffusion3Pipeline`` with random weights of the given size (float32, CPU)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    width, heads = size.width, size.heads
    with torch.random.fork_rng():
        torch.manual_seed(size.seed)

        def clip() -> Any:
            config = CLIPTextConfig(
                vocab_size=_VOCAB, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=size.layers,
                num_attention_heads=heads, projection_dim=width, max_position_embeddings=_TEXT_TOKENS,
                pad_token_id=_PAD, bos_token_id=_BOS, eos_token_id=_EOS,
            )  # fmt: skip
            return CLIPTextModelWithProjection(config).eval()

        t5 = None
        if size.t5:
            t5_config = T5Config(
                vocab_size=_VOCAB, d_model=width, d_kv=width // heads, d_ff=2 * width, num_layers=size.layers,
                num_heads=heads, pad_token_id=_PAD, eos_token_id=_EOS,
            )  # fmt: skip
            t5 = T5EncoderModel(t5_config).eval()
        transformer = SD3Transformer2DModel(
            sample_size=32, patch_size=2, in_channels=size.latent_channels, out_channels=size.latent_channels,
            num_layers=size.layers, attention_head_dim=width // heads, num_attention_heads=heads,
            joint_attention_dim=width, caption_projection_dim=width, pooled_projection_dim=2 * width,
            pos_embed_max_size=64,
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8),
            latent_channels=size.latent_channels, layers_per_block=1, norm_num_groups=1 if size.colour_vae else 4,
            sample_size=32, shift_factor=0.0, scaling_factor=1.0,
        )  # fmt: skip
        if size.colour_vae:
            colour_decoder_(vae)
        return StableDiffusion3Pipeline(
            transformer=transformer.eval(),
            vae=vae.eval(),
            text_encoder=clip(),
            tokenizer=byte_tokenizer(_TEXT_TOKENS),
            text_encoder_2=clip(),
            tokenizer_2=byte_tokenizer(_TEXT_TOKENS),
            text_encoder_3=t5,
            tokenizer_3=byte_tokenizer(_TEXT_TOKENS) if t5 is not None else None,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        )


#: Qwen-Image's scheduler (``Qwen/Qwen-Image``'s ``scheduler_config.json``): resolution-dependent exponential shift
#: between ``base_shift`` and ``max_shift``, and the last step stretched to end at 0.02.
QWEN_IMAGE_SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}


#: Qwen-Image's system prompt splits into these tokens (and punctuation) in Qwen's vocabulary.
_QWEN_IMAGE_TEMPLATE_WORDS = (
    "system", "user", "assistant", "Describe", " the", " image", " by", " detailing", " color", " shape", " size",
    " texture", " quantity", " text", " spatial", " relationships", " of", " objects", " and", " background",
)  # fmt: skip


@dataclass(frozen=True)
class TinyQwenImage:
    """The size of a tiny Qwen-Image pipeline (a real ``QwenImagePipeline``).

    The VAE downsamples by 4 and the transformer packs 2x2 latent patches, so images are multiples of 8 pixels. The
    text encoder is a tiny Qwen2.5-VL (:mod:`firm.critics.tiny`, width 64) with a byte-level tokenizer.

    Raises:
        ValueError: for a head dim that is not a multiple of 16, or a colour VAE with too few latent channels.
    """

    width: int = 32
    """The transformer's hidden size (heads x head dim)."""
    heads: int = 2
    """Attention heads of the transformer; the head dim is split over the three RoPE axes (frame, height, width)."""
    layers: int = 2
    """Transformer blocks (and text encoder layers)."""
    latent_channels: int = 4
    """Channels of the VAE latent space (Qwen-Image's ``z_dim``); the transformer sees 4x as many per 2x2 patch."""
    seed: int = 0
    """Seed of the random weights."""
    colour_vae: bool = True
    """Make the VAE decoder show latent channels 0-2 as red, green and blue (see :func:`colour_qwen_decoder_`)."""

    def __post_init__(self) -> None:
        if self.width % self.heads or (self.width // self.heads) % 16:
            raise ValueError(f"tiny.width / tiny.heads must be a multiple of 16, got {self.width} / {self.heads}")
        if self.colour_vae and self.latent_channels < 3:
            raise ValueError("tiny.colour_vae needs at least 3 latent channels (one per colour)")


def _causal_identity_(conv: Any, gain: float = 1.0) -> None:
    """Set a causal 3D convolution to pass channel ``i`` of the current frame to channel ``i`` (the last temporal
    tap, centre of the spatial kernel), others 0, bias 0."""
    weight = torch.zeros_like(conv.weight)
    k = conv.kernel_size[1] // 2
    for i in range(min(conv.in_channels, conv.out_channels)):
        weight[i, i, -1, k, k] = gain
    conv.weight.data.copy_(weight)
    conv.bias.data.zero_()


#: The constant channel of :func:`colour_qwen_decoder_` (a soft floor of each pixel's norm).
_FLOOR = 2.0


@torch.no_grad()
def colour_qwen_decoder_(vae: Any, gain: float = 3.0) -> None:
    """Make an ``AutoencoderKLQwenImage`` decoder a plain picture of its latents (as :func:`colour_decoder_` does for
    SD3's VAE): residual branches and attention outputs are zeroed, shortcuts, upsampling and output convolutions pass
    channel ``i`` on. Its output norm divides each pixel's channels by their length, so the input convolution adds a
    constant channel (number ``z_dim``) that keeps that length from vanishing; colour ``c`` is then ``1.5 silu(gain
    z_c / sqrt(|z|^2 + 4)) - 0.5`` for the latent pixel ``z``, a smooth path from latents 0-2 to red, green and blue.
    The decoder's narrowest features (half its ``base_dim``) need room for the latents and that constant."""
    decoder = vae.decoder
    constant = vae.config.z_dim
    assert vae.config.base_dim // 2 > constant, "base_dim too small for the latents and the constant channel"
    _causal_identity_(vae.post_quant_conv)
    _causal_identity_(decoder.conv_in)
    decoder.conv_in.bias[constant] = _FLOOR
    for block in [decoder.mid_block, *decoder.up_blocks]:
        for resnet in block.resnets:
            resnet.conv2.weight.zero_()
            resnet.conv2.bias.zero_()
            if not isinstance(resnet.conv_shortcut, torch.nn.Identity):
                _causal_identity_(resnet.conv_shortcut)
        for attention in getattr(block, "attentions", None) or []:
            attention.proj.weight.zero_()
            attention.proj.bias.zero_()
        for upsampler in getattr(block, "upsamplers", None) or []:
            _centre_identity_(upsampler.resample[1])
    norm = decoder.norm_out
    norm.gamma.fill_(gain / norm.scale)
    _causal_identity_(decoder.conv_out, gain=1.5)
    decoder.conv_out.bias.fill_(-0.5)


def build_tiny_qwen_image(size: TinyQwenImage = TinyQwenImage()) -> Any:
    """A ``QwenImagePipeline`` with random weights of the given size (float32, CPU).

    Its tokenizer is the critics' byte-level one (:func:`firm.critics.tiny.tiny_tokenizer`) plus the words of
    Qwen-Image's system prompt as whole tokens, so that the prompt template's prefix is 34 tokens as in Qwen's
    vocabulary: the pipeline drops exactly that many (``prompt_template_encode_start_idx``), here and once saved and
    loaded again.
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from tokenizers import AddedToken
    from transformers import Qwen2_5_VLForConditionalGeneration

    from firm.critics.tiny import TinySize, _config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens([AddedToken(word, normalized=False) for word in _QWEN_IMAGE_TEMPLATE_WORDS])
    tokenizer.padding_side = "right"  # Qwen2Tokenizer's default; the critic pads left for generation
    head_dim = size.width // size.heads
    z = size.latent_channels
    with torch.random.fork_rng():
        torch.manual_seed(size.seed)
        text_encoder = Qwen2_5_VLForConditionalGeneration(
            _config("qwen2_5_vl", tokenizer, TinySize(layers=size.layers))
        ).eval()
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=4 * z, out_channels=z, num_layers=size.layers, attention_head_dim=head_dim,
            num_attention_heads=size.heads, joint_attention_dim=text_encoder.config.text_config.hidden_size,
            axes_dims_rope=(head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8),
        )  # fmt: skip
        # Latent statistics other than 0 and 1, so that the pipeline's normalisation is exercised.
        vae = AutoencoderKLQwenImage(
            base_dim=max(16, 2 * z + 2) if size.colour_vae else 8, z_dim=z, dim_mult=[1, 1, 1], num_res_blocks=1,
            temperal_downsample=[False, False], latents_mean=[0.05 * i for i in range(z)],
            latents_std=[1.0 + 0.1 * i for i in range(z)],
        )  # fmt: skip
        if size.colour_vae:
            colour_qwen_decoder_(vae)
    pipeline = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER),
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )
    prefix = pipeline.prompt_template_encode.split("{}")[0]
    assert len(tokenizer(prefix).input_ids) == pipeline.prompt_template_encode_start_idx, "template changed"
    return pipeline

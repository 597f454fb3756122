"""The policy contract of RL fine-tuning: a flow model that samples images and gives velocities, with LoRA roles.

:class:`Policy` owns what every model family shares: the sampling loop (deterministic or SDE, per-sample seeds,
optional classifier-free guidance), and three LoRA *roles* on the trained transformer:

- ``train``: the adapter the optimizer updates;
- ``old``: a second adapter, DiffusionNFT's sampling policy, moved toward ``train`` as an EMA after each RL step;
- ``reference``: the base model, adapters disabled (the KL anchor).

A family (SD3, Qwen-Image, ...) is a small subclass that implements only what differs: :meth:`Policy.encode` (prompts
to a :class:`Condition`), :meth:`Policy.transformer_velocity` (the transformer call), :meth:`Policy.latent_shape`,
:meth:`Policy.sigmas` (its time schedule) and :meth:`Policy.decode` (latents to images).

Shapes: ``B`` samples, ``X`` the latent dims of one sample (``C, h, w`` for SD3), ``T`` sampling steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from PIL import Image
from torch import Tensor, nn

from firm.algorithms import ema_update_
from firm.critics.hf import resolve_dtype
from firm.policies.samplers import SAMPLERS, Sampler, SamplerState, per_sample_noise, sampler_for, shifted_sigmas
from firm.training.lora import LoraSettings

__all__ = ["MMDIT_ATTENTION", "ROLES", "Condition", "Policy", "Rollout", "RolloutSettings", "to_pil"]

#: The LoRA roles of a policy.
ROLES = ("train", "old", "reference")
Role = Literal["train", "old", "reference"]
#: The attention projections of both streams of an MM-DiT (SD3, Qwen-Image): FIRM's LoRA targets (r 32, alpha 64).
MMDIT_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
#: Adapter names of the ``train`` and ``old`` roles inside the peft-wrapped transformer.
TRAIN_ADAPTER, OLD_ADAPTER = "trained", "old"


@dataclass(frozen=True)
class RolloutSettings:
    """How a policy samples: resolution, steps, sampler, guidance.

    Raises:
        ValueError: for an unknown sampler, a size or step count below 1, a negative noise level or a guidance
            scale below 1.
    """

    height: int = 512
    """Image height in pixels (a multiple of the family's latent stride)."""
    width: int = 512
    """Image width in pixels."""
    num_steps: int = 10
    """Sampling steps (FIRM: 10 for generation, 6 for editing)."""
    sampler: str = "dpm2"
    """``dpm2`` (DPM-Solver++ 2M, FIRM's DiffusionNFT rollouts), ``euler`` or ``sde`` (Flow-GRPO; records log-probs)."""
    noise_level: float = 0.7
    """``a`` of the SDE's ``sigma_t = a sqrt(t / (1 - t))``; used by the ``sde`` sampler."""
    shift: float | None = None
    """Time shift ``s' = shift s / (1 + (shift - 1) s)``; None uses the model's own scheduler."""
    guidance_scale: float = 1.0
    """Classifier-free guidance; 1.0 (FIRM's setting) is off and costs one transformer call per step."""
    negative_prompt: str = ""
    """The unconditional prompt of classifier-free guidance."""

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"rollout.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if min(self.height, self.width, self.num_steps) < 1:
            raise ValueError("rollout.height, rollout.width and rollout.num_steps must be at least 1")
        if self.noise_level <= 0 and self.sampler == "sde":
            raise ValueError(f"rollout.noise_level must be > 0 for the sde sampler, got {self.noise_level}")
        if self.guidance_scale < 1.0:
            raise ValueError(f"rollout.guidance_scale must be 1.0 (off) or more, got {self.guidance_scale}")


@dataclass
class Condition:
    """What the transformer is conditioned on, per sample: named tensors whose first dim is the batch.

    Attributes:
        tensors: the conditional inputs (text embeddings, pooled embeddings, masks, source latents...).
        negative: the same for the unconditional prompt, when classifier-free guidance is on.
    """

    tensors: dict[str, Tensor]
    negative: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def select(self, index: Tensor | Sequence[int]) -> Condition:
        """The condition of the samples at ``index`` (a repeat when an index appears several times)."""
        idx = torch.as_tensor(index, dtype=torch.long)

        def pick(d: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.index_select(0, idx.to(v.device)) for k, v in d.items()}

        return Condition(pick(self.tensors), None if self.negative is None else pick(self.negative))


@dataclass
class Rollout:
    """The outcome of :meth:`Policy.sample` for ``B = prompts x group_size`` samples (group ``g`` is rows
    ``g * group_size`` to ``(g + 1) * group_size - 1``).

    Attributes:
        images: ``[B, 3, H, W]`` float32 in [0, 1], on the CPU.
        latents: ``[B, X]`` float32, the final (clean) latents.
        sigmas: ``[T + 1]`` the times visited, from 1 to 0.
        condition: the per-sample condition (kept for training).
        group_index: ``[B]`` the prompt each sample belongs to (0..prompts-1).
        seeds: the seed of each sample.
        trajectory: ``[B, T + 1, X]`` every latent visited (SDE rollouts, or when asked), else None.
        log_probs: ``[B, T]`` each step's log-prob (SDE rollouts only), else None.
    """

    images: Tensor
    latents: Tensor
    sigmas: Tensor
    condition: Condition
    group_index: Tensor
    seeds: list[int]
    trajectory: Tensor | None = None
    log_probs: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def pil(self) -> list[Image.Image]:
        """The images as PIL RGB images."""
        return to_pil(self.images)


def to_pil(images_B3HW: Tensor) -> list[Image.Image]:
    """``[B, 3, H, W]`` floats in [0, 1] as PIL RGB images."""
    array = (images_B3HW.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
    return [Image.fromarray(a.numpy(), "RGB") for a in array]


class Policy(nn.Module, ABC):
    """A flow-matching image model as an RL policy (see the module docstring).

    Subclasses set :attr:`transformer` (the module that gets LoRA) in ``__init__`` and implement the abstract
    methods. Everything runs on the device of the transformer's parameters.
    """

    #: Module names (suffixes) that get LoRA by default: the family's attention projections.
    lora_targets: ClassVar[tuple[str, ...]] = MMDIT_ATTENTION
    #: The family's tiny-model settings class (``TinySD3``...), to rebuild a tiny policy from a checkpoint.
    tiny_settings: ClassVar[type | None] = None

    transformer: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.lora: LoraSettings | None = None
        #: Where the base weights came from (``model``, ``revision``, ``tiny`` settings as a dict), for exports.
        self.source: dict[str, Any] = {}
        self._pipeline: Any = None
        self._warned_truncation = False

    @property
    def pipeline(self) -> Any:
        """The diffusers pipeline whose components this policy uses (its transformer carries the adapters)."""
        return self._pipeline

    def _pipeline_from(
        self,
        pipeline: Any,
        *,
        model: str,
        tiny: Any,
        dtype: str,
        revision: str | None,
        build_tiny: Callable[[Any], Any],
        pipeline_class: str,
    ) -> Any:
        """A family's pipeline: the one given, else the tiny one built from ``tiny``, else diffusers'
        ``pipeline_class`` loaded from ``model`` (a hub id or folder; no code from the repository is run), with
        weights in ``dtype``. Records :attr:`source` for the ones it builds or loads.

        Raises:
            ValueError: for an unknown dtype.
            OSError: when the model cannot be found (diffusers' message, which names the id).
        """
        if pipeline is not None:
            return pipeline
        self.source = {
            "model": None if tiny is not None else model,
            "revision": revision,
            "tiny": None if tiny is None else dataclasses.asdict(tiny),
        }
        torch_dtype = resolve_dtype(dtype, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        if tiny is not None:
            built = build_tiny(tiny)
            if torch_dtype != torch.float32:
                built.to(dtype=torch_dtype)
            return built
        import diffusers

        return getattr(diffusers, pipeline_class).from_pretrained(model, dtype=torch_dtype, revision=revision)

    @classmethod
    def from_source(cls, source: Mapping[str, Any], dtype: str = "float32") -> Policy:
        """The base policy (no adapters) that :attr:`source` describes: the same hub id or folder, or the same tiny
        model."""
        tiny = source.get("tiny")
        if tiny is not None and cls.tiny_settings is None:
            raise ValueError(f"{cls.__name__} has no tiny models")
        settings = None if tiny is None or cls.tiny_settings is None else cls.tiny_settings(**tiny)
        policy: Policy = cls(model=source.get("model"), tiny=settings, dtype=dtype, revision=source.get("revision"))  # type: ignore[call-arg]
        return policy

    # -- what a family implements -----------------------------------------------------------------------------

    @abstractmethod
    def encode(
        self, prompts: Sequence[str], sources: Sequence[Image.Image] | None, settings: RolloutSettings
    ) -> Condition:
        """The condition of each prompt (and source image, for editors), one row per prompt, with ``negative``
        filled when ``settings.guidance_scale > 1``."""

    @abstractmethod
    def transformer_velocity(self, x_t_BX: Tensor, t_B: Tensor, tensors: Mapping[str, Tensor]) -> Tensor:
        """The transformer's velocity at ``(x_t, t)`` for one set of condition tensors (no guidance), in the
        transformer's output dtype."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The latent shape ``X`` of one ``height x width`` image.

        Raises:
            ValueError: for a size the model cannot make (not a multiple of its stride).
        """

    @abstractmethod
    def decode(self, latents_BX: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` float32 in [0, 1] from clean latents."""

    def sigmas(self, settings: RolloutSettings, latent_shape: tuple[int, ...]) -> Tensor:
        """The ``T + 1`` times a rollout visits, from 1 to 0 (float32, CPU). Families with a model scheduler
        override this to use it when ``settings.shift`` is None."""
        return shifted_sigmas(settings.num_steps, settings.shift or 1.0)

    # -- velocity and sampling ------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def velocity(
        self, x_t_BX: Tensor, t_B: Tensor | float, condition: Condition, guidance_scale: float = 1.0
    ) -> Tensor:
        """The velocity (float32) at ``(x_t, t)``, with classifier-free guidance when ``guidance_scale > 1``.

        Gradients flow when called outside ``torch.no_grad``; which adapter answers is set by :meth:`role`.
        """
        t = torch.as_tensor(t_B, dtype=torch.float32, device=x_t_BX.device).expand(x_t_BX.shape[0])
        v = self.transformer_velocity(x_t_BX, t, condition.tensors).float()
        if guidance_scale > 1.0:
            if condition.negative is None:
                raise ValueError("guidance_scale > 1 needs a condition encoded with guidance (its negative prompt)")
            v_uncond = self.transformer_velocity(x_t_BX, t, condition.negative).float()
            v = v_uncond + guidance_scale * (v - v_uncond)
        return v

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[str],
        settings: RolloutSettings,
        *,
        group_size: int = 1,
        seeds: Sequence[int] | None = None,
        sources: Sequence[Image.Image] | None = None,
        role: Role = "train",
        keep_trajectory: bool = False,
        batch_size: int | None = None,
    ) -> Rollout:
        """Sample ``group_size`` images for each prompt.

        Args:
            prompts: the prompts (or edit instructions).
            settings: resolution, steps, sampler, guidance.
            group_size: images per prompt; the samples of prompt ``g`` are consecutive.
            seeds: one seed per sample (``len(prompts) * group_size``), which fixes its initial noise and its SDE
                noise; ``0..B-1`` when None.
            sources: the source image of each prompt (editors).
            role: the adapter that samples (``old`` for DiffusionNFT, ``train`` for Flow-GRPO).
            keep_trajectory: keep every latent visited (always kept by the SDE sampler).
            batch_size: samples per transformer pass (memory); None denoises all at once. A sample's image does not
                depend on it.

        Returns:
            A :class:`Rollout`.

        Raises:
            ValueError: for a wrong number of seeds or sources, a batch size below 1, or an image size the model
                cannot make.
        """
        count = len(prompts) * group_size
        seeds = list(range(count)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != count:
            raise ValueError(f"need one seed per sample ({count}), got {len(seeds)}")
        if sources is not None and len(sources) != len(prompts):
            raise ValueError(f"need one source image per prompt ({len(prompts)}), got {len(sources)}")
        group_index = torch.arange(len(prompts)).repeat_interleave(group_size)
        condition = self.encode(prompts, sources, settings).select(group_index)
        shape = self.latent_shape(settings.height, settings.width)
        sigmas = self.sigmas(settings, shape)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 when given, got {batch_size}")
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        sampler = sampler_for(settings.sampler, settings.noise_level)
        keep = keep_trajectory or sampler.stochastic
        parts: list[tuple[Tensor, Tensor, Tensor | None, Tensor | None]] = []
        step = batch_size or count
        with self.role(role):
            for start in range(0, count, step):
                index = list(range(start, min(start + step, count)))
                parts.append(
                    self._denoise(
                        shape, sigmas, condition.select(index), [generators[i] for i in index], sampler, settings, keep
                    )
                )
        images, latents, visited, log_probs = (list(column) for column in zip(*parts, strict=True))
        return Rollout(
            images=torch.cat(images),
            latents=torch.cat(latents),
            sigmas=sigmas,
            condition=condition,
            group_index=group_index,
            seeds=seeds,
            trajectory=torch.cat(visited) if keep else None,
            log_probs=torch.cat(log_probs) if log_probs[0] is not None else None,
        )

    def _denoise(
        self,
        shape: tuple[int, ...],
        sigmas: Tensor,
        condition: Condition,
        generators: list[torch.Generator],
        sampler: Sampler,
        settings: RolloutSettings,
        keep: bool,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """One chunk of samples from noise to images: (images, latents, trajectory, log-probs)."""
        x = per_sample_noise(shape, generators, self.device)
        state = SamplerState(generators)
        visited = [x] if keep else []
        for i in range(len(sigmas) - 1):
            t, t_prev = float(sigmas[i]), float(sigmas[i + 1])
            v = self.velocity(x, t, condition, settings.guidance_scale)
            x = sampler.step(x, v, t, t_prev, state)
            if keep:
                visited.append(x)
        images = self.decode(x).float().cpu()
        trajectory = torch.stack(visited, dim=1) if keep else None
        log_probs = torch.stack(state.log_probs, dim=1) if state.log_probs else None
        return images, x, trajectory, log_probs

    # -- LoRA roles -------------------------------------------------------------------------------------------

    def add_adapters(self, settings: LoraSettings | None = None) -> None:
        """Give the transformer the ``train`` and ``old`` LoRA adapters (``old`` starts equal to ``train``); only
        ``train`` is trainable, everything else is frozen.

        Args:
            settings: rank, alpha, dropout and target modules; None for FIRM's (r 32, alpha 64, no dropout, the
                family's :attr:`lora_targets`).

        Raises:
            RuntimeError: when the adapters were already added.
        """
        from peft import LoraConfig

        if self.lora is not None:
            raise RuntimeError("the policy already has its LoRA adapters")
        if settings is None:
            settings = LoraSettings(r=32, alpha=64, dropout=0.0, target_modules=list(self.lora_targets))
        config = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
        )
        self.requires_grad_(False)
        transformer: Any = self.transformer
        add_adapter = transformer.add_adapter
        add_adapter(config, adapter_name=TRAIN_ADAPTER)
        with warnings.catch_warnings():
            # peft warns that a second adapter makes a model hold several adapters, which is the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            add_adapter(config, adapter_name=OLD_ADAPTER)
        self.lora = settings
        self._activate_train()
        with torch.no_grad():
            for old, new in zip(
                self.adapter_parameters(OLD_ADAPTER), self.adapter_parameters(TRAIN_ADAPTER), strict=True
            ):
                old.copy_(new)

    def adapter_parameters(self, adapter: str = TRAIN_ADAPTER) -> list[nn.Parameter]:
        """The parameters of one adapter, in module order (the ``train`` and ``old`` lists pair up)."""
        marker = f".{adapter}."
        return [p for name, p in self.transformer.named_parameters() if "lora_" in name and marker in name]

    def update_old(self, decay: float) -> None:
        """``old <- decay * old + (1 - decay) * train`` (DiffusionNFT's soft update)."""
        self._check_adapters()
        ema_update_(self.adapter_parameters(OLD_ADAPTER), self.adapter_parameters(TRAIN_ADAPTER), decay)

    @contextlib.contextmanager
    def role(self, role: Role) -> Iterator[None]:
        """Within the block, the transformer answers as ``role``; back to ``train`` after it.

        Without adapters (a policy not being trained) every role is the base model.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
        if self.lora is None or role == "train":
            yield
            return
        transformer: Any = self.transformer
        try:
            if role == "old":
                transformer.set_adapter(OLD_ADAPTER)
            else:
                transformer.disable_adapters()
            yield
        finally:
            if role == "reference":
                transformer.enable_adapters()
            self._activate_train()

    def _activate_train(self) -> None:
        # peft marks the active adapter trainable and others frozen when it switches; pin that down explicitly.
        transformer: Any = self.transformer
        transformer.set_adapter(TRAIN_ADAPTER)
        for name, param in transformer.named_parameters():
            param.requires_grad_("lora_" in name and f".{TRAIN_ADAPTER}." in name)

    def export_meta(self) -> dict[str, Any]:
        """What a checkpoint keeps to export this policy's adapter (see :func:`firm.policies.export.write_lora`)."""
        from firm.policies.export import policy_meta

        self._check_adapters()
        cls = type(self)
        family = f"{cls.__module__}.{cls.__qualname__}"
        return policy_meta(self.pipeline, self.lora, self.source, family)

    def _check_adapters(self) -> None:
        if self.lora is None:
            raise RuntimeError("the policy has no LoRA adapters: call add_adapters() first")

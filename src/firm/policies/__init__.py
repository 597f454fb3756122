"""RL policies: flow-matching image models that sample images and give velocities, with LoRA roles
(:class:`Policy`), and one small class per model family (:class:`SD3Generator`, :class:`QwenImageGenerator`, ...)."""

from firm.policies.base import ROLES, Condition, Policy, Rollout, RolloutSettings, to_pil
from firm.policies.qwen_image import QwenImageGenerator
from firm.policies.samplers import SAMPLERS, shifted_sigmas
from firm.policies.sd3 import SD3Generator
from firm.policies.tiny import TinyQwenImage, TinySD3, build_tiny_qwen_image, build_tiny_sd3

__all__ = [
    "ROLES",
    "SAMPLERS",
    "Condition",
    "Policy",
    "QwenImageGenerator",
    "Rollout",
    "RolloutSettings",
    "SD3Generator",
    "TinyQwenImage",
    "TinySD3",
    "build_tiny_qwen_image",
    "build_tiny_sd3",
    "shifted_sigmas",
    "to_pil",
]

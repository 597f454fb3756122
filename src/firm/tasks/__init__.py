"""LightningModules: each composes injected parts (a critic model source, settings dataclasses) into training."""

import torch

from firm.tasks.critic_sft import CriticSFTTask, apply_lora
from firm.tasks.settings import EvalSettings, LoraSettings, OptimizerSettings
from firm.tasks.vlm import PretrainedVLM, TinyVLM, VLMSource

__all__ = [
    "CriticSFTTask",
    "EvalSettings",
    "LoraSettings",
    "OptimizerSettings",
    "PretrainedVLM",
    "TinyVLM",
    "VLMSource",
    "apply_lora",
]

# Tasks built in Python (not from YAML) keep these objects in their checkpoints' hyperparameters. They hold plain
# settings only, so checkpoints stay loadable with torch.load(weights_only=True), as Lightning resumes them.
torch.serialization.add_safe_globals([EvalSettings, LoraSettings, OptimizerSettings, PretrainedVLM, TinyVLM])

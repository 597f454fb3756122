"""LightningModules as packages: each composes injected parts (a model source, settings dataclasses) into training.

``critic_sft`` trains critics; ``policy_rl`` fine-tunes image generators with RL (DiffusionNFT, Flow-GRPO); policy SFT
joins as a package beside them.
"""

import torch

from firm.tasks.critic_sft import (
    CriticSFTTask,
    EvalSettings,
    LoraSettings,
    OptimizerSettings,
    PretrainedVLM,
    TinyVLM,
    VLMSource,
    apply_lora,
)
from firm.tasks.policy_rl import PolicyRLTask

__all__ = [
    "CriticSFTTask",
    "EvalSettings",
    "LoraSettings",
    "OptimizerSettings",
    "PolicyRLTask",
    "PretrainedVLM",
    "TinyVLM",
    "VLMSource",
    "apply_lora",
]

# Tasks built in Python (not from YAML) keep these objects in their checkpoints' hyperparameters. They hold plain
# settings only, so checkpoints stay loadable with torch.load(weights_only=True), as Lightning resumes them. The
# second names are where these classes lived before the task packages; checkpoints written then name them so.
torch.serialization.add_safe_globals(
    [
        EvalSettings,
        LoraSettings,
        OptimizerSettings,
        PretrainedVLM,
        TinyVLM,
        (EvalSettings, "firm.tasks.settings.EvalSettings"),
        (LoraSettings, "firm.tasks.settings.LoraSettings"),
        (OptimizerSettings, "firm.tasks.settings.OptimizerSettings"),
        (PretrainedVLM, "firm.tasks.vlm.PretrainedVLM"),
        (TinyVLM, "firm.tasks.vlm.TinyVLM"),
    ]
)

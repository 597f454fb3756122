"""Critic SFT: supervised fine-tuning of a generative critic (the task, its settings, where its model comes from,
and its export to a Hugging Face folder)."""

from firm.tasks.critic_sft.settings import EvalSettings, LoraSettings, OptimizerSettings
from firm.tasks.critic_sft.source import PretrainedVLM, TinyVLM, VLMSource
from firm.tasks.critic_sft.task import CriticSFTTask, verdict_totals
from firm.training.lora import apply_lora

__all__ = [
    "CriticSFTTask",
    "EvalSettings",
    "LoraSettings",
    "OptimizerSettings",
    "PretrainedVLM",
    "TinyVLM",
    "VLMSource",
    "apply_lora",
    "verdict_totals",
]

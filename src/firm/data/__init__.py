"""Data: the critic-sample schema and its WebDataset form (datamodules join here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from firm.data.schema import CriticSample, SampleError, encode_png, from_wds, to_wds

if TYPE_CHECKING:
    from firm.data.rl_prompts import RLPrompt, RLPromptDataModule, read_rl_prompts

__all__ = [
    "CriticSample",
    "RLPrompt",
    "RLPromptDataModule",
    "SampleError",
    "encode_png",
    "from_wds",
    "read_rl_prompts",
    "to_wds",
]

#: Exported lazily: importing them pulls in Lightning (seconds), which readers of the schema (scoring, serving,
#: worlds) do not need.
_RL_PROMPTS = ("RLPrompt", "RLPromptDataModule", "read_rl_prompts")


def __getattr__(name: str) -> Any:
    if name in _RL_PROMPTS:
        from firm.data import rl_prompts

        return getattr(rl_prompts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

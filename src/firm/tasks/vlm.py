"""Deprecated: moved to :mod:`firm.tasks.critic_sft.source` (and ``model_type_of`` to :mod:`firm.critics.hf`).

Kept for one release, for recipes and checkpoints that name ``firm.tasks.vlm.TinyVLM`` and the like.
"""

import warnings

from firm.critics.hf import model_type_of
from firm.tasks.critic_sft.source import PretrainedVLM, TinyVLM, VLMSource

__all__ = ["PretrainedVLM", "TinyVLM", "VLMSource", "model_type_of"]

warnings.warn(
    "firm.tasks.vlm moved to firm.tasks.critic_sft.source (model_type_of to firm.critics.hf); the old path goes in "
    "the next release",
    DeprecationWarning,
    stacklevel=2,
)

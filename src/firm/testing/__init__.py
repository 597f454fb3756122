"""Helpers for tests, here and in plugins: tiny real models built from configs, saved as Hugging Face folders, and
tiny, learnable critic-sample shards."""

from firm.testing.models import CRITIC_FAMILIES, TinySize, build_tiny_critic, save_tiny_critic, tiny_tokenizer
from firm.testing.shards import critic_sample, write_shard, write_shards

__all__ = [
    "CRITIC_FAMILIES",
    "TinySize",
    "build_tiny_critic",
    "critic_sample",
    "save_tiny_critic",
    "tiny_tokenizer",
    "write_shard",
    "write_shards",
]

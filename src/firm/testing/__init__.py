"""Helpers for tests, here and in plugins: tiny real models built from configs, saved as Hugging Face folders."""

from firm.testing.models import CRITIC_FAMILIES, TinySize, build_tiny_critic, save_tiny_critic, tiny_tokenizer

__all__ = ["CRITIC_FAMILIES", "TinySize", "build_tiny_critic", "save_tiny_critic", "tiny_tokenizer"]

"""Tiny real critics for tests (built from configs, saved as Hugging Face folders); they live in
:mod:`firm.critics.tiny`, which the product's debug recipes use too."""

from firm.critics.tiny import (
    CHAT_TEMPLATE,
    CRITIC_FAMILIES,
    SPECIAL_TOKENS,
    VOCABS,
    TinySize,
    build_tiny_critic,
    qwen_vocab_tokenizer,
    save_tiny_critic,
    tiny_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "CRITIC_FAMILIES",
    "SPECIAL_TOKENS",
    "VOCABS",
    "TinySize",
    "build_tiny_critic",
    "qwen_vocab_tokenizer",
    "save_tiny_critic",
    "tiny_tokenizer",
]

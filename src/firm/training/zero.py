"""What the critic tasks need to know about DeepSpeed ZeRO under Lightning: the active config, and loading a
Hugging Face model so that ZeRO-3 partitions it as it loads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl

__all__ = ["deepspeed_config", "offloads_optimizer", "outside_zero3_init", "zero3_model_loading", "zero_stage"]


def deepspeed_config(trainer: pl.Trainer | None) -> dict[str, Any] | None:
    """The DeepSpeed config of the trainer's strategy; None when the strategy is not DeepSpeed."""
    if trainer is None:
        return None
    from lightning.pytorch.strategies import DeepSpeedStrategy

    strategy = trainer.strategy
    if not isinstance(strategy, DeepSpeedStrategy):
        return None
    strategy._init_config_if_needed()  # Lightning fills batch size and accumulation into the config lazily
    config: dict[str, Any] | None = strategy.config
    return config


def zero_stage(config: dict[str, Any] | None) -> int:
    """The ZeRO stage of a DeepSpeed config; 0 without one."""
    if not config:
        return 0
    return int(config.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(config: dict[str, Any] | None) -> bool:
    """Whether the config offloads optimizer states to the CPU or NVMe (DeepSpeed then needs its own Adam)."""
    if not config:
        return False
    offload = config.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in ("none", None)


@contextmanager
def zero3_model_loading(config: dict[str, Any] | None) -> Iterator[None]:
    """While building a model under ZeRO-3, tell transformers so: ``from_pretrained`` then loads each weight into
    its partitions (gathered layer by layer) instead of into the empty placeholders ZeRO-3 leaves. A no-op for other
    stages and strategies."""
    if zero_stage(config) != 3:
        yield
        return
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    # transformers keeps only a weak reference: this local keeps the config alive while the model loads.
    hf_config = HfDeepSpeedConfig(config)
    try:
        yield
    finally:
        del hf_config
        unset_hf_deepspeed_config()


@contextmanager
def outside_zero3_init() -> Iterator[None]:
    """Build modules whole even inside DeepSpeed's ZeRO-3 ``zero.Init`` context; DeepSpeed partitions them later,
    when its engine starts. For models whose weights are initialised in this process (built from a config): inside
    ``zero.Init`` each module is partitioned as soon as it is constructed, before transformers' weight init runs on
    it, so the weights would differ from a model built outside."""
    import sys

    partition = sys.modules.get("deepspeed.runtime.zero.partition_parameters")
    active = partition is not None and partition.top_level_context is not None and partition.zero_init_context > 0
    if not active:
        yield
        return
    assert partition is not None
    partition.shutdown_init_context()
    try:
        yield
    finally:
        partition.restore_init_context()

"""Critic SFT on ShapesWorld: the shards are written on first use (``prepare_data``), then streamed like any others.

Nothing to download: a fresh clone trains a critic with ``firm fit -c recipes/debug/critic_sft_tiny.yaml``. The
shards are exactly what ``firm world shards`` writes (same world, seeds and splits), kept under ``root`` in a folder
named by the settings, so a second run reuses them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from firm.critics.base import task_of
from firm.data.critic_sft import CriticSFTDataModule
from firm.worlds.shapes.export import write_shards
from firm.worlds.shapes.world import ShapesWorld

__all__ = ["ShapesWorldSFTDataModule"]

_DONE = "COMPLETE"


class ShapesWorldSFTDataModule(CriticSFTDataModule):
    """:class:`~firm.data.critic_sft.CriticSFTDataModule` over ShapesWorld shards it writes itself.

    Args:
        root: folder for the shards (created; reused across runs with the same settings).
        dimensions: dimensions to train on, e.g. ``[execution, consistency]`` for an edit critic.
        train_samples: training samples per dimension (ShapesWorld split ``train``), scores uniform over 1-5.
        val_samples: validation samples per dimension (split ``val``, disjoint from ``train``); 0 for none.
        test_samples: test samples per dimension (split ``test``, disjoint from both) for ``firm test``; 0 for none.
        image_size: side of the ShapesWorld images in pixels.
        world_seed: ShapesWorld's base seed.
        shard_size: samples per shard.
        **kwargs: every other :class:`~firm.data.critic_sft.CriticSFTDataModule` argument (batch size, workers,
            shuffle, templates, max_length, strict...).

    Raises:
        ValueError: for an unknown dimension or a sample count below its minimum.
    """

    def __init__(
        self,
        root: str = "runs/data/shapesworld",
        dimensions: list[str] | None = None,
        train_samples: int = 200,
        val_samples: int = 40,
        test_samples: int = 0,
        image_size: int = 64,
        world_seed: int = 0,
        shard_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        dims = list(dimensions or ["execution", "consistency"])
        for dimension in dims:
            task_of(dimension)
        if train_samples < 1 or val_samples < 0 or test_samples < 0:
            raise ValueError(
                "need train_samples >= 1 and val_samples, test_samples >= 0, "
                f"got {train_samples}, {val_samples}, {test_samples}"
            )
        self.root = Path(root)
        self.dimensions = dims
        self.train_samples = train_samples
        self.val_samples = val_samples
        self.test_samples = test_samples
        self.image_size = image_size
        self.world_seed = world_seed
        self.shard_size = shard_size
        train = [self._pattern("train", d, train_samples) for d in dims]
        val = [self._pattern("val", d, val_samples) for d in dims] if val_samples else None
        test = [self._pattern("test", d, test_samples) for d in dims] if test_samples else None
        super().__init__(
            train=train,
            val=val,
            test=test,
            num_train_samples=train_samples * len(dims),
            num_val_samples=val_samples * len(dims) if val_samples else None,
            num_test_samples=test_samples * len(dims) if test_samples else None,
            **kwargs,
        )

    def missing_test_hint(self) -> str:
        """ShapesWorld writes its test split itself: say how many samples to hold out."""
        return "set the number of ShapesWorld test samples, e.g. --data.init_args.test_samples 40"

    def _folder(self, split: str, dimension: str, n: int) -> Path:
        return self.root / f"size{self.image_size}-seed{self.world_seed}" / f"{split}-{dimension}-n{n}"

    def _pattern(self, split: str, dimension: str, n: int) -> str:
        shards = -(-n // self.shard_size)
        return str(self._folder(split, dimension, n) / f"shapes-{split}-{dimension}-{{000000..{shards - 1:06d}}}.tar")

    def prepare_data(self) -> None:
        """Write the shards that are not there yet (each folder is written aside and moved in when complete)."""
        jobs = [(split, n) for split, n in (("train", self.train_samples), ("val", self.val_samples),
                ("test", self.test_samples)) if n]  # fmt: skip
        for split, n in jobs:
            world = ShapesWorld(size=self.image_size, split=split, seed=self.world_seed)
            for dimension in self.dimensions:
                folder = self._folder(split, dimension, n)
                if (folder / _DONE).is_file():
                    continue
                partial = folder.with_name(folder.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                write_shards(world, dimension, n, partial, shard_size=self.shard_size, progress=False)
                (partial / _DONE).write_text(f"{n} samples\n")
                shutil.rmtree(folder, ignore_errors=True)
                partial.rename(folder)

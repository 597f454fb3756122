"""Deterministic, resumable WebDataset sample streams, split across nodes, ranks and dataloader workers.

A *slot* is one dataloader worker of one rank: ``slot = rank * num_workers + role``. Every slot reads its own part of
the shards, either whole shards (``split="shard"``, the usual case at scale: shard ``j`` of the epoch's shuffled order
goes to slot ``j % slots``) or every ``slots``-th sample of every shard (``split="sample"``, for fewer shards than
slots, so that no slot is left empty). ``auto`` picks ``shard`` when there are at least as many shards as slots.

The stream of a slot repeats its part in *passes* (shuffled anew each pass) until the consumer has taken what it
needs: every rank must run the same number of steps, whatever the shard sizes. Everything random is seeded from
``(seed, epoch, slot, pass)``, so a slot's stream is the same sequence every time it is read, and its *position*
(how many raw samples it has handed out) is all it takes to continue it: skipping reads the tar bytes but decodes
nothing.

Shard URLs are anything WebDataset opens: local paths, ``file:`` paths, brace patterns (``shards-{000..127}.tar``),
several patterns joined by ``::``, ``pipe:`` commands (``pipe:aws s3 cp s3://bucket/shard-000.tar -``) and
``http(s)://`` URLs.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from webdataset.filters import shuffle as wds_shuffle
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, tarfile_samples

from firm.errors import check_file

Split = Literal["auto", "shard", "sample"]

__all__ = ["RawSample", "ShardStream", "Split", "count_samples", "expand_shards", "is_local", "resolve_split"]

#: A raw WebDataset sample: ``__key__``, ``__url__`` and one bytes value per member (``json``, ``out.png``...).
RawSample = dict[str, Any]


def expand_shards(urls: str | Sequence[str]) -> list[str]:
    """Every shard URL named by ``urls``: brace patterns expanded, ``::`` lists split, in the given order.

    Raises:
        ValueError: when nothing is named.
    """
    patterns = [urls] if isinstance(urls, str) else list(urls)
    shards = [url for pattern in patterns for url in expand_urls(str(pattern))]
    if not shards:
        raise ValueError(f"no shards in {urls!r}")
    return shards


def is_local(url: str) -> bool:
    """Whether ``url`` is a file on this machine (a plain path or ``file:``), as opposed to ``pipe:`` or a URL."""
    return url.startswith("file:") or ":" not in url.split("/", 1)[0]


def _local_path(url: str) -> Path:
    return Path(url.removeprefix("file://").removeprefix("file:"))


def count_samples(shards: Sequence[str]) -> int:
    """Number of samples (distinct keys) in local shards, read from the tar headers without reading the members.

    Raises:
        ValueError: for a shard that is not a local file (give the count in the config instead).
        FileNotFoundError: for a local shard that does not exist.
    """
    total = 0
    for url in shards:
        if not is_local(url):
            raise ValueError(
                f"cannot count the samples of {url!r} without reading it; give the number of samples in the config "
                "(num_train_samples / num_val_samples)"
            )
        path = _local_path(url)
        check_file(path, "shard", FileNotFoundError)
        keys: set[str] = set()
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if member.isreg():
                    prefix, _ = base_plus_ext(member.name)
                    if prefix is not None and not Path(member.name).name.startswith("__"):
                        keys.add(prefix)
        total += len(keys)
    return total


def resolve_split(split: Split, num_shards: int, slots: int) -> Literal["shard", "sample"]:
    """The split actually used: ``auto`` is ``shard`` when every slot gets at least one shard, else ``sample``."""
    if split == "auto":
        return "shard" if num_shards >= slots else "sample"
    return split


def _rng(*parts: object) -> random.Random:
    # String seeds hash with SHA-512 in CPython, independent of PYTHONHASHSEED: the same in every process.
    return random.Random("/".join(str(p) for p in parts))


@dataclass(frozen=True)
class ShardStream:
    """The raw samples that one slot reads, pass after pass, in a deterministic order.

    Attributes:
        shards: shard URLs, as :func:`expand_shards` lists them.
        slots: ranks x dataloader workers.
        split: ``shard`` or ``sample`` (see the module docstring; resolve ``auto`` with :func:`resolve_split`).
        seed: base seed of every shuffle.
        epoch: the training epoch; each epoch shuffles differently.
        shuffle: shuffle the shard order and samples (off for validation).
        shuffle_buffer: samples held in the shuffle buffer; larger mixes better and costs memory.
    """

    shards: tuple[str, ...]
    slots: int
    split: Literal["shard", "sample"]
    seed: int = 0
    epoch: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        if self.split == "shard" and len(self.shards) < self.slots:
            raise ValueError(
                f"split='shard' needs at least one shard per slot (ranks x workers = {self.slots}), got "
                f"{len(self.shards)} shards; use split='sample' or 'auto', or fewer workers"
            )

    def pass_samples(self, slot: int, pass_index: int) -> Iterator[RawSample]:
        """The raw samples of ``slot`` in pass ``pass_index``, shuffled when ``shuffle`` is on."""
        order = list(self.shards)
        if self.shuffle:
            _rng(self.seed, self.epoch, pass_index, "shards").shuffle(order)
        if self.split == "shard":
            mine = order[slot :: self.slots]
            samples: Iterator[RawSample] = iter(tarfile_samples([{"url": url} for url in mine]))
        else:
            everything = iter(tarfile_samples([{"url": url} for url in order]))
            samples = (s for i, s in enumerate(everything) if i % self.slots == slot)
        if self.shuffle and self.shuffle_buffer > 1:
            rng = _rng(self.seed, self.epoch, pass_index, slot, "samples")
            samples = iter(wds_shuffle(bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples))
        return samples

    def samples(self, slot: int, start: int = 0, passes: int | None = None) -> Iterator[tuple[int, int, RawSample]]:
        """``(pass, position, sample)`` for ``slot``, from ``position == start`` on, over ``passes`` passes (None:
        forever). Positions count every raw sample the slot hands out, across passes; the first ``start`` are read
        and dropped undecoded.

        Raises:
            ValueError: when a whole pass of the slot holds no sample (it could never fill its quota).
        """
        position = 0
        pass_index = 0
        while passes is None or pass_index < passes:
            seen = False
            for sample in self.pass_samples(slot, pass_index):
                seen = True
                if position >= start:
                    yield pass_index, position, sample
                position += 1
            if not seen:
                raise ValueError(
                    f"slot {slot} of {self.slots} (rank x worker) has no samples in {len(self.shards)} shard(s); "
                    "use fewer dataloader workers or ranks, or more data"
                )
            pass_index += 1

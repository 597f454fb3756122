"""RL prompt sets: the prompts a policy is fine-tuned on, read whole and dealt to ranks as an endless, resumable stream.

Every training step each rank takes ``prompts_per_step`` prompts; the policy samples a group of images per prompt and
a critic scores them. A prompt set is small (thousands of prompts), so it is read whole into memory, source images
kept encoded and decoded only when a prompt is served.

Schema: jsonl files, WebDataset tar shards, or folders holding both. One prompt per jsonl line::

    {"prompt": "a red cube left of a blue ball",  # required; "instruction" is accepted instead (edits)
     "requirement": "exactly one cube",           # optional extra constraint for the critic's template
     "metadata": {"objects": [...]},              # optional JSON object, passed through (ShapesWorld's prompt)
     "source": "images/0001.png",                 # optional source image of an edit, relative to the jsonl's folder
     "key": "0001"}                               # optional stable id; the line number when absent

FIRM's EditRL layout, which ``firm world prompts`` writes, names the source ``image`` and the key ``id``; both are
accepted (giving a field under both names is an error). In a shard, the same fields are the sample's ``json`` member,
the source image is its ``src.png`` (or ``src.jpg``) member and the key defaults to ``__key__``. A prompt's key is
``<file name>:<key>``, so that keys from different files do not collide.

Bad lines (not JSON, no prompt, a field of the wrong type, an unreadable source image, a repeated key) are skipped,
each with a warning naming ``file:line`` (``shard:key`` in shards) and the reason, and counted by kind
(:attr:`RLPromptDataModule.skipped`); ``strict=True`` raises :class:`~firm.errors.InputError` on the first one.

Stream: epoch ``e`` of the training set is a permutation seeded by ``(seed, e)``; index ``i`` of it goes to rank
``i % world_size``. A rank's stream is its parts of epochs 0, 1, 2... end to end, cut into batches of
``prompts_per_step``; a batch may straddle two epochs. Since every rank consumes one batch per step, the number of
batches consumed is the whole resume state, the same on every rank (see :meth:`RLPromptDataModule.state_dict`).

Example:
    >>> data = RLPromptDataModule(train="prompts/train.jsonl", eval="prompts/eval.jsonl", prompts_per_step=4)
    >>> batch = next(iter(data.train_dataloader()))  # list[RLPrompt] of 4
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from webdataset.tariterators import tarfile_samples

from firm.data.schema import IMAGE_MEMBERS
from firm.data.stream import expand_shards, is_local
from firm.errors import InputError

__all__ = ["RLPrompt", "RLPromptDataModule", "epoch_order", "rank_batches", "read_rl_prompts"]

log = logging.getLogger(__name__)

#: File types a prompt set is read from (a folder contributes every such file directly inside it).
PROMPT_SUFFIXES = (".jsonl", ".tar")


@dataclass(frozen=True)
class RLPrompt:
    """One prompt of an RL prompt set.

    Attributes:
        key: stable id, ``<file name>:<key>``: the line's ``key`` (or ``id``), else its line number; in shards the
            sample's ``__key__``.
        prompt: the generation prompt or edit instruction.
        requirement: an optional extra constraint handed to the critic (``JudgeRequest.requirement``).
        metadata: any JSON object given with the prompt, e.g. ShapesWorld's structured prompt.
        source: the source image of an edit; None for generation.
    """

    key: str
    prompt: str
    requirement: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: Image.Image | None = None


# -- reading ------------------------------------------------------------------------------------------------------


class _BadLine(Exception):
    """A line or shard sample that is skipped (or raised with ``strict``): its kind and the reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class _Entry:
    """A prompt as held in memory: the source image still encoded (decoded images of thousands of edits are GBs)."""

    key: str
    prompt: str
    requirement: str
    metadata: dict[str, Any]
    source: bytes | None

    def materialise(self) -> RLPrompt:
        return RLPrompt(self.key, self.prompt, self.requirement, self.metadata, _decode(self.source, "source"))


def _decode(data: bytes | None, what: str) -> Image.Image | None:
    if data is None:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as err:  # PIL raises several unrelated types for corrupt data
        raise _BadLine("bad_source", f"{what} is not a decodable image ({type(err).__name__}: {err})") from None
    return image


def _one_of(fields: dict[str, Any], name: str, alias: str) -> Any:
    if name in fields and alias in fields:
        raise _BadLine("bad_field", f"give {name!r} or {alias!r}, not both")
    return fields.get(name, fields.get(alias))


def _entry(fields: Any, file: str, default_key: str, load_source: Callable[[Any], bytes]) -> _Entry:
    """The prompt of one parsed line or ``json`` member; raises :class:`_BadLine` for what is unusable."""
    if not isinstance(fields, dict):
        raise _BadLine("bad_json", f"a JSON {type(fields).__name__}, not an object")
    prompt = _one_of(fields, "prompt", "instruction")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _BadLine("no_prompt", f"'prompt' (or 'instruction') must be a non-empty string, got {prompt!r}")
    requirement = fields.get("requirement", "")
    if not isinstance(requirement, str):
        raise _BadLine("bad_field", f"'requirement' must be a string, got {requirement!r}")
    metadata = fields.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _BadLine("bad_field", f"'metadata' must be a JSON object, got {type(metadata).__name__}")
    key = _one_of(fields, "key", "id")
    if key is None:
        key = default_key
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        raise _BadLine("bad_field", f"'key' must be a non-empty string or an integer, got {key!r}")
    reference = _one_of(fields, "source", "image")
    source = None if reference is None else load_source(reference)
    _decode(source, "the source image")
    return _Entry(f"{file}:{key}", prompt, requirement, metadata, source)


def _jsonl_entries(path: Path) -> Iterator[tuple[str, _Entry | _BadLine]]:
    def load_source(reference: Any) -> bytes:
        if not isinstance(reference, str) or not reference:
            raise _BadLine("bad_field", f"'source' must be a path, got {reference!r}")
        image = path.parent / reference  # an absolute reference replaces the folder
        if not image.is_file():
            raise _BadLine("bad_source", f"source image not found: {image}")
        return image.read_bytes()

    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                fields = json.loads(line)
                yield where, _entry(fields, path.name, str(number), load_source)
            except _BadLine as bad:
                yield where, bad
            except ValueError as err:  # includes bytes that are not UTF-8
                yield where, _BadLine("bad_json", f"not JSON ({err})")


def _shard_entries(path: Path) -> Iterator[tuple[str, _Entry | _BadLine]]:
    def no_path(reference: Any) -> bytes:
        raise _BadLine("bad_field", "a shard sample carries its source image as a src.png member, not a path")

    for sample in tarfile_samples([{"url": str(path)}]):
        key = sample["__key__"]
        where = f"{path}:{key}"
        try:
            if "json" not in sample:
                raise _BadLine("missing_member", "no 'json' member")
            try:
                fields = json.loads(sample["json"])
            except ValueError as err:
                raise _BadLine("bad_json", f"member 'json' is not JSON ({err})") from None
            entry = _entry(fields, path.name, key, no_path)
            member = next((name for name in IMAGE_MEMBERS["src"] if name in sample), None)
            if member is not None:
                _decode(sample[member], f"member {member!r}")
                entry = _Entry(entry.key, entry.prompt, entry.requirement, entry.metadata, sample[member])
            yield where, entry
        except _BadLine as bad:
            yield where, bad


def _prompt_files(paths: str | Sequence[str]) -> list[Path]:
    if not isinstance(paths, str) and not paths:
        raise InputError("no prompt files given: name .jsonl files, .tar shards or folders of them")
    files: list[Path] = []
    for url in expand_shards(paths):
        if not is_local(url):
            raise InputError(f"prompt sets are read from local files, got {url!r}; copy it to this machine first")
        path = Path(url.removeprefix("file://").removeprefix("file:"))
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in PROMPT_SUFFIXES and p.is_file())
        elif not path.exists():
            raise InputError(f"prompt file not found: {path}")
        elif path.suffix not in PROMPT_SUFFIXES:
            raise InputError(f"prompt file {path} is neither .jsonl nor .tar")
        else:
            files.append(path)
    return files


def _read_entries(paths: str | Sequence[str], strict: bool) -> tuple[list[_Entry], Counter[str]]:
    files = _prompt_files(paths)
    entries: list[_Entry] = []
    skipped: Counter[str] = Counter()
    first_seen: dict[str, str] = {}
    for path in files:
        read = _jsonl_entries(path) if path.suffix == ".jsonl" else _shard_entries(path)
        for where, found in read:
            if isinstance(found, _Entry) and found.key in first_seen:
                found = _BadLine("duplicate_key", f"key {found.key!r} repeats {first_seen[found.key]}")
            if isinstance(found, _BadLine):
                if strict:
                    raise InputError(f"{where}: {found.reason} (strict=False skips such lines)")
                log.warning("skipping prompt %s: %s", where, found.reason)
                skipped[found.kind] += 1
                continue
            first_seen[found.key] = where
            entries.append(found)
    names = ", ".join(str(p) for p in files) or "nothing"
    if skipped:
        log.warning(
            "skipped %d of %d prompts (%s) in %s",
            sum(skipped.values()), sum(skipped.values()) + len(entries), dict(skipped), names,
        )  # fmt: skip
    if not entries:
        raise InputError(
            f"no usable prompts in {paths!r}: read {len(files)} file(s) ({names}), skipped {sum(skipped.values())} "
            f"bad line(s) {dict(skipped)}"
        )
    return entries, skipped


def read_rl_prompts(paths: str | Sequence[str], strict: bool = False) -> list[RLPrompt]:
    """Every usable prompt of a prompt set, in file order (files in the order given, a folder's files by name).

    Args:
        paths: a ``.jsonl`` file, a ``.tar`` shard, a brace pattern (``prompts-{000..003}.tar``), a folder (its
            ``*.jsonl`` and ``*.tar`` files), or a list of these; local paths only.
        strict: raise on the first bad line instead of skipping it with a warning.

    Returns:
        The prompts, source images decoded.

    Raises:
        InputError: for a missing file or one of another type, a bad line with ``strict``, or no usable prompt.
    """
    entries, _ = _read_entries(paths, strict)
    return [entry.materialise() for entry in entries]


# -- the stream ---------------------------------------------------------------------------------------------------


def epoch_order(size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order of prompts ``0..size-1`` in ``epoch``: a permutation seeded by ``(seed, epoch)``, or file order."""
    order = list(range(size))
    if shuffle:
        # String seeds hash with SHA-512 in CPython, independent of PYTHONHASHSEED: the same in every process.
        random.Random(f"rl-prompts/{seed}/{epoch}").shuffle(order)
    return order


def rank_batches(
    size: int, rank: int, world_size: int, per_step: int, *, seed: int, shuffle: bool = True, start: int = 0
) -> Iterator[list[int]]:
    """The prompt indices of every batch of ``rank``, from batch ``start`` on, forever.

    Index ``i`` of each epoch's order goes to rank ``i % world_size``; the rank's parts of successive epochs are
    cut into batches of ``per_step``. Skipping ``start`` batches costs nothing.

    Raises:
        ValueError: when the rank gets no prompt (fewer prompts than ranks).
    """
    share = len(range(rank, size, world_size))
    if share == 0:
        raise ValueError(f"{size} prompt(s) cannot give each of {world_size} ranks one")
    offset = start * per_step
    epoch, within = divmod(offset, share)
    mine = epoch_order(size, seed, epoch, shuffle)[rank::world_size]
    while True:
        batch: list[int] = []
        while len(batch) < per_step:
            if within == share:
                epoch, within = epoch + 1, 0
                mine = epoch_order(size, seed, epoch, shuffle)[rank::world_size]
            take = mine[within : within + per_step - len(batch)]
            batch += take
            within += len(take)
        yield batch


# -- the datamodule -----------------------------------------------------------------------------------------------


class _Batches(IterableDataset[list[RLPrompt]]):
    """Whole batches from a generator function, called anew at each iteration.

    Iterable so that Lightning never wraps it in a DistributedSampler: ranks are split here, not by the loader.
    """

    def __init__(self, batches: Callable[[], Iterator[list[RLPrompt]]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[RLPrompt]]:
        return self.batches()


def _as_is(batch: list[RLPrompt]) -> list[RLPrompt]:
    return batch


def _loader(batches: Callable[[], Iterator[list[RLPrompt]]]) -> DataLoader:
    # batch_size=None with an identity collate hands PIL images and dicts through untouched.
    return DataLoader(_Batches(batches), batch_size=None, num_workers=0, collate_fn=_as_is)


class RLPromptDataModule(pl.LightningDataModule):
    """Prompts for RL fine-tuning: an endless, seeded, rank-split training stream and a fixed evaluation set.

    Training batches are ``list[RLPrompt]`` of ``prompts_per_step``; the loader never ends, so bound training with
    ``trainer.max_steps`` and validate every N steps with an integer ``trainer.val_check_interval`` (and
    ``check_val_every_n_epoch: null``). Resuming a checkpoint continues with the very batch an uninterrupted run would
    have taken next (see :meth:`state_dict`).

    Args:
        train: training prompts: a ``.jsonl`` file, a ``.tar`` shard, a brace pattern, a folder, or a list of these
            (schema in the module docstring).
        eval: evaluation prompts, same forms; None for no validation.
        prompts_per_step: prompts per batch on each rank (each sampled as a group of images by the task).
        eval_prompts: evaluate on the first this many evaluation prompts (file order); None for all of them.
        seed: seed of each epoch's permutation of the training prompts.
        shuffle: permute the training prompts each epoch; off, every epoch is in file order.
        strict: raise on the first bad line instead of skipping it with a warning.
        share_prompts: every rank takes the same training prompts each step, so that a prompt's group is its images
            on all ranks (an RL task then sees groups of ``group_size x world_size`` images spanning ranks, as
            flow_grpo's distributed sampler makes them); off, ranks take disjoint prompts.

    Raises:
        ValueError: for ``prompts_per_step`` or ``eval_prompts`` below 1.
    """

    def __init__(
        self,
        train: str | list[str],
        eval: str | list[str] | None = None,
        prompts_per_step: int = 1,
        eval_prompts: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        strict: bool = False,
        share_prompts: bool = False,
    ) -> None:
        super().__init__()
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be at least 1, got {prompts_per_step}")
        if eval_prompts is not None and eval_prompts < 1:
            raise ValueError(f"eval_prompts must be at least 1 or None (all), got {eval_prompts}")
        if eval is None and eval_prompts is not None:
            log.warning("eval_prompts=%d is ignored: there is no eval prompt set", eval_prompts)
        self.train_paths = train
        self.eval_paths = eval
        self.prompts_per_step = prompts_per_step
        self.eval_prompts = eval_prompts
        self.seed = seed
        self.shuffle = shuffle
        self.strict = strict
        self.share_prompts = share_prompts
        #: Bad lines skipped while reading, by set ("train", "eval") and kind.
        self.skipped: dict[str, dict[str, int]] = {}
        self._sets: dict[str, list[_Entry]] = {}
        self._consumed = 0
        self._saved: dict[str, Any] | None = None

    # -- prompt sets ------------------------------------------------------------------------------------------------

    def _entries(self, name: str, paths: str | list[str]) -> list[_Entry]:
        if name not in self._sets:
            self._sets[name], skipped = _read_entries(paths, self.strict)
            self.skipped[name] = dict(skipped)
        return self._sets[name]

    @property
    def train_set(self) -> list[RLPrompt]:
        """The training prompts in file order (read on first use), source images decoded."""
        return [entry.materialise() for entry in self._entries("train", self.train_paths)]

    @property
    def eval_set(self) -> list[RLPrompt]:
        """The evaluation prompts used (the first ``eval_prompts``, file order); empty without an eval set."""
        return [entry.materialise() for entry in self._eval_entries()]

    def _eval_entries(self) -> list[_Entry]:
        if self.eval_paths is None:
            return []
        first_read = "eval" not in self._sets
        entries = self._entries("eval", self.eval_paths)
        if first_read and self.eval_prompts is not None and self.eval_prompts > len(entries):
            log.warning("eval_prompts=%d, but the eval set holds %d: using all", self.eval_prompts, len(entries))
        return entries[: self.eval_prompts]

    def _rank_world(self) -> tuple[int, int]:
        """(global rank, world size) of the trainer, or (0, 1) outside one."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _train_rank_world(self) -> tuple[int, int]:
        """Where this rank's training prompts come from: its own part, or (share_prompts) the whole stream."""
        return (0, 1) if self.share_prompts else self._rank_world()

    # -- loaders ----------------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        """The endless training stream of this rank, continuing at :attr:`batches_served`."""
        return _loader(self._train_batches)

    def val_dataloader(self) -> DataLoader | list[Any]:
        """The evaluation prompts of this rank in batches of ``prompts_per_step``; ``[]`` without an eval set.

        The set is split like the training stream (prompt ``i`` to rank ``i % world_size``) and padded by repeating
        its first prompts, as DistributedSampler does, so that every rank runs the same number of batches (sharded
        models deadlock otherwise). Repeats keep their key: deduplicate by key where a metric must count each once.
        """
        if self.eval_paths is None:
            return []
        return _loader(self._eval_batches)

    def _train_batches(self) -> Iterator[list[RLPrompt]]:
        # A generator: none of this runs until the first next(), so a position restored after the loader was
        # created still applies.
        entries = self._entries("train", self.train_paths)
        rank, world = self._train_rank_world()
        self._check_resume(len(entries), world)
        share = len(range(rank, len(entries), world))
        if 0 < share < self.prompts_per_step:
            log.warning(
                "prompts_per_step=%d exceeds the %d training prompts of rank %d: batches repeat prompts",
                self.prompts_per_step, share, rank,
            )  # fmt: skip
        if share == 0:
            raise InputError(
                f"{len(entries)} training prompt(s) in {self.train_paths!r} cannot give each of {world} ranks one"
            )
        batches = rank_batches(
            len(entries), rank, world, self.prompts_per_step, seed=self.seed, shuffle=self.shuffle,
            start=self._consumed,
        )  # fmt: skip
        for indices in batches:
            batch = [entries[i].materialise() for i in indices]
            if self.trainer is None:
                # Under a trainer, on_before_batch_transfer counts (Lightning fetches one batch ahead).
                self._consumed += 1
            yield batch

    def _eval_batches(self) -> Iterator[list[RLPrompt]]:
        entries = self._eval_entries()
        rank, world = self._rank_world()
        per_rank = -(-len(entries) // world)
        mine = [entries[i % len(entries)] for i in range(rank, per_rank * world, world)]
        for start in range(0, len(mine), self.prompts_per_step):
            yield [entry.materialise() for entry in mine[start : start + self.prompts_per_step]]

    # -- hooks ------------------------------------------------------------------------------------------------------

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count a training batch as consumed when the trainer takes it for a step (not when it is prefetched)."""
        if self.trainer is not None and self.trainer.training:
            self._consumed += 1
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Leave prompts on the host: they hold text and PIL images, and Lightning's default transfer refuses frozen
        dataclasses."""
        return batch

    # -- resumable position -----------------------------------------------------------------------------------------

    @property
    def batches_served(self) -> int:
        """Training batches this rank has consumed, counting those before a resume: the next batch's index."""
        return self._consumed

    def _layout(self, size: int, world: int) -> dict[str, Any]:
        return {
            "prompts": size, "world_size": world, "prompts_per_step": self.prompts_per_step, "shuffle": self.shuffle,
        }  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The training position: ``epoch`` (of this rank's next prompt; informative), ``position`` (batches
        consumed, the same on every rank, since each consumes one per step), ``seed`` and the ``layout`` that
        ``position`` refers to (training prompts, world size, prompts per step, shuffle)."""
        size = len(self._entries("train", self.train_paths))
        rank, world = self._train_rank_world()
        share = max(len(range(rank, size, world)), 1)
        return {
            "epoch": self._consumed * self.prompts_per_step // share,
            "position": self._consumed,
            "seed": self.seed,
            "layout": self._layout(size, world),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue at the saved position: the next training batch is batch ``position`` of the stream."""
        if not state_dict:
            return
        self._consumed = int(state_dict["position"])
        self._saved = dict(state_dict)

    def _check_resume(self, size: int, world: int) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        now = {"seed": self.seed, **self._layout(size, world)}
        before = {"seed": saved["seed"], **saved["layout"]}
        if now != before:
            log.warning(
                "the checkpoint's prompt stream was %s, now %s: continuing at batch %d of the new stream, which is "
                "not the batch the interrupted run would have taken next",
                before, now, self._consumed,
            )  # fmt: skip

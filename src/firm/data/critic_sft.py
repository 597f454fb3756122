"""Critic SFT data: WebDataset shards of critic samples streamed into padded, label-masked chat batches.

:class:`CriticSFTDataModule` reads the shards that ``firm curate`` and ``firm world shards`` write (the schema of
:mod:`firm.data.schema`), from local paths, brace patterns or ``pipe:`` URLs. Each rank runs the same number of
batches per epoch (``samples // (world_size * batch_size)``, the tail dropped), each dataloader worker a fixed share
of them, filled from a deterministic stream (see :mod:`firm.data.stream`). Because of that, resuming a checkpoint
taken mid-epoch continues with the very batches an uninterrupted run would have seen next: the datamodule records,
for every worker of every rank, how far its stream had been consumed, and saves that in the checkpoint.

Bad samples (a corrupt image, a missing member, an out-of-range score, a broken JSON member) are skipped, logged with
their shard and key, and counted per kind in each batch's ``skipped`` entry, which the task logs as metrics
(``data/skipped_<kind>``); with ``strict=True`` the first one raises :class:`BadSampleError` naming shard and key.
Samples longer than ``max_length`` are skipped and counted as ``too_long`` in both modes.

Example:
    >>> data = CriticSFTDataModule(train="shards/train-{000..007}.tar", val="shards/val-000.tar", batch_size=4)
    >>> data.use_processor(processor)  # else the processor of the task being trained
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import ProcessorMixin

from firm.critics.base import DIMENSIONS, JudgeRequest, task_of
from firm.data.plan import EpochPlan, resumed_plan
from firm.data.schema import CriticSample, SampleError, from_wds
from firm.data.sft import build_sft_example, chat_prompt, collate_sft, request_of
from firm.data.stream import RawSample, ShardStream, Split, count_samples, expand_shards, resolve_split
from firm.errors import InputError
from firm.prompts import PromptTemplate, default_template, load_template

__all__ = [
    "SKIP_KINDS",
    "BadSampleError",
    "CriticSFTDataModule",
    "CriticSFTDataset",
    "JudgeInputs",
    "SFTEncoder",
    "skip_kind",
]

log = logging.getLogger(__name__)


class BadSampleError(ValueError):
    """A bad sample met with ``strict=True``: names the shard, the key and the problem."""

    def __init__(self, shard: str, error: SampleError) -> None:
        super().__init__(f"shard {shard}: {error}")
        self.shard = shard
        self.key = error.key
        self.problem = error.problem


#: The kinds a skipped sample is counted under.
SKIP_KINDS = ("corrupt_image", "missing_member", "bad_score", "bad_json", "invalid_sample", "too_long")


def skip_kind(error: SampleError) -> str:
    """The metric name a skipped sample is counted under: corrupt_image, missing_member, bad_score, bad_json,
    too_long or invalid_sample."""
    return error.kind


class SFTEncoder:
    """Turns a critic sample into an SFT example (tensors) with the critic's processor and templates.

    Args:
        processor: the critic's processor.
        templates: dimension -> template; dimensions not listed use firm's default template.
        max_length: longest example in tokens; None for no limit.
    """

    def __init__(
        self,
        processor: ProcessorMixin,
        templates: Mapping[str, PromptTemplate] | None = None,
        max_length: int | None = None,
    ) -> None:
        chosen = dict(templates or {})
        self.processor = processor
        self.templates = {dim: chosen.get(dim) or default_template(dim) for dim in DIMENSIONS}
        self.max_length = max_length
        pad = processor.tokenizer.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token so that batches can be padded")
        self.pad_token_id: int = pad

    def prompt(self, sample: CriticSample) -> str:
        """The chat prompt of ``sample``, as the judge writes it at inference."""
        return chat_prompt(self.processor, request_of(sample), self.templates[sample.dimension])

    def __call__(self, sample: CriticSample, prompt: str | None = None) -> dict[str, torch.Tensor]:
        return build_sft_example(self.processor, sample, self.templates[sample.dimension], self.max_length, prompt)


class CriticSFTDataset(IterableDataset[dict[str, Any]]):
    """The examples of one rank for one epoch, each dataloader worker playing one role of :class:`EpochPlan`.

    Args:
        stream: the shards and their shuffling.
        encoder: sample -> tensors.
        rank: this process's global rank.
        workers: dataloader workers per rank (1 when loading in the main process).
        batches: batches this rank runs per epoch (the quota of every rank).
        batch_size: examples per batch.
        strict: raise :class:`BadSampleError` on the first bad sample instead of skipping it.
        keep_requests: also yield the judge request and prompt of each example (validation generates verdicts).
    """

    def __init__(
        self,
        stream: ShardStream,
        encoder: SFTEncoder,
        *,
        rank: int,
        workers: int,
        batches: int,
        batch_size: int,
        strict: bool = False,
        keep_requests: bool = False,
    ) -> None:
        self.stream = stream
        self.encoder = encoder
        self.rank = rank
        self.workers = max(workers, 1)
        self.batches = batches
        self.batch_size = batch_size
        self.strict = strict
        self.keep_requests = keep_requests
        self.plan = EpochPlan.fresh(stream.epoch, self.workers, batches, batch_size)

    def __len__(self) -> int:
        # The full epoch, also after a resume: Lightning's restored batch counter accounts for what was done.
        return self.batches * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise ValueError(f"dataset planned for {self.workers} workers runs in a loader with {workers}")
        role = (worker + self.plan.rotation) % workers
        start = self.plan.roles[role]
        if start.quota <= 0:
            return
        stream = dataclasses.replace(self.stream, epoch=self.plan.epoch)
        slot = self.rank * workers + role
        left, emitted = start.quota, start.emitted
        skipped: Counter[str] = Counter()
        for pass_index, position, raw in stream.samples(slot, start.position):
            item = self._encode(raw, skipped)
            if item is None:
                continue
            emitted += 1
            left -= 1
            # Samples of later passes only fill the quota; validation metrics count each sample once.
            item["real"] = pass_index == 0
            item["stream"] = (role, position + 1, emitted)
            item["skipped"] = dict(skipped)
            skipped.clear()
            yield item
            if left == 0:
                return

    def _encode(self, raw: RawSample, skipped: Counter[str]) -> dict[str, Any] | None:
        try:
            sample = from_wds(raw)
            prompt = self.encoder.prompt(sample)
            tensors = self.encoder(sample, prompt)
        except SampleError as err:
            kind = skip_kind(err)
            if self.strict and kind != "too_long":
                raise BadSampleError(str(raw.get("__url__")), err) from None
            log.warning("skipping sample (%s) in shard %s: %s", kind, raw.get("__url__"), err)
            skipped[kind] += 1
            return None
        item: dict[str, Any] = {
            "tensors": tensors,
            "key": sample.key,
            "score": sample.score,
            "dimension": sample.dimension,
        }
        if self.keep_requests:
            item["request"] = request_of(sample)
            item["prompt"] = prompt
        return item


class JudgeInputs:
    """The judge requests of a validation batch and their chat prompts.

    A plain holder rather than a list or dataclass: Lightning's batch transfer walks lists and refuses frozen
    dataclasses, and these stay on the host anyway.
    """

    def __init__(self, requests: list[JudgeRequest], prompts: list[str]) -> None:
        self.requests = requests
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.requests)


class CriticBatchCollator:
    """Collates dataset items: model tensors under ``inputs``, bookkeeping beside them.

    A batch holds ``inputs`` (see :func:`~firm.data.sft.collate_sft`), ``scores`` [B], ``real`` [B] (False for
    validation samples repeated to fill a quota), ``keys``, ``dimensions``, ``skipped`` (bad samples met since the
    previous batch of the same worker, by kind), ``stream`` (worker role, stream position, examples emitted) and,
    when the dataset keeps them, ``judge`` (:class:`JudgeInputs`).
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        skipped: Counter[str] = Counter()
        for item in items:
            skipped.update(item["skipped"])
        role, position, emitted = items[-1]["stream"]
        batch: dict[str, Any] = {
            "inputs": collate_sft([item["tensors"] for item in items], self.pad_token_id),
            "scores": torch.tensor([item["score"] for item in items]),
            "real": torch.tensor([item["real"] for item in items]),
            "keys": [item["key"] for item in items],
            "dimensions": [item["dimension"] for item in items],
            "skipped": dict(skipped),
            "stream": {"role": role, "position": position, "emitted": emitted},
        }
        if "request" in items[0]:
            batch["judge"] = JudgeInputs([item["request"] for item in items], [item["prompt"] for item in items])
        return batch


class _PlannedLoader(DataLoader):
    """A DataLoader that asks for the epoch's plan each time it is iterated (workers fork with it)."""

    def __init__(self, dataset: CriticSFTDataset, plan: Callable[[], EpochPlan], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self._plan = plan

    def __iter__(self) -> Any:
        dataset = self.dataset
        assert isinstance(dataset, CriticSFTDataset)
        dataset.plan = self._plan()
        return super().__iter__()


class CriticSFTDataModule(pl.LightningDataModule):
    """Streams critic-sample shards into SFT batches for :class:`~firm.tasks.critic_sft.CriticSFTTask`.

    Args:
        train: training shards: a path, a brace pattern (``data/train-{000..015}.tar``), a ``pipe:`` URL, or a list.
        val: validation shards, same forms; None for no validation.
        test: test shards for ``firm test`` (token loss, MAE and invalid rate like validation); None for none.
        processor: hub id or folder to load the critic's processor from; None uses the processor of the task being
            trained (``trainer.lightning_module.processor``), which is what you want in a recipe.
        batch_size: examples per batch per rank (the micro-batch; global batch = batch_size x ranks x accumulation).
        val_batch_size: examples per validation (and test) batch; ``batch_size`` when None.
        num_workers: dataloader worker processes per rank; 0 loads in the training process.
        shuffle_buffer: training samples held in the shuffle buffer of each worker (1 turns sample shuffling off).
        seed: seed of the shard order and the shuffle buffers.
        split: how shards are divided between ranks and workers: ``shard`` (whole shards; needs at least one shard
            per rank x worker), ``sample`` (every k-th sample of every shard; each worker reads all shards) or
            ``auto`` (``shard`` when there are enough shards).
        num_train_samples: samples in the training shards; counted from the tar headers when None (local shards only).
        num_val_samples: samples in the validation shards; counted when None (local shards only).
        num_test_samples: samples in the test shards; counted when None (local shards only).
        templates: dimension -> built-in template name or template file; dimensions not listed use firm's default.
            Use the same templates when you serve the trained critic.
        max_length: longest example in tokens (prompt, images and answer); longer samples are skipped and counted.
        max_pixels: cap on an image's pixel count after the processor's resize; the processor's own when None. It is
            set on the processor, so an exported critic keeps it.
        min_pixels: floor on an image's pixel count after the processor's resize; the processor's own when None.
        strict: raise on the first bad sample (naming shard and key) instead of skipping and counting it.

    Raises:
        ValueError: for a batch size or worker count below its minimum, or an unknown dimension in ``templates``.
    """

    def __init__(
        self,
        train: str | list[str] | None = None,
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        *,
        processor: str | None = None,
        batch_size: int = 1,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        shuffle_buffer: int = 1000,
        seed: int = 42,
        split: Split = "auto",
        num_train_samples: int | None = None,
        num_val_samples: int | None = None,
        num_test_samples: int | None = None,
        templates: dict[str, str] | None = None,
        max_length: int | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(
                f"batch sizes must be at least 1, got batch_size={batch_size}, val_batch_size={val_batch_size}"
            )
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        for dimension in templates or {}:
            task_of(dimension)
        self.train_urls = train
        self.val_urls = val
        self.test_urls = test
        self.processor_source = processor
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.split = split
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.num_test_samples = num_test_samples
        self.template_names = dict(templates or {})
        self.max_length = max_length
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels
        self.strict = strict
        self._processor: ProcessorMixin | None = None
        self._encoder: SFTEncoder | None = None
        self._counts: dict[str, int] = {}
        # Training progress of this rank in the current epoch: batches consumed and, per worker role, the stream
        # position and examples emitted up to the last consumed batch.
        self._epoch = -1
        self._consumed = 0
        self._roles: list[tuple[int, int]] = []
        self._resume: dict[str, Any] | None = None

    # -- processor and encoder ------------------------------------------------------------------------------------

    def use_processor(self, processor: ProcessorMixin) -> None:
        """Use this processor (instead of loading ``processor`` or asking the task)."""
        self._processor = processor
        self._encoder = None

    @property
    def processor(self) -> ProcessorMixin:
        """The critic's processor, with ``max_pixels`` / ``min_pixels`` applied."""
        if self._processor is None:
            if self.processor_source is not None:
                from firm.critics.hf import load_processor, model_type_of

                self._processor = load_processor(self.processor_source, model_type_of(self.processor_source))
            else:
                module = self.trainer.lightning_module if self.trainer is not None else None
                found = getattr(module, "processor", None)
                if found is None:
                    raise ValueError(
                        "no processor: give CriticSFTDataModule(processor=...) or train a task that has one"
                    )
                self._processor = found
        _apply_pixel_limits(self._processor, self.max_pixels, self.min_pixels)
        return self._processor

    @property
    def encoder(self) -> SFTEncoder:
        """The sample -> tensors encoder built on :attr:`processor`."""
        if self._encoder is None:
            templates = {dim: load_template(name) for dim, name in self.template_names.items()}
            self._encoder = SFTEncoder(self.processor, templates, self.max_length)
        return self._encoder

    # -- layout -----------------------------------------------------------------------------------------------------

    def _layout(self) -> tuple[int, int]:
        """(world size, global rank) of the trainer, or (1, 0) outside one."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _count(self, name: str, shards: Sequence[str], given: int | None) -> int:
        if given is not None:
            return given
        if name not in self._counts:
            self._counts[name] = count_samples(shards)
        return self._counts[name]

    def _stream(self, urls: str | list[str], shuffle: bool, epoch: int = 0) -> ShardStream:
        shards = expand_shards(urls)
        world, _ = self._layout()
        slots = world * max(self.num_workers, 1)
        return ShardStream(
            tuple(shards), slots, resolve_split(self.split, len(shards), slots), self.seed, epoch, shuffle,
            self.shuffle_buffer,
        )  # fmt: skip

    def train_batches(self) -> int:
        """Batches per rank per epoch: ``num_train_samples // (world_size * batch_size)``.

        Raises:
            ValueError: when there are fewer samples than one batch on every rank.
        """
        if self.train_urls is None:
            raise ValueError("no training shards: set CriticSFTDataModule(train=...)")
        world, _ = self._layout()
        samples = self._count("train", expand_shards(self.train_urls), self.num_train_samples)
        batches = samples // (world * self.batch_size)
        if batches < 1:
            raise ValueError(
                f"{samples} training samples make no full batch of {self.batch_size} on each of {world} rank(s)"
            )
        return batches

    def val_batches(self) -> int:
        """Validation batches per rank: every sample once, the last batches filled with repeats."""
        assert self.val_urls is not None
        return self._evaluation_batches("val", self.val_urls, self.num_val_samples)

    def test_batches(self) -> int:
        """Test batches per rank, counted like :meth:`val_batches`."""
        assert self.test_urls is not None
        return self._evaluation_batches("test", self.test_urls, self.num_test_samples)

    def _evaluation_batches(self, name: str, urls: str | list[str], given: int | None) -> int:
        world, _ = self._layout()
        samples = self._count(name, expand_shards(urls), given)
        return max(math.ceil(samples / (world * self.val_batch_size)), 1)

    # -- loaders ----------------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        assert self.train_urls is not None, "train_batches() checks this"
        batches = self.train_batches()
        _, rank = self._layout()
        dataset = CriticSFTDataset(
            self._stream(self.train_urls, shuffle=True),
            self.encoder,
            rank=rank,
            workers=self.num_workers,
            batches=batches,
            batch_size=self.batch_size,
            strict=self.strict,
        )
        return _PlannedLoader(dataset, self._train_plan, **self._loader_kwargs(self.batch_size))

    def val_dataloader(self) -> DataLoader | list[Any]:
        if self.val_urls is None:
            return []
        return self._evaluation_loader(self.val_urls, self.val_batches())

    def test_dataloader(self) -> DataLoader:
        if self.test_urls is None:
            raise InputError(f"no test data: {self.missing_test_hint()}")
        return self._evaluation_loader(self.test_urls, self.test_batches())

    def missing_test_hint(self) -> str:
        """How to give this datamodule test data (subclasses that make their own data say their setting)."""
        return "give test shards, e.g. --data.init_args.test 'shards/test-{000000..000003}.tar' (test: in a recipe)"

    def predict_dataloader(self) -> DataLoader:
        raise InputError(
            "critic SFT has no predict step: export the trained critic (HFExport, or firm export CHECKPOINT OUT) and "
            "score with it: firm bench --model OUT ... for scored data, firm score --model OUT ... for new samples"
        )

    def _evaluation_loader(self, urls: str | list[str], batches: int) -> DataLoader:
        _, rank = self._layout()
        dataset = CriticSFTDataset(
            self._stream(urls, shuffle=False),
            self.encoder,
            rank=rank,
            workers=self.num_workers,
            batches=batches,
            batch_size=self.val_batch_size,
            strict=self.strict,
            keep_requests=True,
        )
        return DataLoader(dataset, **self._loader_kwargs(self.val_batch_size))

    def _loader_kwargs(self, batch_size: int) -> dict[str, Any]:
        return {
            "batch_size": batch_size,
            "num_workers": self.num_workers,
            "collate_fn": CriticBatchCollator(self.encoder.pad_token_id),
            # Workers must see the plan set just before each epoch's iteration, so they cannot persist.
            "persistent_workers": False,
        }

    # -- resumable position -----------------------------------------------------------------------------------------

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _train_plan(self) -> EpochPlan:
        """The plan of the epoch about to start: continue a restored position, or start the epoch afresh."""
        epoch = self._current_epoch()
        workers = max(self.num_workers, 1)
        batches = self.train_batches()
        plan = EpochPlan.fresh(epoch, workers, batches, self.batch_size)
        consumed = 0
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == epoch:
            consumed = int(resume["consumed"])
            world, rank = self._layout()
            layout = [world, workers, self.batch_size, batches]
            if resume["layout"] == layout:
                plan = resumed_plan(epoch, workers, batches, self.batch_size, consumed, resume["roles"][rank])
            else:
                log.warning(
                    "the checkpoint's data layout [world size, workers, batch size, batches] was %s, now %s: "
                    "the data position cannot be restored; the epoch's remaining %d batches restart from its start",
                    resume["layout"], layout, batches - consumed,
                )  # fmt: skip
                plan = EpochPlan.fresh(epoch, workers, batches, self.batch_size, done=consumed)
        self._epoch = epoch
        self._consumed = consumed
        self._roles = [(start.position, start.emitted) for start in plan.roles]
        return plan

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record the stream position of each training batch as the trainer takes it (prefetched batches are not
        counted until they are used)."""
        if self.trainer is not None and self.trainer.training and isinstance(batch, dict) and "stream" in batch:
            self.record_batch(batch)
        return batch

    def record_batch(self, batch: Mapping[str, Any]) -> None:
        """Count a training batch as consumed: its worker role's stream position is saved in the next checkpoint."""
        stream = batch["stream"]
        self._roles[stream["role"]] = (stream["position"], stream["emitted"])
        self._consumed += 1

    def state_dict(self) -> dict[str, Any]:
        """The training data position of every rank (gathered, so that rank 0's checkpoint holds them all)."""
        if self._epoch < 0:
            return {}
        roles: list[list[tuple[int, int]]] = [list(self._roles)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, list(self._roles))
            roles = gathered
        world, _ = self._layout()
        layout = [world, max(self.num_workers, 1), self.batch_size, self.train_batches()]
        return {"epoch": self._epoch, "consumed": self._consumed, "layout": layout, "roles": roles}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved position; it applies when the training loader of that epoch starts."""
        self._resume = dict(state_dict) if state_dict else None


def _apply_pixel_limits(processor: ProcessorMixin, max_pixels: int | None, min_pixels: int | None) -> None:
    if max_pixels is None and min_pixels is None:
        return
    image_processor = processor.image_processor
    if max_pixels is not None:
        image_processor.size["longest_edge"] = max_pixels
    if min_pixels is not None:
        image_processor.size["shortest_edge"] = min_pixels

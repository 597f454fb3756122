"""The curation pipelines: label every input through an annotator's stages, resumably, then write the shards.

A run has two phases.

1. **Label.** Inputs are read in order and labelled a batch at a time. Edits go *difference-first*: the annotator
   describes what differs between the two images (stage 1), a seeded fraction of instructions is rewritten so that
   they no longer match the edit (low-score balancing; the rewritten pair reuses the report, since the images are
   the same), then every pair is scored on each dimension given its report (stage 2). Generations go
   *plan-then-score*: the planner turns the prompt into a checklist (stage 1) and the annotator checks the image
   against it (stage 2); an optional quality pass adds the three quality sub-scores. A stage answer that cannot be
   used is retried ``retries`` times and then recorded as rejected with its reason: nothing is labelled by default.
   Each finished input is appended to ``labels.jsonl`` (a :class:`~firm.data.records.RecordStore`), so a rerun of
   the same command skips it, and a killed run loses at most the batch in flight. Inputs showing the same pixels and
   text as an earlier one (content hash) are recorded as duplicates and not labelled again.
2. **Write.** The labels are turned into critic samples (what the critic sees: the images and the text, never the
   report or the plan, which stay in the sample's ``evidence``), optionally rebalanced to a target score histogram,
   and written as WebDataset shards, each under a temporary name renamed into place when complete. The phase is
   deterministic and cheap (no annotator calls), so it simply runs again on every rerun; ``manifest.json`` (counts,
   histograms before and after, annotator and template versions) is written last.

Output folder::

    <output>/labels.jsonl                       one record per input: samples, or rejections with reasons
    <output>/curated-<task>-000000.tar ...      the critic samples (firm.data.schema), read by CriticSFTDataModule
    <output>/rejected.jsonl                     every rejection: input, stage, dimension, reason, raw answer
    <output>/manifest.json                      what the run did, for people and for the next run
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from firm.critics.base import dimensions_of, task_of
from firm.curation.balance import histogram, rebalance, selected_fraction
from firm.curation.base import (
    Annotator,
    CurationError,
    DifferenceReport,
    EditItem,
    GenItem,
    Item,
    Label,
    Plan,
    Rejected,
    StageUnsupported,
    content_hash,
)
from firm.curation.inputs import BadInput, read_items
from firm.curation.output import (
    ShardSet,
    critic_sample,
    duplicate_record,
    exclusive,
    finish,
    new_record,
    reject,
    sample_entry,
)
from firm.data.records import RecordError, RecordStore
from firm.data.shards import atomic_path

__all__ = ["CurateSettings", "Curation", "CurationError"]

log = logging.getLogger(__name__)

LABELS = "labels.jsonl"
MANIFEST = "manifest.json"
REJECTED = "rejected.jsonl"
RUN = "run.json"


@dataclass(frozen=True)
class CurateSettings:
    """How a curation run labels and writes.

    Attributes:
        task: ``edit`` (difference-first) or ``gen`` (plan-then-score).
        dimensions: the dimensions to label; the task's own by default (edit: execution and consistency; gen:
            instruction, plus quality when ``quality``).
        quality: gen only: also run the quality pass.
        retries: extra tries of a stage answer that cannot be used, before it is recorded as rejected.
        batch_size: inputs labelled together (remote annotators run a batch's calls concurrently).
        rewrite_fraction: edit only: the seeded share of inputs whose instruction is also rewritten so that it no
            longer matches the edit (each rewritten pair is an extra input, labelled by the same scoring stage).
        target_histogram: weights of scores 1-5 to rebalance each dimension to when writing; None keeps all.
        shard_size: samples per written shard.
        seed: decides which inputs are rewritten and which samples rebalancing keeps.
        strict: stop at the first unreadable input instead of counting and skipping it.
        retry_rejected: label again the inputs that an earlier run rejected.
        limit: label only the first ``limit`` readable inputs.
    """

    task: str
    dimensions: tuple[str, ...] = ()
    quality: bool = False
    retries: int = 2
    batch_size: int = 16
    rewrite_fraction: float = 0.0
    target_histogram: tuple[float, ...] | None = None
    shard_size: int = 1000
    seed: int = 0
    strict: bool = False
    retry_rejected: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.task not in ("edit", "gen"):
            raise CurationError(f"unknown task {self.task!r}; choose edit or gen")
        if self.task == "edit" and self.quality:
            raise CurationError("the quality pass belongs to generations (firm curate gen --quality)")
        if self.task == "gen" and self.rewrite_fraction:
            raise CurationError("instruction rewriting balances edits; it does not apply to generations")
        dims = self.dimensions or tuple(
            d for d in dimensions_of(self.task) if self.task == "edit" or d == "instruction" or self.quality
        )
        for dim in dims:
            try:
                owner = task_of(dim)
            except ValueError as err:
                raise CurationError(str(err)) from None
            if owner != self.task:
                raise CurationError(f"dimension {dim!r} is not judged on {self.task} inputs")
        object.__setattr__(self, "dimensions", tuple(dict.fromkeys(dims)))
        if self.retries < 0 or self.batch_size < 1 or self.shard_size < 1:
            raise CurationError("need retries >= 0, batch_size >= 1 and shard_size >= 1")
        if not 0.0 <= self.rewrite_fraction <= 1.0:
            raise CurationError(f"rewrite_fraction must be in [0, 1], got {self.rewrite_fraction}")
        if self.limit is not None and self.limit < 0:
            raise CurationError(f"limit must be >= 0, got {self.limit}")

    def identity(self) -> dict[str, Any]:
        """The settings that change labels: a rerun into the same folder must keep them."""
        return {
            "task": self.task,
            "dimensions": list(self.dimensions),
            "rewrite_fraction": self.rewrite_fraction,
            "seed": self.seed,
        }


@dataclass
class _Stats:
    read: int = 0
    labelled_now: int = 0
    skipped: int = 0
    duplicates_now: int = 0
    digests: dict[str, str] = field(default_factory=dict)  # input key -> content hash, as read this run
    samples_now: int = 0
    rejected_now: int = 0
    bad_inputs: list[dict[str, str]] = field(default_factory=list)


def _check_results(stage: str, annotator: Annotator, results: Sequence[Any], n: int) -> None:
    if len(results) != n:
        raise RuntimeError(f"annotator {annotator.name!r} returned {len(results)} {stage} results for {n} items")


class Curation:
    """One curation run: an annotator (and optionally a planner and a rewriter) labelling one input into one folder.

    Args:
        settings: what to label and how.
        annotator: answers the image stages (describe and score for edits; score and quality for generations).
        planner: writes generation plans; the annotator when None.
        rewriter: rewrites edit instructions for low-score balancing; the planner, else the annotator, when None.
        progress: show a progress bar.

    Example:
        >>> run = Curation(CurateSettings("edit"), ShapesWorldAnnotator())
        >>> manifest = run.run("pairs/pairs.jsonl", "curated/")
    """

    def __init__(
        self,
        settings: CurateSettings,
        annotator: Annotator,
        planner: Annotator | None = None,
        rewriter: Annotator | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = settings
        self.annotator = annotator
        self.planner = planner or annotator
        self.rewriter = rewriter or planner or annotator
        self.progress = progress
        #: seconds spent in each stage (retries included) and items sent to it, in this run
        self.stage_seconds: dict[str, float] = {}
        self.stage_calls: dict[str, int] = {}

    # --- the run --------------------------------------------------------------------------------------------------

    def run(self, input_path: str | Path, output: str | Path) -> dict[str, Any]:
        """Label every input not labelled yet, then write the shards and the manifest; returns the manifest.

        Raises:
            CurationError: for an output folder curated with other settings, an annotator that cannot answer a
                stage, or (``strict``) an unreadable input.
            InputError: when the input does not exist.
        """
        out = Path(output)
        if out.exists() and not out.is_dir():
            raise CurationError(f"--output {out} is a file; give a folder")
        out.mkdir(parents=True, exist_ok=True)
        with exclusive(out):
            self._check_run_file(out)
            started = time.perf_counter()
            done = self._journal(RecordStore(out / LABELS))
            stats = self._label(input_path, out, done)
            return self._write(input_path, out, stats, done, time.perf_counter() - started)

    def _check_run_file(self, out: Path) -> None:
        identity = {
            **self.settings.identity(),
            "annotator": self.annotator.identity(),
            "planner": self.planner.identity() if self.settings.task == "gen" else None,
            "rewriter": self.rewriter.identity() if self.settings.rewrite_fraction else None,
        }
        path = out / RUN
        if path.is_file():
            try:
                earlier = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                earlier = None
            if earlier != json.loads(json.dumps(identity)):
                raise CurationError(
                    f"{out} holds labels made with other settings or annotators ({path}); rerun with the same "
                    "ones to continue, or choose a new --output"
                )
            return
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(identity, indent=2, sort_keys=True), encoding="utf-8")

    # --- phase 1: labels ------------------------------------------------------------------------------------------

    def _journal(self, store: RecordStore) -> dict[str, dict[str, Any]]:
        """The latest record of every input in the journal (a rerun's record replaces an earlier one)."""
        done: dict[str, dict[str, Any]] = {}
        for where, record in store.read():
            if isinstance(record, RecordError):
                log.warning("%s: skipped (%s)", where, record.reason)
                continue
            done[str(record["input"])] = record
        return done

    def _inputs(self, input_path: str | Path, stats: _Stats) -> Iterator[Item]:
        taken = 0
        for entry in read_items(input_path, self.settings.task):
            if isinstance(entry, BadInput):
                if self.settings.strict:
                    raise CurationError(f"{entry.where}: {entry.reason} (without --strict it is counted and skipped)")
                log.warning("%s: skipped, %s", entry.where, entry.reason)
                stats.bad_inputs.append({"where": entry.where, "reason": entry.reason})
                continue
            if self.settings.limit is not None and taken >= self.settings.limit:
                return
            taken += 1
            yield entry

    def _label(self, input_path: str | Path, out: Path, done: dict[str, dict[str, Any]]) -> _Stats:
        """Label what ``done`` (the journal, input -> latest record) lacks; ``done`` is kept up to date."""
        stats = _Stats()
        store = RecordStore(out / LABELS)
        owner = {rec["hash"]: key for key, rec in done.items() if rec.get("status") != "duplicate"}
        pending: list[tuple[Item, str]] = []
        bar = tqdm(desc=f"curate {self.settings.task}", unit="input", disable=not self.progress)
        started = time.perf_counter()
        try:
            with store:
                for item in self._inputs(input_path, stats):
                    stats.read += 1
                    digest = content_hash(item)
                    stats.digests[item.key] = digest
                    record = done.get(item.key)
                    if record is not None and record.get("hash") == digest:
                        if not (self.settings.retry_rejected and record.get("status") == "rejected"):
                            stats.skipped += 1
                            bar.update()
                            continue
                    elif record is not None:
                        log.warning("%s: changed since it was labelled; labelling it again", item.origin)
                    first = owner.setdefault(digest, item.key)
                    if first != item.key:
                        done[item.key] = duplicate_record(item, digest, first)
                        store.append([done[item.key]])
                        stats.duplicates_now += 1
                        bar.update()
                        continue
                    pending.append((item, digest))
                    if len(pending) >= self.settings.batch_size:
                        self._flush(pending, store, done, stats, bar, started)
                        pending = []
                if pending:
                    self._flush(pending, store, done, stats, bar, started)
        finally:
            bar.close()
        return stats

    def _flush(
        self,
        batch: list[tuple[Item, str]],
        store: RecordStore,
        done: dict[str, dict[str, Any]],
        stats: _Stats,
        bar: tqdm,
        started: float,
    ) -> None:
        items = [item for item, _ in batch]
        try:
            if self.settings.task == "edit":
                records = self._label_edits([i for i in items if isinstance(i, EditItem)])
            else:
                records = self._label_gens([i for i in items if isinstance(i, GenItem)])
        except StageUnsupported as err:
            raise CurationError(f"{err}; give an annotator (or --planner) that answers this stage") from None
        for record, (_, digest) in zip(records, batch, strict=True):
            record["hash"] = digest
            done[record["input"]] = record
        store.append(records)
        stats.labelled_now += len(records)
        bar.update(len(records))
        usage = dict(self.annotator.usage())
        if self.planner is not self.annotator:
            for name, value in self.planner.usage().items():
                usage[name] = usage.get(name, 0) + value
        tokens = usage.get("completion_tokens", 0)
        elapsed = max(time.perf_counter() - started, 1e-9)
        stats.samples_now += sum(len(r["samples"]) for r in records)
        stats.rejected_now += sum(1 for r in records if r["status"] == "rejected")
        postfix = {"samples": stats.samples_now, "rejected": stats.rejected_now}
        if tokens:
            postfix["tok/s"] = round(tokens / elapsed)
        bar.set_postfix(postfix, refresh=False)

    def _stage(
        self, name: str, call: Callable[[list[int], int], Sequence[Any]], n: int, annotator: Annotator
    ) -> tuple[list[Any], list[int]]:
        """Run a stage over items ``0..n-1``, retrying rejected ones; returns the results and the tries each took."""
        started = time.perf_counter()
        results = list(call(list(range(n)), 0)) if n else []
        _check_results(name, annotator, results, n)
        tries = [1] * n
        for attempt in range(1, self.settings.retries + 1):
            redo = [i for i, result in enumerate(results) if isinstance(result, Rejected)]
            if not redo:
                break
            again = call(redo, attempt)
            _check_results(name, annotator, again, len(redo))
            for i, result in zip(redo, again, strict=True):
                results[i] = result
                tries[i] += 1
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - started
        self.stage_calls[name] = self.stage_calls.get(name, 0) + n
        return results, tries

    def _label_edits(self, items: list[EditItem]) -> list[dict[str, Any]]:
        s = self.settings
        records = [new_record(item) for item in items]
        reports, tries = self._stage(
            "describe", lambda idx, att: self.annotator.describe([items[i] for i in idx], att), len(items),
            self.annotator,
        )  # fmt: skip
        # (record index, item, report, instruction it replaced or None)
        scored: list[tuple[int, EditItem, DifferenceReport, str | None]] = []
        for r, (item, report) in enumerate(zip(items, reports, strict=True)):
            if isinstance(report, Rejected):
                for dim in s.dimensions:
                    reject(records[r], "describe", dim, report, tries[r])
            else:
                scored.append((r, item, report, None))
        if s.rewrite_fraction:
            chosen = [entry for entry in scored if selected_fraction(entry[1].key, s.rewrite_fraction, s.seed)]
            rewrites, rtries = self._stage(
                "rewrite", lambda idx, att: self.rewriter.rewrite([chosen[i][1] for i in idx], att), len(chosen),
                self.rewriter,
            )  # fmt: skip
            for (r, item, report, _), new, n in zip(chosen, rewrites, rtries, strict=True):
                if isinstance(new, Rejected):
                    reject(records[r], "rewrite", None, new, n)
                    continue
                twin = EditItem(f"{item.key}-rw", new, item.source, item.image, item.metadata, item.origin)
                scored.append((r, twin, report, item.instruction))
        for dim in s.dimensions:

            def score(idx: list[int], attempt: int, dim: str = dim) -> list[Label | Rejected]:
                return self.annotator.score_edit([scored[i][1] for i in idx], dim, [scored[i][2] for i in idx], attempt)

            labels, ltries = self._stage("score", score, len(scored), self.annotator)
            for (r, item, report, replaced), label, n in zip(scored, labels, ltries, strict=True):
                if isinstance(label, Rejected):
                    reject(records[r], "score", dim, label, n, rewritten=replaced is not None)
                    continue
                evidence = {"differences": report.to_json(), **label.evidence}
                records[r]["samples"].append(sample_entry(item, label, evidence, replaced))
        return [finish(record) for record in records]

    def _label_gens(self, items: list[GenItem]) -> list[dict[str, Any]]:
        s = self.settings
        records = [new_record(item) for item in items]
        plans: list[Plan | Rejected | None] = [None] * len(items)
        ptries = [0] * len(items)
        if "instruction" in s.dimensions:
            found, ptries = self._stage(
                "plan", lambda idx, att: self.planner.plan([items[i] for i in idx], att), len(items), self.planner
            )
            plans = list(found)
        instruction_evidence: dict[int, dict[str, Any]] = {}
        if "instruction" in s.dimensions:
            ok = [r for r, plan in enumerate(plans) if isinstance(plan, Plan)]
            for r, plan in enumerate(plans):
                if isinstance(plan, Rejected):
                    reject(records[r], "plan", "instruction", plan, ptries[r])
            labels, ltries = self._stage(
                "score",
                lambda idx, att: self.annotator.score_instruction(
                    [items[ok[i]] for i in idx], [_plan(plans[ok[i]]) for i in idx], att
                ),
                len(ok),
                self.annotator,
            )
            for r, label, n in zip(ok, labels, ltries, strict=True):
                if isinstance(label, Rejected):
                    reject(records[r], "score", "instruction", label, n)
                    continue
                evidence = {"plan": _plan(plans[r]).to_json(), **label.evidence}
                instruction_evidence[r] = evidence
                records[r]["samples"].append(sample_entry(items[r], label, evidence, None))
        if "quality" in s.dimensions:
            labels, qtries = self._stage(
                "quality", lambda idx, att: self.annotator.score_quality([items[i] for i in idx], att), len(items),
                self.annotator,
            )  # fmt: skip
            for r, (label, n) in enumerate(zip(labels, qtries, strict=True)):
                if isinstance(label, Rejected):
                    reject(records[r], "quality", "quality", label, n)
                    continue
                plan_part = {"plan": instruction_evidence[r]["plan"]} if r in instruction_evidence else {}
                records[r]["samples"].append(sample_entry(items[r], label, {**plan_part, **label.evidence}, None))
        return [finish(record) for record in records]

    # --- phase 2: shards and manifest -----------------------------------------------------------------------------

    def _write(
        self, input_path: str | Path, out: Path, stats: _Stats, done: dict[str, dict[str, Any]], seconds: float
    ) -> dict[str, Any]:
        s = self.settings
        records = [r for r in done.values() if r.get("status") != "duplicate"]
        samples = [x for r in records for x in r["samples"] if x["dimension"] in s.dimensions]
        natural = {
            d: [x["score"] for x in samples if x["dimension"] == d and not x.get("rewritten")] for d in s.dimensions
        }
        labelled = {d: {x["key"]: x["score"] for x in samples if x["dimension"] == d} for d in s.dimensions}
        if s.target_histogram is not None:
            keep = set().union(*(rebalance(labelled[d], s.target_histogram, s.seed) for d in s.dimensions))
        else:
            keep = {key for d in s.dimensions for key in labelled[d]}
        # Shards follow the input order, whatever order the labels were made in.
        shards = ShardSet(out, f"curated-{s.task}", s.shard_size)
        written: Counter[str] = Counter()
        written_scores: dict[str, list[int]] = {d: [] for d in s.dimensions}
        with shards:
            for item in self._inputs(input_path, _Stats()):  # phase 1 counted the unreadable ones
                record = done.get(item.key)
                # a record made for other pixels or text than phase 1 read (a file changed meanwhile) is not written
                if record is None or record.get("status") != "labelled" or record["hash"] != stats.digests[item.key]:
                    continue
                for entry in record["samples"]:
                    if entry["key"] not in keep or entry["dimension"] not in s.dimensions:
                        continue
                    shards.write(critic_sample(item, entry, record))
                    written[entry["dimension"]] += 1
                    written_scores[entry["dimension"]].append(entry["score"])
        rejections = [
            {"input": r["input"], "origin": r.get("origin", ""), **rej}
            for r in records
            for rej in r.get("rejected", [])
        ]
        with atomic_path(out / REJECTED) as tmp, tmp.open("w", encoding="utf-8") as f:
            for line in rejections:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        by_stage = Counter(f"{rej['stage']}/{rej['dimension'] or '-'}" for rej in rejections)
        usage = {
            "annotator": dict(self.annotator.usage()),
            **({"planner": dict(self.planner.usage())} if self.planner is not self.annotator else {}),
        }
        manifest = {
            "task": s.task,
            "input": str(input_path),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
            "annotator": self.annotator.describe_self(),
            "planner": self.planner.describe_self() if s.task == "gen" and "instruction" in s.dimensions else None,
            "rewriter": self.rewriter.describe_self() if s.rewrite_fraction else None,
            "counts": {
                "inputs": len(done),
                "labelled": sum(1 for r in records if r["status"] == "labelled"),
                "rejected": sum(1 for r in records if r["status"] == "rejected"),
                "duplicates": sum(1 for r in done.values() if r.get("status") == "duplicate"),
                "bad_inputs": len(stats.bad_inputs),
                "rewritten": sum(1 for r in records if any(x.get("rewritten") for x in r["samples"])),
                "samples": dict(written),
                "rejections_by_stage": dict(sorted(by_stage.items())),
                "this_run": {
                    "labelled": stats.labelled_now,
                    "skipped": stats.skipped,
                    "duplicates": stats.duplicates_now,
                    "seconds": round(seconds, 3),
                    "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
                    "stage_items": dict(self.stage_calls),
                },
            },
            "histograms": {
                "natural": {d: histogram(v) for d, v in natural.items()},
                "labelled": {d: histogram(v.values()) for d, v in labelled.items()},
                "written": {d: histogram(v) for d, v in written_scores.items()},
            },
            "bad_inputs": stats.bad_inputs[:100],
            "usage": usage,
            "shards": shards.names,
        }
        with atomic_path(out / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        return manifest


def _plan(plan: Plan | Rejected | None) -> Plan:
    assert isinstance(plan, Plan)
    return plan

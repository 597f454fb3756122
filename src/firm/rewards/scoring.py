"""Judging samples and the rewards over them, as ``firm score`` does: one sample, or a jsonl of them, resumable.

A scored sample is one JSON record: ``task``, ``text``, ``image`` (and ``source``), the verdict of every dimension
judged and, when a reward applies, ``reward`` (:func:`~firm.rewards.critic_reward.reward_dict` plus its ``name``).
In batch mode every input line gets exactly one output record, in input order, carrying the input's ``line`` number
and ``id``; a line that cannot be judged (blank, not JSON, an unreadable image, inconsistent fields) gets an ``error``
instead, and the batch goes on. Records go
through one :class:`~firm.data.records.RecordStore`, so a killed run resumes where it stopped: complete records are
kept, a record cut mid-write is dropped and its line judged again, once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firm.critics.base import Critic
from firm.data.records import RecordError, RecordStore, read_jsonl
from firm.data.samples import JudgeSample, SampleInputError, parse_sample
from firm.errors import InputError, check_file
from firm.rewards.base import RewardStrategy
from firm.rewards.critic_reward import DEFAULT_REWARDS, CriticReward, RewardSpecError, strategy_for

__all__ = ["BatchInputError", "ScoreCounts", "choose_reward", "counts_line", "judge_samples", "score_jsonl"]


class BatchInputError(InputError):
    """A batch that cannot start: input missing or malformed, output in the way, bad settings."""


def choose_reward(name: str | None, task: str, dimensions: Sequence[str]) -> tuple[str, RewardStrategy] | None:
    """The reward to report for samples of ``task`` judged on ``dimensions``, as (name, strategy).

    Args:
        name: a registered reward or class path; ``"none"`` for no reward; None for the task's default (CME for
            edits, QMA for generations), which is left out when its dimensions are not all judged.
        task: ``edit`` or ``gen``.
        dimensions: the dimensions judged.

    Raises:
        RewardSpecError: for an unknown reward, or a named reward whose dimensions are not all judged.
    """
    if name == "none":
        return None
    chosen = name or DEFAULT_REWARDS[task]
    strategy = strategy_for(chosen)
    missing = [d for d in strategy.dimensions if d not in dimensions]
    if missing and name is not None:
        raise RewardSpecError(f"reward {chosen!r} needs dimensions {', '.join(missing)}; add them to --dimensions")
    return None if missing else (chosen, strategy)


def judge_samples(
    critic: Critic, samples: Sequence[JudgeSample], rewards: Sequence[CriticReward | None]
) -> list[dict[str, Any]]:
    """Judge every sample on its dimensions in one critic call; one record per sample, with its reward if any.

    Args:
        critic: the critic.
        samples: the samples (see :func:`~firm.data.samples.parse_sample`).
        rewards: per sample, the reward over its verdicts, or None.

    Raises:
        RuntimeError: when the critic breaks its contract (verdict count).
    """
    requests = [request for sample in samples for request in sample.requests()]
    verdicts = critic.judge(requests)
    if len(verdicts) != len(requests):
        raise RuntimeError(f"{type(critic).__name__} returned {len(verdicts)} verdicts for {len(requests)} requests")
    records = []
    start = 0
    for sample, reward in zip(samples, rewards, strict=True):
        by_dim = dict(zip(sample.dimensions, verdicts[start : start + len(sample.dimensions)], strict=True))
        start += len(sample.dimensions)
        record: dict[str, Any] = {"task": sample.task, "text": sample.text, "image": sample.image_path}
        if sample.source_path is not None:
            record["source"] = sample.source_path
        record["verdicts"] = {dim: v.to_dict() for dim, v in by_dim.items()}
        if reward is not None:
            record["reward"] = {"name": reward.name, **reward.combine([by_dim]).reward_json(0)}
        records.append(record)
    return records


@dataclass
class ScoreCounts:
    """What a batch did: lines scored now, lines with an error, invalid verdicts, lines kept from a previous run."""

    scored: int = 0
    errors: int = 0
    invalid_verdicts: int = 0
    skipped: int = 0


def _read_input(path: Path) -> list[dict[str, Any]]:
    """One row per line, blank and malformed lines included (as ``_error``): every line gets its output record.

    Raises:
        BatchInputError: for a missing file, or one in which no line is a JSON object (not a batch at all).
    """
    check_file(path, "--input", BatchInputError)
    rows: list[dict[str, Any]] = []
    for where, row in read_jsonl(path, blank=True):
        line = int(where.rsplit(":", 1)[1])
        if row is None:
            rows.append({"_line": line, "_error": "blank line: nothing to judge"})
        elif isinstance(row, RecordError):
            rows.append({"_line": line, "_error": f"line {line} {row.reason}"})
        else:
            rows.append({**row, "_line": line})
    if rows and all("_error" in row for row in rows):
        raise BatchInputError(
            f"{path} holds no JSON object on any line; is it a jsonl of samples? ({rows[0]['_error']})"
        )
    return rows


def _done_lines(store: RecordStore) -> set[int]:
    done = set()
    for _, record in store.read():
        # A record cut by a kill mid-write (a RecordError) is not done: its line is judged again.
        if isinstance(record, dict) and isinstance(record.get("line"), int):
            done.add(record["line"])
    return done


def score_jsonl(
    build_critic: Callable[[], Critic],
    input: Path,
    output: Path,
    *,
    resume: bool = False,
    chunk: int = 64,
    dimensions: str | None = None,
    reward: str | None = None,
    progress: bool = True,
) -> ScoreCounts:
    """Score every line of the jsonl ``input`` into ``output``, one record per line, ``chunk`` lines per critic call.

    Input lines hold ``image``, ``source`` (edits), ``instruction`` or ``prompt``, and optionally ``id`` and
    ``dimensions``; image paths are relative to the input's folder.

    Args:
        build_critic: builds the critic; called only once the input and output have been checked.
        input: the jsonl to score.
        output: the jsonl to write.
        resume: keep the records already in ``output`` and score the other lines; without it an existing output is
            refused.
        chunk: lines per critic call and per durable write.
        dimensions: comma list for lines that name none (default: the task's dimensions).
        reward: the reward name (see :func:`choose_reward`).
        progress: show a progress bar.

    Raises:
        BatchInputError: for a missing or malformed input, an existing output without ``resume``, or ``chunk < 1``.
        RewardSpecError: for an unknown reward, or one whose dimensions a line does not judge.
    """
    from tqdm import tqdm

    rows = _read_input(input)
    if output.is_dir():
        raise BatchInputError(f"--output {output} is a directory; give the jsonl file to write")
    if output.exists() and not resume:
        raise BatchInputError(f"{output} exists; pass --resume to continue it or choose another --output")
    if chunk < 1:
        raise BatchInputError("--chunk must be at least 1")
    if reward not in (None, "none"):
        strategy_for(reward)  # an unknown reward fails before the model loads
    # fsync per chunk: a finished chunk survives a crash of the machine, not only of the process.
    store = RecordStore(output, fsync=True)
    done = _done_lines(store) if resume else set()
    todo = [row for row in rows if row["_line"] not in done]
    counts = ScoreCounts(skipped=len(rows) - len(todo))
    critic = build_critic()
    rewards: dict[tuple[str, tuple[str, ...]], CriticReward | None] = {}

    def reward_for(task: str, dims: tuple[str, ...]) -> CriticReward | None:
        if (task, dims) not in rewards:
            chosen = choose_reward(reward, task, dims)
            rewards[task, dims] = None if chosen is None else CriticReward(critic, chosen[1], chosen[0])
        return rewards[task, dims]

    try:
        with tqdm(total=len(todo), unit="sample", desc="firm score", disable=not progress) as bar:
            for start in range(0, len(todo), chunk):
                batch = todo[start : start + chunk]
                records: list[dict[str, Any]] = []  # one per line of the chunk, written in input order
                samples: list[JudgeSample] = []
                slots = []
                for row in batch:
                    head = {"line": row["_line"], **({"id": row["id"]} if "id" in row else {})}
                    try:
                        if "_error" in row:
                            raise SampleInputError(row["_error"])
                        samples.append(parse_sample(row, base=input.parent, default_dimensions=dimensions))
                        slots.append(len(records))
                    except SampleInputError as exc:
                        counts.errors += 1
                        head["error"] = str(exc)
                    records.append(head)
                chosen = [reward_for(sample.task, sample.dimensions) for sample in samples]
                for slot, result in zip(slots, judge_samples(critic, samples, chosen), strict=True):
                    counts.scored += 1
                    counts.invalid_verdicts += sum(not v["valid"] for v in result["verdicts"].values())
                    records[slot].update(result)
                store.append(records)
                bar.update(len(batch))
    finally:
        critic.close()
    return counts


def counts_line(output: Path, counts: ScoreCounts) -> str:
    """The one-line JSON summary ``firm score`` prints to stderr after a batch."""
    return json.dumps({"output": str(output), **counts.__dict__})

"""Batch mode of ``firm score``: a jsonl in, a jsonl out, one output line per input line, resumable.

A line whose images cannot be read, or whose fields are inconsistent, gets an output line with an ``error`` and is
counted; the other lines are judged. Output lines carry the input line number (``line``) and ``id`` when given, so
``--resume`` can skip what was done.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firm.commands import UsageError
from firm.commands.score import build_critic, judge_samples, parse_sample, resolve_reward


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UsageError(f"input not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number} is not valid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{number} must be a JSON object")
        row["_line"] = number
        rows.append(row)
    return rows


def _done_lines(path: Path) -> set[int]:
    if not path.is_file():
        return set()
    done = set()
    for line in path.read_text().splitlines():
        try:
            done.add(int(json.loads(line)["line"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by a kill mid-write is scored again
    return done


def score_jsonl(args: argparse.Namespace) -> int:
    """Score every line of ``args.input`` into ``args.output``; exit 1 if any line had an error."""
    from tqdm import tqdm

    rows = _read_lines(args.input)
    if args.output.exists() and not args.resume:
        raise UsageError(f"{args.output} exists; pass --resume to continue it or choose another --output")
    done = _done_lines(args.output) if args.resume else set()
    todo = [row for row in rows if row["_line"] not in done]
    if args.chunk < 1:
        raise UsageError("--chunk must be at least 1")
    critic = build_critic(args)
    rewards_cache: dict[tuple[str, tuple[str, ...]], Any] = {}
    counts = {"scored": 0, "errors": 0, "invalid_verdicts": 0, "skipped": len(rows) - len(todo)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("a") as out, tqdm(total=len(todo), unit="sample", desc="firm score") as bar:
        for start in range(0, len(todo), args.chunk):
            chunk = todo[start : start + args.chunk]
            records: list[dict[str, Any]] = []  # one per line of the chunk, written in input order
            samples, slots = [], []
            for row in chunk:
                head = {"line": row["_line"], **({"id": row["id"]} if "id" in row else {})}
                try:
                    samples.append(parse_sample(row, base=args.input.parent, default_dimensions=args.dimensions))
                    slots.append(len(records))
                except UsageError as exc:
                    counts["errors"] += 1
                    head["error"] = str(exc)
                records.append(head)
            rewards = []
            for sample in samples:
                key = (sample["task"], tuple(sample["dimensions"]))
                if key not in rewards_cache:
                    rewards_cache[key] = resolve_reward(args.reward, *key)
                rewards.append(rewards_cache[key])
            for slot, result in zip(slots, judge_samples(critic, samples, rewards), strict=True):
                counts["scored"] += 1
                counts["invalid_verdicts"] += sum(not v["valid"] for v in result["verdicts"].values())
                records[slot].update(result)
            out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            out.flush()
            bar.update(len(chunk))
    print(json.dumps({"output": str(args.output), **counts}), file=sys.stderr)
    return 1 if counts["errors"] else 0

"""Predictions as jsonl: read precomputed ones (hosted critics), write a run's, and keep a resumable verdict cache.

A predictions file has one line per (sample, dimension), in one of two shapes:

- firm's: ``{"id", "dimension", "score": int or null, "raw"?, "reasoning"?, "invalid_reason"?}``; ``dimension`` may
  be left out when the bench has a single dimension. ``firm bench`` writes this shape (with more fields), so its
  output can be read back.
- FIRM-Bench-Gen's official one: ``{"id", "instruction_following": {"score": [n]}, "image": [path]}`` (the
  dimension is instruction).

A null score, or one that is not an integer of the scale, is an *invalid* verdict: it stays in the results as a miss.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from firm.bench.fields import MissingField, lookup
from firm.bench.sample import Bench
from firm.critics.base import ScoreRange, Verdict

__all__ = ["ReadPredictions", "VerdictCache", "read_predictions", "verdict_from_score", "write_predictions"]

Key = tuple[str, str]


def verdict_from_score(dimension: str, score: object, score_range: ScoreRange, **text: str) -> Verdict:
    """A verdict for a given score: valid for an integer of the scale, invalid (saying why) for anything else."""
    if isinstance(score, float) and score.is_integer():
        score = int(score)  # JSON writers may print 4 as 4.0
    if score in score_range:
        assert isinstance(score, int)
        return Verdict(dimension, score, reasoning=text.get("reasoning", ""), raw=text.get("raw", ""))
    if score is None:
        reason = text.get("invalid_reason") or "no score given"
    else:
        reason = f"out of range: {score!r} is not an integer {score_range.low}-{score_range.high}"
    return Verdict.invalid(dimension, reason, raw=text.get("raw", ""), reasoning=text.get("reasoning", ""))


class ReadPredictions(dict[Key, Verdict]):
    """Verdicts by (id, dimension), plus the keys of lines that match no bench sample."""

    unmatched: list[Key]

    def __init__(self) -> None:
        super().__init__()
        self.unmatched = []


def read_predictions(path: Path, bench: Bench) -> ReadPredictions:
    """Read precomputed predictions for ``bench``.

    Raises:
        ValueError: for a missing file, a line that is not a JSON object, a line without ``id`` (or without
            ``dimension`` on a bench with several), or two lines for the same sample.
    """
    if not path.is_file():
        raise ValueError(f"predictions not found: {path}")
    known = {s.key for s in bench.samples}
    dims = bench.dimensions
    out = ReadPredictions()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} is not valid JSON: {exc.msg}") from None
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError(f"{where} must be a JSON object with an 'id'")
            key, verdict = _prediction(record, dims, bench.score_range, where)
            if key in out:
                raise ValueError(f"{where}: a second prediction for id {key[0]!r}, {key[1]}")
            if key in known:
                out[key] = verdict
            else:
                out.unmatched.append(key)
    return out


def _prediction(record: Mapping[str, Any], dims: list[str], score_range: ScoreRange, where: str) -> tuple[Key, Verdict]:
    if "instruction_following" in record:  # FIRM-Bench-Gen's official shape
        try:
            score = lookup(record, "instruction_following.score")
        except MissingField:
            score = None
        raw = json.dumps(record["instruction_following"], ensure_ascii=False)
        return (str(record["id"]), "instruction"), verdict_from_score("instruction", score, score_range, raw=raw)
    if "dimension" in record:
        dimension = str(record["dimension"])
    elif len(dims) == 1:
        dimension = dims[0]
    else:
        raise ValueError(f"{where} has no 'dimension', and the bench has several: {', '.join(dims)}")
    text = {k: str(record[k]) for k in ("raw", "reasoning", "invalid_reason") if record.get(k) is not None}
    return (str(record["id"]), dimension), verdict_from_score(dimension, record.get("score"), score_range, **text)


def write_predictions(path: Path, bench: Bench, verdicts: Mapping[Key, Verdict]) -> None:
    """One line per bench sample: its id, dimension, human score and the verdict (missing ones as invalid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for sample in bench.samples:
            verdict = verdicts.get(sample.key) or Verdict.invalid(sample.dimension, "missing prediction")
            line: dict[str, Any] = {"id": sample.id, "human": sample.human, **verdict.to_dict()}
            line.update({k: v for k, v in (("difficulty", sample.difficulty), ("model", sample.model)) if v})
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


class VerdictCache:
    """Verdicts of one critic, appended to a jsonl as they come, so an interrupted run resumes where it stopped.

    The first line records the critic's name and settings; opening the cache with other settings is an error, so
    verdicts of one critic never pass for another's. A last line cut by a kill mid-write is ignored (judged again).

    Args:
        path: the cache file (created with its folder when absent).
        critic: the critic's name.
        config: the critic's settings, JSON-serialisable.

    Raises:
        ValueError: when the file holds another critic's verdicts or other settings.
    """

    def __init__(self, path: Path, critic: str, config: Mapping[str, Any]) -> None:
        self.path = path
        self.header = {"critic": critic, "config": json.loads(json.dumps(config, default=str))}
        self.verdicts: dict[Key, Verdict] = {}
        if path.is_file() and path.stat().st_size:
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.header, ensure_ascii=False) + "\n", encoding="utf-8")

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            # A kill cut the last line mid-write: drop it, or the next append would be glued onto it.
            text = text[: text.rfind("\n") + 1]
            self.path.write_text(text or json.dumps(self.header, ensure_ascii=False) + "\n", encoding="utf-8")
        lines = text.splitlines()
        if not lines:
            return
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict):
            raise ValueError(f"{self.path} is not a firm bench verdict cache; choose another --out")
        if header != self.header:
            raise ValueError(
                f"{self.path} holds verdicts of {header.get('critic')!r} with settings {header.get('config')}, not "
                f"{self.header['critic']!r} with {self.header['config']}; choose another --out or critic name"
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
                self.verdicts[(str(record["id"]), str(record["dimension"]))] = Verdict.from_dict(record)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # an unreadable verdict is not reused: its sample is judged again

    def __contains__(self, key: object) -> bool:
        return key in self.verdicts

    def __len__(self) -> int:
        return len(self.verdicts)

    def __getitem__(self, key: Key) -> Verdict:
        return self.verdicts[key]

    def add(self, items: Iterable[tuple[Key, Verdict]]) -> None:
        """Append verdicts and flush them to disk."""
        with self.path.open("a", encoding="utf-8") as out:
            for key, verdict in items:
                out.write(json.dumps({"id": key[0], **verdict.to_dict()}, ensure_ascii=False) + "\n")
                self.verdicts[key] = verdict
            out.flush()

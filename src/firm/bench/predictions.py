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
from firm.data.records import RecordError, RecordStore, read_jsonl
from firm.errors import InputError, check_file

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
    check_file(path, "predictions", ValueError)
    known = {s.key for s in bench.samples}
    dims = bench.dimensions
    out = ReadPredictions()
    for where, record in read_jsonl(path):
        if isinstance(record, RecordError):
            raise ValueError(str(record))
        if "id" not in record:
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

    The first record names the critic and its settings (:meth:`firm.critics.factory.CriticSpec.key`); opening the
    cache with another critic or other settings is an error, so verdicts of one critic (or of one setting, such as
    ``samples``) never pass for another's. The file is a :class:`~firm.data.records.RecordStore`: a verdict cut by a
    kill mid-write is dropped and judged again, once; every chunk of verdicts is flushed and fsynced.

    Args:
        path: the cache file (created with its folder when absent).
        critic: the critic's name.
        config: the critic's identity and settings, JSON-serialisable.

    Raises:
        InputError: when the file holds another critic's verdicts or other settings, or is not a verdict cache.
    """

    def __init__(self, path: Path, critic: str, config: Mapping[str, Any]) -> None:
        self.path = path
        self.header = {"critic": critic, "config": json.loads(json.dumps(config, default=str))}
        self.verdicts: dict[Key, Verdict] = {}
        self.store = RecordStore(path, fsync=True)
        if not self._load():
            self.store.append([self.header])

    def _load(self) -> bool:
        """Read the verdicts; False when the file holds no header yet."""
        records = self.store.read()
        first = next(records, None)
        if first is None or (isinstance(first[1], RecordError) and first[1].torn):
            return False  # empty, or killed while writing its header
        header = first[1]
        if not isinstance(header, dict) or set(header) != {"critic", "config"}:
            raise InputError(f"{self.path} is not a firm bench verdict cache; choose another --out")
        if header != self.header:
            raise InputError(
                f"{self.path} holds verdicts of {header.get('critic')!r} with settings {header.get('config')}, not "
                f"{self.header['critic']!r} with {self.header['config']}; choose another --out or critic name"
            )
        for _, record in records:
            if isinstance(record, RecordError):
                continue  # an unreadable verdict is not reused: its sample is judged again
            try:
                self.verdicts[(str(record["id"]), str(record["dimension"]))] = Verdict.from_dict(record)
            except (KeyError, TypeError, ValueError):
                continue
        return True

    def __contains__(self, key: object) -> bool:
        return key in self.verdicts

    def __len__(self) -> int:
        return len(self.verdicts)

    def __getitem__(self, key: Key) -> Verdict:
        return self.verdicts[key]

    def add(self, items: Iterable[tuple[Key, Verdict]]) -> None:
        """Append verdicts, durably (flushed and fsynced) before this returns."""
        pairs = list(items)
        self.store.append({"id": key[0], **verdict.to_dict()} for key, verdict in pairs)
        self.verdicts.update(pairs)

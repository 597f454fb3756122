"""Readers of human-scored benches: ShapesWorld's export, the official FIRM-Bench files, and generic score tables.

Every reader returns a :class:`~firm.bench.sample.Bench`. A record that cannot be used (a missing field, a missing
image, a human score off the scale) is skipped and listed in ``Bench.skipped``, or raises with ``strict``. Where a
file's field names are not known for certain they are settings (:class:`ReadOptions.fields`), and the mapping used is
kept in ``Bench.fields`` for the report.

- ``shapesworld``: one jsonl line per sample, ``{"id", "task", "dimension", "text", "image", "source", "score",
  "difficulty"}``, image paths relative to the file.
- ``firm-bench-edit`` / ``firm-bench-gen``: ``bench_v1.jsonl`` (inputs) joined on ``id`` with
  ``result/human_bench_v1.jsonl`` (human scores) as published. Confirmed for gen (from the official ``gen_mae.py``):
  ``instruction_following.score`` is a one-element list, ``image`` a one-element list whose folder ``en/`` marks an
  easy and ``en_long/`` a hard prompt. Not confirmed: the prompt field of gen, and every edit field; their defaults are
  in :data:`FIRM_BENCH_FIELDS` and can be overridden.
- ``table``: jsonl, CSV or TSV human scores, several raters as several score columns or several files (one per rater,
  as in VIEScore's human ratings); ``wide`` layout for one column per generating model.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from firm.bench.fields import MissingField, lookup, to_score
from firm.bench.sample import Bench, BenchSample, Skipped
from firm.critics.base import FIRM_RANGE, ScoreRange
from firm.data.records import RecordError, read_jsonl
from firm.errors import check_file

__all__ = [
    "FIRM_BENCH_FIELDS",
    "READERS",
    "SHAPESWORLD_FIELDS",
    "ReadOptions",
    "read_bench",
    "read_firm_bench_edit",
    "read_firm_bench_gen",
    "read_shapesworld",
    "read_table",
]

#: Where each value is in a ShapesWorld bench line. ``score`` is the exact ground truth.
SHAPESWORLD_FIELDS: dict[str, str] = {
    "id": "id",
    "dimension": "dimension",
    "text": "text",
    "image": "image",
    "source": "source",
    "score": "score",
    "difficulty": "difficulty",
    "model": "model",
}

#: Defaults for the official FIRM-Bench files. ``score.<dimension>`` is where a dimension's human score is.
#: Gen: ``id``, ``instruction_following.score``, ``image`` and the difficulty rule are confirmed by ``gen_mae.py``;
#: ``prompt`` is not. Edit: none is confirmed; override with ``--field KEY=SPEC`` after reading the real files.
FIRM_BENCH_FIELDS: dict[str, dict[str, str]] = {
    "gen": {
        "id": "id",
        "text": "prompt",
        "image": "image",
        "difficulty": "dir:image",
        "score.instruction": "instruction_following.score",
    },
    "edit": {
        "id": "id",
        "text": "instruction",
        "image": "image",
        "source": "source_image",
        "score.execution": "execution.score",
        "score.consistency": "consistency.score",
    },
}

#: FIRM-Bench-Gen's image folders and the prompt difficulty they hold (as ``gen_mae.py`` buckets them).
GEN_DIFFICULTY = {"en": "easy", "en_long": "hard"}

#: Keys a ``--field`` override may set, besides ``score.<dimension>``.
FIELD_KEYS = ("id", "dimension", "text", "image", "source", "score", "difficulty", "model", "group")


@dataclass(frozen=True)
class ReadOptions:
    """Settings of the bench readers; a reader warns about a setting that does not apply to its format.

    Attributes:
        human: firm-bench: the human scores file; default ``result/human_bench_v1.jsonl`` beside the bench file.
        fields: overrides of where values are: key (``text``, ``image``, ``score.execution``...) -> field spec (see
            :mod:`firm.bench.fields`). For ``table``, ``score`` may list several columns, comma-separated: raters in
            the long layout, generating models in the wide one.
        layout: table: ``long`` (one row per sample) or ``wide`` (one row per item, one score column per model; a
            sample's id is ``<row id>/<column>``).
        element: table: take this element of score cells that hold a JSON list (VIEScore's ``[SC, PQ]``: 0).
        dimension: table: the dimension of every row, unless a ``dimension`` field is mapped.
        score_range: the scale of critic answers and (after ``human_range``) of human scores.
        human_range: rescale human scores linearly from this (low, high) onto ``score_range``; None when they are
            already on it.
        check_images: skip samples whose image or source file is missing (needed when a critic will judge them).
        strict: raise at the first unusable record instead of skipping it.
    """

    human: Path | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    layout: Literal["long", "wide"] = "long"
    element: int | None = None
    dimension: str | None = None
    score_range: ScoreRange = FIRM_RANGE
    human_range: tuple[float, float] | None = None
    check_images: bool = True
    strict: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(k for k in self.fields if k not in FIELD_KEYS and not k.startswith("score."))
        if unknown:
            raise ValueError(f"unknown field key(s) {', '.join(unknown)}; known: {', '.join(FIELD_KEYS)}, score.DIM")
        if self.human_range is not None and not self.human_range[0] < self.human_range[1]:
            raise ValueError(f"human range needs low < high, got {self.human_range}")

    def human_score(self, value: float) -> float:
        """A raw human score on ``score_range``.

        Raises:
            ValueError: for a score outside its scale.
        """
        low, high = self.human_range or (self.score_range.low, self.score_range.high)
        if not low <= value <= high:
            raise ValueError(f"human score {value:g} outside {low:g}-{high:g}")
        span = self.score_range.high - self.score_range.low
        return self.score_range.low + (value - low) / (high - low) * span


class _Skip(Exception):
    """A record that cannot be used; the message says why."""


class _Collector:
    """Gathers samples and skipped records, enforcing ``strict``."""

    def __init__(self, options: ReadOptions) -> None:
        self.options = options
        self.samples: list[BenchSample] = []
        self.skipped: list[Skipped] = []

    def skip(self, where: str, reason: str) -> None:
        if self.options.strict:
            raise ValueError(f"{where}: {reason}")
        self.skipped.append(Skipped(where, reason))

    def bench(self, name: str, fields: Mapping[str, str]) -> Bench:
        if not self.samples:
            reasons = "; ".join(f"{s.where}: {s.reason}" for s in self.skipped[:3])
            raise ValueError(f"no usable sample in {name}" + (f" ({reasons})" if reasons else ""))
        return Bench(name, self.samples, self.options.score_range, self.skipped, dict(fields))


def _warn_unused(options: ReadOptions, fmt: str, applicable: Sequence[str]) -> None:
    defaults = ReadOptions()
    for name in ("human", "layout", "element", "dimension"):
        if name not in applicable and getattr(options, name) != getattr(defaults, name):
            warnings.warn(f"the {name} setting does not apply to the {fmt} format and is ignored", stacklevel=3)


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """(where, record) per non-blank line; a line that is not a JSON object comes as its error message."""
    check_file(path, "bench file", ValueError)
    for where, record in read_jsonl(path):
        line = where.rsplit(":", 1)[1]
        yield f"{path.name}:{line}", record.reason.removeprefix("is ") if isinstance(record, RecordError) else record


def _optional(record: Mapping[str, Any], fields: Mapping[str, str], key: str) -> str | None:
    if key not in fields:
        return None
    try:
        return str(lookup(record, fields[key]))
    except MissingField:
        return None


def _required(record: Mapping[str, Any], fields: Mapping[str, str], key: str) -> Any:
    try:
        return lookup(record, fields[key])
    except MissingField as exc:
        raise _Skip(f"{exc} (set --field {key}=SPEC)") from None


def _image(base: Path, value: str | None, options: ReadOptions, what: str) -> Path | None:
    if value is None:
        return None
    path = base / value
    if options.check_images and not path.is_file():
        raise _Skip(f"{what} image not found: {path}")
    return path


def _human(record: Mapping[str, Any], spec: str, options: ReadOptions, key: str) -> float:
    raw = _required(record, {key: spec}, key)
    try:
        return options.human_score(to_score(raw))
    except ValueError as exc:
        raise _Skip(str(exc)) from None


def _samples_from_record(
    record: Mapping[str, Any], fields: Mapping[str, str], scores: Mapping[str, str], base: Path, options: ReadOptions
) -> list[BenchSample]:
    """The samples of one JSON record: one per dimension in ``scores`` (dimension -> spec) that the record has."""
    sample_id = str(_required(record, fields, "id"))
    found = {dim: spec for dim, spec in scores.items() if _has(record, spec)}
    if not found:
        raise _Skip(f"no human score at {', '.join(repr(s) for s in scores.values())} for id {sample_id!r}")
    text = str(_required(record, fields, "text")) if "text" in fields else ""
    image = _image(base, str(_required(record, fields, "image")), options, "the")
    source = _image(base, _optional(record, fields, "source"), options, "source")
    difficulty = _optional(record, fields, "difficulty")
    difficulty = GEN_DIFFICULTY.get(difficulty, difficulty) if difficulty is not None else None
    group = _optional(record, fields, "group") or f"{text}\x00{source}"
    return [
        BenchSample(
            id=sample_id,
            dimension=dim,
            human=_human(record, spec, options, f"score.{dim}"),
            text=text,
            image=image,
            source=source,
            difficulty=difficulty,
            model=_optional(record, fields, "model"),
            group=group,
        )
        for dim, spec in found.items()
    ]


def _has(record: Mapping[str, Any], spec: str) -> bool:
    try:
        lookup(record, spec)
    except MissingField:
        return False
    return True


def read_shapesworld(paths: Sequence[Path], options: ReadOptions = ReadOptions()) -> Bench:
    """Read ShapesWorld's bench export (a jsonl beside its image folder).

    Raises:
        ValueError: for a missing file, more than one file, or no usable sample.
    """
    _warn_unused(options, "shapesworld", ())
    (path,) = _one(paths, "shapesworld")
    fields = {**SHAPESWORLD_FIELDS, **options.fields}
    out = _Collector(options)
    for where, record in _jsonl(path):
        try:
            if isinstance(record, str):
                raise _Skip(record)
            dimension = str(_required(record, fields, "dimension"))
            out.samples.extend(_samples_from_record(record, fields, {dimension: fields["score"]}, path.parent, options))
        except _Skip as exc:
            out.skip(where, str(exc))
    return out.bench(path.name, fields)


def _one(paths: Sequence[Path], fmt: str) -> tuple[Path]:
    if len(paths) != 1:
        raise ValueError(f"the {fmt} format reads one bench file, got {len(paths)}")
    return (paths[0],)


def _read_firm_bench(paths: Sequence[Path], options: ReadOptions, track: Literal["edit", "gen"]) -> Bench:
    fmt = f"firm-bench-{track}"
    _warn_unused(options, fmt, ("human",))
    (path,) = _one(paths, fmt)
    human_path = options.human or path.parent / "result" / "human_bench_v1.jsonl"
    fields = {**FIRM_BENCH_FIELDS[track], **options.fields}
    scores = {key.removeprefix("score."): spec for key, spec in fields.items() if key.startswith("score.")}
    out = _Collector(options)
    inputs: dict[str, dict[str, Any]] = {}
    for where, record in _jsonl(path):
        try:
            if isinstance(record, str):
                raise _Skip(record)
            inputs[str(_required(record, fields, "id"))] = record
        except _Skip as exc:
            out.skip(where, str(exc))
    used: set[str] = set()
    for where, record in _jsonl(human_path):
        try:
            if isinstance(record, str):
                raise _Skip(record)
            sample_id = str(_required(record, fields, "id"))
            if sample_id not in inputs:
                raise _Skip(f"id {sample_id!r} has human scores but no line in {path.name}")
            used.add(sample_id)
            # The human line's fields win: it is the file the official MAE scripts read scores from.
            merged = {**inputs[sample_id], **record}
            out.samples.extend(_samples_from_record(merged, fields, scores, path.parent, options))
        except _Skip as exc:
            out.skip(where, str(exc))
    for sample_id in inputs.keys() - used:
        out.skip(path.name, f"id {sample_id!r} has no human scores in {human_path.name}")
    return out.bench(f"{path.parent.name}/{path.name}", {**fields, "human": str(human_path)})


def read_firm_bench_edit(paths: Sequence[Path], options: ReadOptions = ReadOptions()) -> Bench:
    """Read FIRM-Bench-Edit: ``bench_v1.jsonl`` joined on id with its human scores (execution, consistency)."""
    return _read_firm_bench(paths, options, "edit")


def read_firm_bench_gen(paths: Sequence[Path], options: ReadOptions = ReadOptions()) -> Bench:
    """Read FIRM-Bench-Gen: ``bench_v1.jsonl`` joined on id with its human scores (instruction, easy/hard)."""
    return _read_firm_bench(paths, options, "gen")


def _table_rows(path: Path) -> list[tuple[str, dict[str, Any] | str]]:
    if path.suffix.lower() in (".jsonl", ".json"):
        return list(_jsonl(path))
    check_file(path, "bench file", ValueError)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        return [(f"{path.name}:{i}", dict(row)) for i, row in enumerate(reader, 2)]


def read_table(paths: Sequence[Path], options: ReadOptions = ReadOptions()) -> Bench:
    """Read a generic table of human scores: jsonl, CSV (``.csv``) or TSV (``.tsv``).

    Several files are several raters, joined on ``id`` (and the model column in the wide layout); the first file also
    gives the inputs (text, image, source). A sample's human score is the mean of the raters that scored it.

    Raises:
        ValueError: for a missing file, no dimension, or no usable sample.
    """
    _warn_unused(options, "table", ("layout", "element", "dimension"))
    fields = {"id": "id", "score": "score", **options.fields}
    if "dimension" not in fields and options.dimension is None:
        raise ValueError("a table needs the dimension its scores are for: give --dimension or --field dimension=COL")
    out = _Collector(options)
    first_rows = _table_rows(paths[0])
    columns = [c.strip() for c in fields["score"].split(",") if c.strip()]
    if options.layout == "wide" and "score" not in options.fields:
        # Every column that is not mapped to another setting holds one model's scores.
        mapped = {spec for key, spec in fields.items() if key != "score"}
        header = next((row for _, row in first_rows if isinstance(row, dict)), {})
        columns = [c for c in header if c not in mapped]
    ratings: dict[tuple[str, str], list[float]] = {}
    records: dict[tuple[str, str], tuple[str, Mapping[str, Any], str | None]] = {}
    for index, path in enumerate(paths):
        rows = first_rows if index == 0 else _table_rows(path)
        for where, row in rows:
            try:
                if isinstance(row, str):
                    raise _Skip(row)
                for key, model, value in _cells(row, fields, columns, options):
                    if index == 0:
                        records.setdefault(key, (where, row, model))
                    score = _table_score(value, options)
                    if score is not None:
                        ratings.setdefault(key, []).append(score)
            except _Skip as exc:
                out.skip(where, str(exc))
    for sample_id, _ in ratings.keys() - records.keys():
        out.skip(paths[0].name, f"{sample_id!r} is scored by another rater file but has no row here")
    base = paths[0].parent
    for key, (where, record, model) in records.items():
        try:
            out.samples.append(_table_sample(key, record, model, ratings.get(key, []), fields, base, options))
        except _Skip as exc:
            out.skip(where, str(exc))
    names = ", ".join(p.name for p in paths)
    return out.bench(names, {**fields, "score": ",".join(columns), "layout": options.layout})


def _cells(
    row: Mapping[str, Any], fields: Mapping[str, str], columns: Sequence[str], options: ReadOptions
) -> Iterator[tuple[tuple[str, str], str | None, Any]]:
    """((sample id, dimension), model, raw score) for each score cell of a row."""
    row_id = str(_required(row, fields, "id"))
    dimension = str(_required(row, fields, "dimension")) if "dimension" in fields else str(options.dimension)
    for column in columns:
        if options.layout == "wide":
            yield (f"{row_id}/{column}", dimension), column, row.get(column)
        else:
            yield (row_id, dimension), None, row.get(column)


def _table_score(value: Any, options: ReadOptions) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # this rater did not score this sample
    try:
        return options.human_score(to_score(value, options.element))
    except ValueError as exc:
        raise _Skip(str(exc)) from None


def _table_sample(
    key: tuple[str, str],
    row: Mapping[str, Any],
    model: str | None,
    raters: list[float],
    fields: Mapping[str, str],
    base: Path,
    options: ReadOptions,
) -> BenchSample:
    sample_id, dimension = key
    if not raters:
        raise _Skip(f"no rater scored {sample_id!r}")
    image = _image(base, _optional(row, fields, "image"), options, "the")
    row_id = str(_required(row, fields, "id"))
    return BenchSample(
        id=sample_id,
        dimension=dimension,
        human=sum(raters) / len(raters),
        text=_optional(row, fields, "text") or "",
        image=image,
        source=_image(base, _optional(row, fields, "source"), options, "source"),
        difficulty=_optional(row, fields, "difficulty"),
        model=model or _optional(row, fields, "model"),
        group=_optional(row, fields, "group") or (row_id if model is not None else None),
        raters=tuple(raters),
    )


Reader = Callable[[Sequence[Path], ReadOptions], Bench]

#: Bench formats by name, as ``firm bench --format`` chooses them.
READERS: dict[str, Reader] = {
    "shapesworld": read_shapesworld,
    "firm-bench-edit": read_firm_bench_edit,
    "firm-bench-gen": read_firm_bench_gen,
    "table": read_table,
}


def read_bench(fmt: str, paths: Sequence[Path], options: ReadOptions = ReadOptions()) -> Bench:
    """Read a bench in the named format (one of :data:`READERS`).

    Raises:
        ValueError: for an unknown format or unreadable bench.
    """
    if fmt not in READERS:
        raise ValueError(f"unknown bench format {fmt!r}; choose one of {', '.join(READERS)}")
    return READERS[fmt](paths, options)

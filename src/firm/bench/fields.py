"""Field specs: where a value lives in a bench record, as a setting rather than a guess.

A spec is a key, or a dotted path into nested JSON where integer parts index lists: ``instruction_following.score``,
``image.0``. A value that ends as a list is replaced by its first element, because the official FIRM-Bench files
wrap single values in one-element lists (``"score": [4]``, ``"image": ["en/12.png"]``). The prefix ``dir:`` takes
the first folder of a path value: ``dir:image`` is ``en`` for ``en/12.png``. A key that contains dots is found as it
is before the path is walked, so CSV column names work unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any


class MissingField(KeyError):
    """The record has no value at the spec."""

    def __init__(self, spec: str, record: Mapping[str, Any]) -> None:
        super().__init__(spec)
        self.spec = spec
        self.keys = sorted(str(k) for k in record)

    def __str__(self) -> str:
        return f"no field {self.spec!r} (the record has: {', '.join(self.keys) or 'nothing'})"


def lookup(record: Mapping[str, Any], spec: str, first: bool = True) -> Any:
    """The value at ``spec`` in ``record`` (see the module doc for the spec syntax).

    Args:
        record: one bench record (a JSON object or a table row).
        spec: where the value is.
        first: replace a list value by its first element; False keeps the list (to pick another element).

    Raises:
        MissingField: when a part of the path is absent, or the value is null or an empty string.
    """
    to_folder = spec.startswith("dir:")
    path = spec.removeprefix("dir:")
    value: Any = record.get(path) if path in record else _walk(record, path)
    if first and isinstance(value, list):
        value = value[0] if value else None
    if value is None or value == "":
        raise MissingField(spec, record)
    if to_folder:
        parts = PurePosixPath(str(value).replace("\\", "/")).parts
        if len(parts) < 2:
            raise MissingField(spec, record)  # a bare file name has no folder
        return parts[0]
    return value


def _walk(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def to_score(value: Any, element: int | None = None) -> float:
    """A human or critic score from a record value: a number, a numeric string, or an element of a list.

    Args:
        value: the looked-up value.
        element: for a list value (or a string holding a JSON list, as in VIEScore's ``[0.5, 1]`` cells), the index
            of the score in it; None takes a number as it is.

    Raises:
        ValueError: for a value that is not a finite number, or a list where no element was chosen.
    """
    if element is not None:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"expected a JSON list to take element {element} of, got {value!r}") from None
        if not isinstance(value, list):
            value = [value]  # VIEScore's judges sometimes give one number where a list was asked for
        if element >= len(value):
            raise ValueError(f"list {value!r} has no element {element}")
        value = value[element]
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(score):
        raise ValueError(f"expected a finite number, got {value!r}")
    return score

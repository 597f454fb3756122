"""Register throwaway plugins in tests through real entry points (a temporary ``.dist-info`` on ``sys.path``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def temporary_distribution(
    where: Path, name: str, entry_points: Mapping[str, Mapping[str, str]], version: str = "0.0.1"
) -> Iterator[Path]:
    """Make a distribution called ``name`` with these entry points visible to ``importlib.metadata``.

    Args:
        where: an empty folder to hold the ``.dist-info`` (a pytest ``tmp_path``).
        name: the distribution name.
        entry_points: group -> {entry name: "module:attribute"}.
        version: the distribution version.
    """
    info = where / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    sys.path.insert(0, str(where))
    try:
        yield info
    finally:
        sys.path.remove(str(where))

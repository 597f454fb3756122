"""``firm plugins``: list registered critics, rewards, editors, generators and annotators."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plugins",
        help="list registered plugins (built-ins included)",
        description="List every plugin firm can load: group, name, class path, distribution and version.",
    )
    parser.add_argument("--group", help="only this group, e.g. firm.rewards (or just 'rewards')")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    return parser


def run(args: argparse.Namespace) -> int:
    from firm import plugins

    group = args.group
    if group and not group.startswith("firm."):
        group = f"firm.{group}"
    try:
        found = plugins.discover(group)
    except ValueError as exc:
        from firm.commands import UsageError

        raise UsageError(str(exc)) from exc
    if args.json:
        for plugin in found:
            print(json.dumps(asdict(plugin)))
        return 0
    rows = [("group", "name", "class", "distribution", "version")]
    rows += [(p.group, p.name, p.value, p.distribution, p.version) for p in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0

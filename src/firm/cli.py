"""The ``firm`` command: one entry point for every job.

``firm score`` judges images with a critic, ``firm plugins`` lists what is registered, ``firm world`` writes
ShapesWorld data. Bad input prints one line naming the problem and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from firm import __version__
from firm.commands import UsageError

#: modules that each add one subcommand: ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = (
    "firm.commands.score",
    "firm.commands.plugins",
    "firm.worlds.shapes.cli",
    "firm.bench.cli",
    "firm.serving.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firm", description="Faithful image reward modeling: critics, rewards, benchmarks and RL for images."
    )
    parser.add_argument("--version", action="version", version=f"firm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        sub = importlib.import_module(module).add_parser(subparsers)
        sub.set_defaults(_run=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``firm`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = importlib.import_module(args._run).run(args)
    except UsageError as exc:
        print(f"firm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"firm {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

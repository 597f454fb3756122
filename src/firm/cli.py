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
from firm.errors import InputError

#: modules that each add one subcommand: ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = (
    "firm.commands.score",
    "firm.commands.plugins",
    "firm.commands.world",
    "firm.commands.bench",
    "firm.commands.serve",
    "firm.commands.export",
    "firm.commands.curate",
)

#: Lightning's own subcommands, run by firm's LightningCLI (``firm.fit``) on a recipe.
LIGHTNING_COMMANDS = {
    "fit": "train a task from a recipe: firm fit -c recipes/debug/critic_sft_tiny.yaml",
    "validate": "validate a task from a recipe",
    "test": "test a task from a recipe",
}

#: Lightning's subcommands that no firm task supports: an answer that says what to do instead, not argparse's usage.
NOT_OFFERED = {
    "predict": "no firm task has a predict step; export the trained critic (firm export CHECKPOINT OUT) and judge "
    "with it: firm score --model OUT for new samples, firm bench --model OUT for scored ones",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firm", description="Faithful image reward modeling: critics, rewards, benchmarks and RL for images."
    )
    parser.add_argument("--version", action="version", version=f"firm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in LIGHTNING_COMMANDS.items():
        # Listed for --help only: main() hands these to LightningCLI before argparse sees them.
        subparsers.add_parser(name, help=f"{summary} (see firm {name} --help)", add_help=False)
    for module in COMMANDS:
        sub = importlib.import_module(module).add_parser(subparsers)
        sub.set_defaults(_run=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``firm`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in NOT_OFFERED:
        print(f"firm {words[0]}: error: {NOT_OFFERED[words[0]]}", file=sys.stderr)
        return 2
    if words and words[0] in LIGHTNING_COMMANDS:
        from firm.fit import main as lightning_main

        return lightning_main(argv)  # None: LightningCLI reads sys.argv itself
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = importlib.import_module(args._run).run(args)
    except ConnectionError as exc:  # a critic server that cannot be reached: the retries said so already
        print(f"firm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except InputError as exc:  # a command's UsageError or the library's: one line, exit 2
        print(f"firm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"firm {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

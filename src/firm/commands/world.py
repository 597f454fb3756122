"""``firm world``: write ShapesWorld critic shards, bench folders, RL prompt sets, curation pairs and contact sheets.

Examples::

    firm world shards --dimension execution -n 2000 --size 64 --split train --seed 0 --out data/shapes
    firm world bench -n 100 --size 256 --split bench --out data/shapes-bench
    firm world prompts --task edit -n 1000 --size 256 --split train --out data/shapes-rl-edit
    firm world pairs --task edit -n 1000 --size 256 --split train --out data/shapes-pairs-edit
    firm world sheet --task edit -n 15 --size 128 --out edits.png

``firm.cli`` mounts this with :func:`add_parser` and :func:`run`; :func:`main` runs it on its own (tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from firm.commands import UsageError
from firm.critics.base import DIMENSIONS, task_of
from firm.errors import InputError
from firm.worlds.shapes.balance import UNIFORM, parse_histogram
from firm.worlds.shapes.export import write_bench, write_pairs, write_prompts, write_shards
from firm.worlds.shapes.render import MAX_SIZE, MIN_SIZE
from firm.worlds.shapes.sheet import edit_sheet, gen_sheet
from firm.worlds.shapes.world import SPLITS, ShapesWorld

_HISTOGRAM_HELP = "weights of scores 1-5, e.g. 0,1,1,1,2 (default 1,1,1,1,1: uniform)"


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one error line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _size(text: str) -> int:
    value = _count(text)
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"image size must be in {MIN_SIZE}-{MAX_SIZE} px, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _histogram(text: str) -> tuple[float, ...]:
    try:
        return parse_histogram(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _dimensions(text: str) -> list[str]:
    names = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in names if d not in DIMENSIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown dimension {bad[0] if bad else text!r}; choose from {', '.join(DIMENSIONS)}"
        )
    return names


def _common(p: argparse.ArgumentParser, size: int, split: str) -> None:
    p.add_argument("--size", type=_size, default=size, help=f"image side in px, {MIN_SIZE}-{MAX_SIZE} (default {size})")
    p.add_argument(
        "--split", choices=SPLITS, default=split, help=f"seed stream; splits never share samples (default {split})"
    )
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``world`` command (with its sub-commands) to an ``add_subparsers()`` object; returns its parser."""
    world = subparsers.add_parser(
        "world", help="write ShapesWorld data (shards, bench, RL prompts, curation pairs, contact sheets)"
    )
    sub = world.add_subparsers(dest="world_command", required=True, parser_class=_OneLineParser)

    shards = sub.add_parser("shards", help="critic SFT samples as WebDataset shards")
    shards.add_argument("--dimension", choices=tuple(DIMENSIONS), required=True)
    shards.add_argument("--task", choices=("edit", "gen"), help="optional; must match the dimension")
    shards.add_argument("-n", type=_count, required=True, help="number of samples")
    shards.add_argument("--out", type=Path, required=True, help="output folder")
    shards.add_argument("--histogram", type=_histogram, default=UNIFORM, help=_HISTOGRAM_HELP)
    shards.add_argument("--shard-size", type=_count, default=1000, help="samples per shard (default 1000)")
    shards.add_argument("--workers", type=_count, default=1, help="worker processes, one shard each (default 1)")
    shards.add_argument(
        "--overwrite", action="store_true", help="replace the shards an earlier run left in --out (default: refuse)"
    )
    _common(shards, 64, "train")

    bench = sub.add_parser("bench", help="a bench folder: bench.jsonl + images/ for `firm bench`")
    bench.add_argument("-n", type=_count, required=True, help="samples per dimension")
    bench.add_argument("--out", type=Path, required=True, help="output folder")
    bench.add_argument(
        "--dimensions", type=_dimensions, default=list(DIMENSIONS), help="comma-separated (default all four)"
    )
    bench.add_argument("--histogram", type=_histogram, default=UNIFORM, help=_HISTOGRAM_HELP)
    _common(bench, 256, "bench")

    prompts = sub.add_parser("prompts", help="an RL prompt set (edit: source image + instruction; gen: prompt)")
    prompts.add_argument("--task", choices=("edit", "gen"), required=True)
    prompts.add_argument("-n", type=_count, required=True, help="number of prompts")
    prompts.add_argument("--out", type=Path, required=True, help="output folder")
    _common(prompts, 256, "train")

    pairs = sub.add_parser(
        "pairs", help="unlabelled curation inputs for `firm curate` (pairs.jsonl + images/; the shapes annotator)"
    )
    pairs.add_argument("--task", choices=("edit", "gen"), required=True)
    pairs.add_argument("-n", type=_count, required=True, help="number of pairs")
    pairs.add_argument("--out", type=Path, required=True, help="output folder")
    pairs.add_argument(
        "--dimension",
        choices=("execution", "consistency", "instruction", "quality"),
        help="draw the cases of this dimension's critic samples, scores following --histogram (default: natural mix)",
    )
    pairs.add_argument("--histogram", type=_histogram, default=UNIFORM, help="with --dimension: weights of scores 1-5")
    _common(pairs, 256, "train")

    sheet = sub.add_parser("sheet", help="a contact sheet PNG of edits or generations with their scores")
    sheet.add_argument("--task", choices=("edit", "gen"), required=True)
    sheet.add_argument("-n", type=_count, default=15, help="number of cells (default 15)")
    sheet.add_argument("--out", type=Path, required=True, help="output PNG path")
    _common(sheet, 128, "val")

    world.set_defaults(run=run)
    return world


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``firm world`` command; returns the exit code."""
    mixed = args.world_command in ("shards", "pairs") and args.task and args.dimension
    if mixed and args.task != task_of(args.dimension):
        raise UsageError(f"--task {args.task} does not match --dimension {args.dimension}")
    if args.world_command == "sheet":
        _check_image_path(args.out)
    world = ShapesWorld(size=args.size, split=args.split, seed=args.seed)
    progress = not args.no_progress
    if args.world_command == "shards":
        paths = write_shards(
            world, args.dimension, args.n, args.out, args.histogram, args.shard_size, args.workers, progress,
            overwrite=args.overwrite,
        )  # fmt: skip
        print(f"wrote {args.n} {args.dimension} samples to {len(paths)} shard(s) in {args.out}")
    elif args.world_command == "bench":
        path = write_bench(world, args.n, args.out, args.dimensions, args.histogram, progress)
        print(f"wrote {args.n * len(args.dimensions)} bench samples to {path}")
    elif args.world_command == "prompts":
        path = write_prompts(world, args.task, args.n, args.out, progress)
        print(f"wrote {args.n} {args.task} prompts to {path}")
    elif args.world_command == "pairs":
        path = write_pairs(world, args.task, args.n, args.out, progress, args.dimension, args.histogram)
        print(f"wrote {args.n} {args.task} pairs to {path}")
    else:
        image = edit_sheet(world, args.n) if args.task == "edit" else gen_sheet(world, args.n)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        image.save(args.out)
        print(f"wrote a {image.width}x{image.height} contact sheet to {args.out}")
    return 0


def _check_image_path(out: Path) -> None:
    """An image file path PIL can write (by its extension), checked before any rendering."""
    from PIL import Image

    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give the image file to write, e.g. {out / 'sheet.png'}")
    if Image.registered_extensions().get(out.suffix.lower()) not in Image.SAVE:
        raise UsageError(f"--out {out}: unknown image extension {out.suffix or '(none)'!r}; use .png, .jpg or .webp")


def main(argv: list[str] | None = None) -> int:
    """Run ``firm world`` on its own; ``argv`` is what follows ``firm world``, e.g. ``["sheet", "--task", "edit"]``."""
    parser = _OneLineParser(prog="firm")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser))
    try:
        args = parser.parse_args(["world", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as stop:  # argparse exits on --help (0) and bad arguments (2); return the code instead
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return int(args.run(args))
    except InputError as exc:  # as firm.cli prints it: one line, exit 2
        print(f"firm world {args.world_command}: error: {exc}", file=sys.stderr)
        return 2

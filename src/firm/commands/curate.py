"""``firm curate edit|gen``: label edits (difference-first) or generations (plan-then-score) into critic shards.

Examples::

    firm world pairs --task edit -n 500 --out pairs/                          # ShapesWorld inputs, no labels
    firm curate edit --input pairs/pairs.jsonl --output curated/ --annotator shapes --rewrite-fraction 0.2
    firm curate gen --input gens.jsonl --output curated-gen/ --annotator mllm \\
        --annotator-set backend=openai --annotator-set base_url=http://127.0.0.1:8000/v1 \\
        --annotator-set model=Qwen/Qwen3-VL-235B-A22B-Instruct \\
        --planner planner --planner-set backend=openai --planner-set base_url=http://127.0.0.1:8001/v1 \\
        --planner-set model=Qwen/Qwen3-32B

Rerunning the same command continues where it stopped: inputs already labelled are skipped, the shards are written
again from the labels. The output folder holds ``labels.jsonl`` (every input's labels or rejections),
``curated-<task>-NNNNNN.tar`` shards that ``firm fit`` reads, ``rejected.jsonl`` and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from firm.commands import UsageError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "curate",
        help="label edits or generations with an annotator into critic training shards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", choices=("edit", "gen"), help="edit: difference-first; gen: plan-then-score")
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", required=True, help="a .jsonl file, .tar shards (brace patterns) or a folder")
    io.add_argument("--output", required=True, type=Path, help="the folder to write (and to resume from)")
    io.add_argument("--limit", type=int, help="label only the first N readable inputs")
    io.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    io.add_argument("--strict", action="store_true", help="stop at the first unreadable input")
    who = parser.add_argument_group("annotators (registered under firm.annotators: see firm plugins)")
    for role, default, what in (
        ("annotator", None, "scores images: shapes (exact, ShapesWorld), mllm (a vision-language model)"),
        ("planner", None, "writes generation plans and rewrites instructions: planner (a text LLM); the annotator"),
    ):
        who.add_argument(f"--{role}", default=default, required=role == "annotator", help=what)
        who.add_argument(f"--{role}-config", type=Path, help=f"YAML file of the {role}'s settings")
        who.add_argument(
            f"--{role}-set", action="append", default=[], metavar="KEY=VALUE", help=f"one {role} setting (repeat)"
        )
    how = parser.add_argument_group("what to label")
    how.add_argument("--dimensions", help="comma list; default execution,consistency (edit) or instruction (gen)")
    how.add_argument("--quality", action="store_true", help="gen: also run the quality pass (three sub-scores)")
    how.add_argument("--retries", type=int, default=2, help="extra tries of an unusable answer (default 2)")
    how.add_argument("--batch-size", type=int, default=16, help="inputs labelled together (default 16)")
    how.add_argument("--seed", type=int, default=0, help="decides rewritten inputs and rebalancing (default 0)")
    how.add_argument("--retry-rejected", action="store_true", help="label again the inputs a run rejected")
    bal = parser.add_argument_group("low-score balancing")
    bal.add_argument(
        "--rewrite-fraction", type=float, default=0.0, help="edit: share of instructions also rewritten to mismatch"
    )
    bal.add_argument("--target-histogram", help="weights of scores 1-5 to rebalance to, e.g. 1,1,1,1,1")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from firm.curation.balance import parse_histogram
    from firm.curation.factory import build_annotator, parse_settings
    from firm.curation.pipeline import CurateSettings, Curation

    if args.planner is None and (args.planner_set or args.planner_config):
        raise UsageError("--planner-set / --planner-config need --planner NAME")
    try:
        target = None if args.target_histogram is None else parse_histogram(args.target_histogram)
    except ValueError as err:
        raise UsageError(f"--target-histogram: {err}") from None
    dims = tuple(d.strip() for d in args.dimensions.split(",") if d.strip()) if args.dimensions else ()
    settings = CurateSettings(
        task=args.task,
        dimensions=dims,
        quality=args.quality,
        retries=args.retries,
        batch_size=args.batch_size,
        rewrite_fraction=args.rewrite_fraction,
        target_histogram=target,
        shard_size=args.shard_size,
        seed=args.seed,
        strict=args.strict,
        retry_rejected=args.retry_rejected,
        limit=args.limit,
    )
    annotator = build_annotator(args.annotator, parse_settings(args.annotator_set, args.annotator_config))
    planner = None
    try:
        if args.planner is not None:
            planner_settings = parse_settings(args.planner_set, args.planner_config, "--planner")
            planner = build_annotator(args.planner, planner_settings, "--planner")
        manifest = Curation(settings, annotator, planner, progress=not args.no_progress).run(args.input, args.output)
    finally:
        annotator.close()
        if planner is not None:
            planner.close()
    counts = manifest["counts"]
    samples = ", ".join(f"{n} {d}" for d, n in counts["samples"].items()) or "none"
    print(
        f"curated {counts['inputs']} inputs into {args.output}: {counts['labelled']} labelled, "
        f"{counts['rejected']} rejected, {counts['duplicates']} duplicates, {counts['bad_inputs']} unreadable; "
        f"samples: {samples} in {len(manifest['shards'])} shard(s); see {args.output / 'manifest.json'}",
        file=sys.stderr,
    )
    return 0

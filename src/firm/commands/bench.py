"""``firm bench``: measure critics against human scores, on FIRM-Bench, ShapesWorld or any human-rated table.

Runs critics on the bench (verdicts cached under --out, so an interrupted run resumes) or reads precomputed
predictions, adds reference rows (a constant, the best constant, a seeded random critic), and writes predictions, a
Markdown report with a table shaped like FIRM's Tables 1-2, metrics.json and PNG plots. The table is printed.

Examples::

    firm bench --bench shapes_bench/bench.jsonl --model ./my-critic --out runs/bench
    firm bench --bench shapes_bench/bench.jsonl --critic-config a.yaml --critic-config b.yaml --out runs/bench
    firm bench --format firm-bench-gen --bench FIRM-Bench-Gen/bench_v1.jsonl --predictions gpt5=gpt5.jsonl \\
        --out runs/gen
    firm bench --format table --bench rater1.tsv rater2.tsv rater3.tsv --layout wide --element 0 --field id=uid \\
        --dimension execution --score-range 0,10 --human-range 0,1 --predictions gpt4o=gpt4o.jsonl --out runs/vie

A critic config (YAML or JSON) is ``{"name": ..., "class_path": ..., "init_args": {...}}``; ``class_path`` is a
registered critic name (``generative``) or a class path, ``name`` defaults to the file name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firm.commands import UsageError
from firm.commands.critic_flags import add_critic_arguments, build, critic_spec, given_critic_flags

if TYPE_CHECKING:
    from firm.bench.result import CriticResult, PairBy
    from firm.bench.sample import Bench
    from firm.critics.factory import CriticSpec


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``firm``'s subparsers."""
    from firm.bench.readers import READERS

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure critics against human scores (FIRM-Bench, ShapesWorld, tables)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench = parser.add_argument_group("the bench")
    bench.add_argument("--bench", type=Path, nargs="+", required=True, help="bench file (table: one file per rater)")
    bench.add_argument("--format", default="shapesworld", choices=sorted(READERS), help="bench format (shapesworld)")
    bench.add_argument("--human", type=Path, help="firm-bench: human scores (default result/human_bench_v1.jsonl)")
    bench.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="KEY=SPEC",
        help="where a value is: id, text, image, source, score, score.DIM, dimension, difficulty, model, group "
        "(dotted JSON path; 'dir:image' = the image's folder); repeatable",
    )
    bench.add_argument("--layout", choices=("long", "wide"), default="long", help="table: one column per model (wide)")
    bench.add_argument("--element", type=int, help="table: take this element of score cells holding a JSON list")
    bench.add_argument("--dimension", help="table: the dimension every row is scored on")
    bench.add_argument("--score-range", default="1,5", metavar="LOW,HIGH", help="integer score scale (1,5)")
    bench.add_argument("--human-range", metavar="LOW,HIGH", help="rescale human scores from this range to the scale")
    bench.add_argument("--limit", type=int, help="use only the first N samples")
    bench.add_argument("--strict", action="store_true", help="fail on a bad bench record instead of skipping it")
    critics = parser.add_argument_group("critics (one from flags, more from --critic-config, hosted ones as files)")
    add_critic_arguments(critics, critic_default=None)
    critics.add_argument("--critic-name", help="row name of the --critic/--model critic (default: the model folder)")
    critics.add_argument("--critic-config", type=Path, action="append", default=[], metavar="FILE", help="repeatable")
    critics.add_argument(
        "--predictions", action="append", default=[], metavar="NAME=PATH", help="precomputed predictions; repeatable"
    )
    critics.add_argument("--chunk", type=int, default=64, help="requests per critic call and cache flush (64)")
    critics.add_argument("--seed", type=int, default=0, help="seed of the random reference critic (0)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, required=True, help="folder for predictions, cache, report and plots")
    output.add_argument(
        "--pairs",
        choices=("group", "dimension"),
        default="group",
        help="pairwise accuracy compares candidates for the same input (group) or any two samples (dimension)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``firm bench``; returns the exit code."""
    from firm.bench.plots import slug, write_plots
    from firm.bench.predictions import write_predictions
    from firm.bench.report import write_metrics, write_report
    from firm.critics.factory import CriticSpec

    specs = _flag_critic(args) + [CriticSpec.from_file(path) for path in args.critic_config]
    predictions = [_named_path(item) for item in args.predictions]
    if args.chunk < 1:
        raise UsageError("--chunk must be at least 1")
    bench = _read(args, check_images=bool(specs))
    mid = (bench.score_range.low + bench.score_range.high) // 2
    reference_names = (f"constant {mid}", "best constant", f"random (seed {args.seed})")
    _check_names([s.row_name for s in specs] + [n for n, _ in predictions] + list(reference_names))

    results = [_run_critic(spec, bench, args) for spec in specs]
    results += [_read_predictions(name, path, bench, args.pairs) for name, path in predictions]
    results += _references(bench, reference_names, mid, args)
    for result in results:
        by_key = {s.key: v for s, v in zip(bench.samples, result.verdicts, strict=True)}
        write_predictions(args.out / "predictions" / f"{slug(result.name)}.jsonl", bench, by_key)
    plots = write_plots(args.out / "plots", bench, results)
    table = write_report(args.out / "report.md", bench, results, plots, args.pairs)
    write_metrics(args.out / "metrics.json", bench, results)
    print(table)
    print(f"firm bench: wrote {args.out / 'report.md'}, metrics.json, predictions/ and plots/", file=sys.stderr)
    return 0


def _run_critic(spec: CriticSpec, bench: Bench, args: argparse.Namespace) -> CriticResult:
    """Judge the bench with one critic through its cache; the model is loaded only if something is left to judge."""
    from firm.bench.plots import slug
    from firm.bench.predictions import VerdictCache
    from firm.bench.result import evaluate
    from firm.bench.runner import JudgeStats, judge_bench

    name = spec.row_name
    cache = VerdictCache(args.out / "cache" / f"{slug(name)}.jsonl", name, spec.key())
    if all(s.key in cache for s in bench.samples):
        verdicts, stats = {s.key: cache[s.key] for s in bench.samples}, JudgeStats(len(bench.samples), 0)
    else:
        critic = build(spec)
        try:
            if critic.score_range != bench.score_range:
                raise UsageError(
                    f"critic {name!r} answers on {critic.score_range.low}-{critic.score_range.high}, the bench "
                    f"is on {bench.score_range.low}-{bench.score_range.high}; set --score-range or the critic's range"
                )
            verdicts, stats = judge_bench(critic, bench.samples, cache, args.chunk, desc=name)
        except ValueError as exc:  # a bench without images
            raise UsageError(str(exc)) from exc
        finally:
            critic.close()
    note = f"{stats.reused} verdicts reused from the cache, {stats.judged} judged now"
    if stats.unreadable:
        note += f", {stats.unreadable} with an unreadable image (invalid, see predictions/)"
    return evaluate(bench, name, verdicts, "critic", args.pairs, (note,))


def _read_predictions(name: str, path: Path, bench: Bench, pair_by: PairBy) -> CriticResult:
    from firm.bench.predictions import read_predictions
    from firm.bench.result import evaluate

    try:
        read = read_predictions(path, bench)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    unmatched = (f"{len(read.unmatched)} lines match no bench sample",) if read.unmatched else ()
    return evaluate(bench, name, read, "predictions", pair_by, (f"read from {path}", *unmatched))


def _references(bench: Bench, names: tuple[str, str, str], mid: int, args: argparse.Namespace) -> list[CriticResult]:
    from firm.bench.result import evaluate
    from firm.bench.runner import best_constant_verdicts, constant_verdicts, random_verdicts

    best, chosen = best_constant_verdicts(bench)
    fitted = "constant per dimension: " + ", ".join(f"{dim} {score}" for dim, score in chosen.items())
    return [
        evaluate(bench, names[0], constant_verdicts(bench, mid), "reference", args.pairs),
        evaluate(bench, names[1], best, "reference", args.pairs, (fitted,)),
        evaluate(bench, names[2], random_verdicts(bench, args.seed), "reference", args.pairs),
    ]


def _read(args: argparse.Namespace, check_images: bool) -> Bench:
    from firm.bench.readers import ReadOptions, read_bench
    from firm.critics.base import ScoreRange

    low, high = _pair(args.score_range, "--score-range")
    if low != int(low) or high != int(high):
        raise UsageError(f"--score-range takes integers, got {args.score_range}")
    fields = dict(_key_value(item, "--field", "KEY=SPEC") for item in args.field)
    try:
        options = ReadOptions(
            human=args.human,
            fields=fields,
            layout=args.layout,
            element=args.element,
            dimension=args.dimension,
            score_range=ScoreRange(int(low), int(high)),
            human_range=_pair(args.human_range, "--human-range") if args.human_range else None,
            check_images=check_images,
            strict=args.strict,
        )
        bench = read_bench(args.format, args.bench, options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.limit is not None:
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")
        bench = bench.limit(args.limit)
    return bench


def _pair(text: str, flag: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"{flag} takes LOW,HIGH, got {text!r}") from None
    return low, high


def _key_value(item: str, flag: str, shape: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise UsageError(f"{flag} takes {shape}, got {item!r}")
    return key.strip(), value.strip()


def _named_path(item: str) -> tuple[str, Path]:
    name, path = _key_value(item, "--predictions", "NAME=PATH")
    return name, Path(path)


def _check_names(names: list[str]) -> None:
    from firm.bench.plots import slug

    seen: dict[str, str] = {}
    for name in names:
        if slug(name) in seen:
            raise UsageError(f"two rows would be named {name!r} (and {seen[slug(name)]!r}); give distinct names")
        seen[slug(name)] = name


def _flag_critic(args: argparse.Namespace) -> list[CriticSpec]:
    """The critic given by --critic/--model and the critic flags (none when neither is given)."""
    given = given_critic_flags(args)
    if args.critic is None and args.model is None:
        if given:
            from firm.critics.factory import CRITIC_FLAGS

            flags = ", ".join(f.option for f in CRITIC_FLAGS if f.name in given)
            raise UsageError(f"critic flags ({flags}) need --model or --critic; a --critic-config takes init_args")
        if args.critic_name:
            raise UsageError("--critic-name names the --critic/--model critic; give --model or --critic")
        return []
    return [critic_spec(args, critic=args.critic or "generative", name=args.critic_name)]

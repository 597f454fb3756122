"""A critic's MAE against ShapesWorld's truth and against the ShapesWorld judge's verdicts, on the same samples.

Where the judge (the ``shapes`` critic) is right, benching a critic against the judge measures the same thing as
benching it against the truth that rendered the images; this script shows whether that holds. It writes a ShapesWorld
bench (``firm world bench``'s folder: split ``bench``, scores spread evenly over 1-5), judges it with the ``shapes``
critic, whose valid verdicts become the reference labels (the samples it refuses are dropped and counted), runs the
critic under test once, and prints one Markdown row per critic and dimension:

- *judge refused*, *judge = truth*: the judge's invalid verdicts, and how many of its valid ones equal the truth;
- *invalid*: the critic's invalid verdicts (left out of every MAE, as in ``firm bench``);
- *MAE truth (all)*: against the truth on every sample, what ``firm bench`` reports on the bench;
- *MAE truth (judged)*, *MAE judge*: against the truth and against the judge on the samples the judge judged; equal
  wherever the judge agrees with the truth;
- *diff*: MAE judge minus MAE truth (judged).

A constant-3 row (``firm bench``'s reference) is printed beside the critic. Verdicts are cached under ``--out``, so
a rerun judges nothing again. The critic is chosen with ``firm bench``'s critic flags; the tiny debug critic::

    firm fit -c recipes/debug/critic_sft_tiny.yaml          # writes runs/critic_sft_tiny/hf
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/judge_as_truth.py --model runs/critic_sft_tiny/hf \\
        --max-new-tokens 320 --template execution=recipes/debug/templates/execution.txt \\
        --template consistency=recipes/debug/templates/consistency.txt \\
        --template instruction=recipes/debug/templates/instruction.txt \\
        --template quality=recipes/debug/templates/quality.txt --out runs/judge_as_truth
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from firm.bench import Bench, VerdictCache, evaluate, judge_bench, read_bench
from firm.bench.predictions import Key
from firm.bench.runner import constant_verdicts
from firm.commands import UsageError
from firm.commands.critic_flags import add_critic_arguments, build, critic_spec
from firm.critics.base import DIMENSIONS, Verdict
from firm.critics.factory import CriticSpec
from firm.worlds.shapes import ShapesWorld
from firm.worlds.shapes.export import write_bench


def _bench(out: Path, n: int, size: int, dimensions: list[str]) -> Bench:
    """The bench under ``out``, written first when absent (a rerun reuses it and the cached verdicts)."""
    path = out / "bench.jsonl"
    if not path.exists():
        write_bench(ShapesWorld(size=size, split="bench"), n, out, dimensions, progress=False)
    else:
        print(f"reusing {path} (its n, size and dimensions, whatever the flags say)")
    return read_bench("shapesworld", [path])


def _verdicts(spec: CriticSpec, bench: Bench, out: Path, chunk: int) -> dict[Key, Verdict]:
    critic = build(spec)
    cache = VerdictCache(out / f"cache-{spec.row_name}.jsonl", spec.row_name, spec.key())
    verdicts, stats = judge_bench(critic, bench.samples, cache, chunk=chunk, desc=spec.row_name)
    print(f"{spec.row_name}: {stats.judged} judged, {stats.reused} from the cache")
    return verdicts


def _by_judge(bench: Bench, judge: Mapping[Key, Verdict]) -> tuple[Bench, Bench]:
    """The samples the judge judged, labelled with the truth and with the judge's score."""
    kept, relabelled = [], []
    for sample in bench.samples:
        score = judge[sample.key].score
        if score is not None:
            kept.append(sample)
            relabelled.append(replace(sample, human=float(score)))
    return Bench(bench.name, kept, bench.score_range), Bench(f"{bench.name} (judge)", relabelled, bench.score_range)


def _f(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def table(bench: Bench, judge: Mapping[Key, Verdict], critics: Mapping[str, Mapping[Key, Verdict]]) -> None:
    truth_judged, judge_labels = _by_judge(bench, judge)
    print(
        "| critic | dimension | n | judge refused | judge = truth | invalid | MAE truth (all) | MAE truth (judged) "
        "| MAE judge | diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, verdicts in critics.items():
        on_all = evaluate(bench, name, verdicts).groups
        on_truth = evaluate(truth_judged, name, verdicts).groups
        on_judge = evaluate(judge_labels, name, verdicts).groups
        for dim in ("all", *bench.dimensions):
            samples = [s for s in bench.samples if dim in ("all", s.dimension)]
            judged = [s for s in samples if judge[s.key].score is not None]
            agree = sum(judge[s.key].score == s.human for s in judged)
            # a dimension the judge refused throughout has no slice in the judged benches
            truth = on_truth[dim].mae if dim in on_truth else math.nan
            by_judge = on_judge[dim].mae if dim in on_judge else math.nan
            print(
                f"| {name} | {dim} | {len(samples)} | {len(samples) - len(judged)} | {agree}/{len(judged)} | "
                f"{on_all[dim].n_invalid} | {_f(on_all[dim].mae)} | {_f(truth)} | {_f(by_judge)} | "
                f"{_f(by_judge - truth)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="samples per dimension (default 50)")
    parser.add_argument("--size", type=int, default=64, help="image side in px (default 64)")
    parser.add_argument("--dimensions", nargs="+", default=list(DIMENSIONS), choices=list(DIMENSIONS))
    parser.add_argument("--out", type=Path, default=Path("runs/judge_as_truth"), help="bench, caches")
    parser.add_argument("--chunk", type=int, default=16, help="requests per critic call and cache flush (16)")
    parser.add_argument("--critic-name", help="row name of the critic (default: the model folder)")
    add_critic_arguments(parser.add_argument_group("the critic under test (firm bench's flags)"))
    args = parser.parse_args()
    try:
        spec = critic_spec(args, name=args.critic_name)
        bench = _bench(args.out, args.n, args.size, args.dimensions)
        judge = _verdicts(CriticSpec("shapes"), bench, args.out, args.chunk)
        critic = _verdicts(spec, bench, args.out, args.chunk)
    except UsageError as exc:
        parser.error(str(exc))
    print()
    table(bench, judge, {spec.row_name: critic, "constant 3": constant_verdicts(bench, 3)})
    reasons = Counter(
        f"{s.dimension}: {(judge[s.key].invalid_reason or '')[:100]}"
        for s in bench.samples
        if judge[s.key].score is None
    )
    if reasons:
        print("\nthe judge's most common reasons for refusing (first 100 characters):")
        for reason, count in reasons.most_common(12):
            print(f"  {count:4d}  {reason}")


if __name__ == "__main__":
    main()

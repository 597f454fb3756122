"""ShapesWorld throughput: samples/s to render, label and encode critic samples at 64 and 256 px.

Baseline (measured in the same run): *render only*, drawing the scene graphs a sample needs (source and edited
image for edits, the degraded image for generations) from cases built beforehand. Beside it: *case only* (drawing a
case with its exact scores, no pixels) and *PNG encode only* (the images of one sample). Then the full pipeline,
stage by stage: case + render + label (a ``CriticSample`` with the oracle answer and evidence), and + encode (PNG at
compress level 1 plus JSON, the WebDataset sample dict). Rates are per second of CPU time, since the machine is
shared; the last column projects a 20K-sample training set (the target: under a minute at 64 px).

A second table times the ShapesWorld judge (the ``shapes`` critic) against the same baseline: for each dimension,
the cases of the first table are rendered beforehand and judged from their pixels and text alone, one request at a
time (an edit request holds two images, a generation one). *x render* is the judge's time per request over the
time to render that request's images: how many renders one verdict costs. Refused requests (invalid verdicts) are
timed too and counted; *agree* is the share of all requests whose verdict equals the case's true score.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shapesworld.py [--n 400] [--sizes 64 256] [--judge-n 50]
[--judge-sizes 64]`` (about a minute and a half with the defaults; the judge's quality verdicts take most of it)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from firm.critics.base import JudgeRequest, Verdict
from firm.data import encode_png, to_wds
from firm.worlds.shapes import ShapesWorld
from firm.worlds.shapes.edit import EditCase
from firm.worlds.shapes.gen import GenCase
from firm.worlds.shapes.judge import ShapesWorldJudge

DIMENSIONS = ("execution", "consistency", "instruction", "quality")


def _rate(fn: Callable[[int], object], n: int) -> float:
    """Samples per second of CPU time: the machine is shared, and wall time would measure the neighbours too."""
    start = time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.process_time() - start)


def _cases(world: ShapesWorld, dimension: str, n: int) -> list[EditCase | GenCase]:
    if dimension in ("execution", "consistency"):
        return [world.edit_case(i, **{dimension: 1 + i % 5}) for i in range(n)]
    return [world.gen_case(i, **{dimension: 1 + i % 5}) for i in range(n)]


def _render(world: ShapesWorld, case: EditCase | GenCase) -> None:
    if isinstance(case, EditCase):
        world.render(case.source)
        world.render(case.edited)
    else:
        world.gen_image(case)


def _request(world: ShapesWorld, dimension: str, case: EditCase | GenCase) -> JudgeRequest:
    """What a critic sees of a case: its images (rendered here, outside the judge's timing) and its text."""
    if isinstance(case, EditCase):
        return JudgeRequest(dimension, case.instruction, world.render(case.edited), world.render(case.source))
    return JudgeRequest(dimension, case.prompt, world.gen_image(case))


def _truth(dimension: str, case: EditCase | GenCase) -> int:
    score = getattr(case, dimension)
    assert isinstance(score, int)
    return score


def measure(size: int, dimension: str, n: int) -> dict[str, float]:
    world = ShapesWorld(size=size, split="train", seed=0)
    start = time.process_time()
    cases = _cases(world, dimension, n)
    case_rate = n / (time.process_time() - start)
    samples = [world.sample(dimension, i, 1 + i % 5) for i in range(n)]
    images = [img for s in samples for img in (s.source, s.image) if img is not None]
    return {
        "render only (baseline)": _rate(lambda i: _render(world, cases[i]), n),
        "PNG encode only": _rate(lambda i: encode_png(images[i % len(images)]), n) / (len(images) / n),
        "case only": case_rate,
        "case + render + label": _rate(lambda i: world.sample(dimension, i, 1 + i % 5), n),
        "case + render + label + encode": _rate(lambda i: to_wds(world.sample(dimension, i, 1 + i % 5)), n),
    }


def measure_judge(size: int, dimension: str, n: int) -> dict[str, float]:
    """The judge's rate on ``n`` cases of ``dimension`` against rendering the same cases' images, in requests/s."""
    world = ShapesWorld(size=size, split="train", seed=0)
    judge = ShapesWorldJudge()
    cases = _cases(world, dimension, n)
    requests = [_request(world, dimension, case) for case in cases]
    render = _rate(lambda i: _render(world, cases[i]), n)
    verdicts: list[Verdict] = []
    judge_rate = _rate(lambda i: verdicts.extend(judge.judge([requests[i]])), n)
    images = 2 if dimension in ("execution", "consistency") else 1
    return {
        "images/request": images,
        "render": render,
        "judge": judge_rate,
        "invalid": sum(v.score is None for v in verdicts),
        "agree": sum(v.score == _truth(dimension, c) for v, c in zip(verdicts, cases, strict=True)) / n,
    }


def judge_table(sizes: list[int], n: int) -> None:
    header = (
        f"{'size':>4}  {'dimension':<11}  {'img/req':>7}  {'render req/s':>12}  {'judge req/s':>11}  "
        f"{'judged img/s':>12}  {'ms/verdict':>10}  {'x render':>8}  {'invalid':>7}  {'agree':>6}"
    )
    print(f"ShapesWorld judge against rendering the same cases (baseline), {n} requests per row, CPU time")
    print(header)
    print("-" * len(header))
    for size in sizes:
        for dimension in DIMENSIONS:
            r = measure_judge(size, dimension, n)
            judge, images = r["judge"], r["images/request"]
            print(
                f"{size:>4}  {dimension:<11}  {images:>7.0f}  {r['render']:>12.0f}  {judge:>11.1f}  "
                f"{judge * images:>12.1f}  {1000 / judge:>10.1f}  {r['render'] / judge:>8.0f}  "
                f"{r['invalid']:>7.0f}  {r['agree']:>6.0%}"
            )
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="samples per measurement (default 400)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--judge-n", type=int, default=50, help="requests per judge measurement (default 50; 0: skip)")
    parser.add_argument("--judge-sizes", type=int, nargs="+", default=[64], help="image sizes the judge is timed at")
    args = parser.parse_args()
    header = (
        f"{'size':>4}  {'dimension':<11}  {'stage':<32}  {'samples/s':>9}  {'ms/sample':>9}  {'x baseline':>10}  "
        f"{'20K set':>8}"
    )
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for dimension in DIMENSIONS:
            rates = measure(size, dimension, args.n)
            base = rates["render only (baseline)"]
            for stage, rate in rates.items():
                print(
                    f"{size:>4}  {dimension:<11}  {stage:<32}  {rate:>9.0f}  {1000 / rate:>9.2f}  "
                    f"{base / rate:>10.2f}  {20000 / rate:>7.0f}s"
                )
        print()
    if args.judge_n:
        judge_table(args.judge_sizes, args.judge_n)


if __name__ == "__main__":
    main()

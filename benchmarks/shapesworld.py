"""ShapesWorld throughput: samples/s to render, label and encode critic samples at 64 and 256 px.

Baseline (measured in the same run): *render only*, drawing the scene graphs a sample needs (source and edited
image for edits, the degraded image for generations) from cases built beforehand. Beside it: *case only* (drawing a
case with its exact scores, no pixels) and *PNG encode only* (the images of one sample). Then the full pipeline,
stage by stage: case + render + label (a ``CriticSample`` with the oracle answer and evidence), and + encode (PNG at
compress level 1 plus JSON, the WebDataset sample dict). Rates are per second of CPU time, since the machine is
shared; the last column projects a 20K-sample training set (the target: under a minute at 64 px).

Run: ``.venv/bin/python benchmarks/shapesworld.py [--n 400] [--sizes 64 256]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from firm.data import encode_png, to_wds
from firm.worlds.shapes import ShapesWorld
from firm.worlds.shapes.edit import EditCase
from firm.worlds.shapes.gen import GenCase

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="samples per measurement (default 400)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
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


if __name__ == "__main__":
    main()

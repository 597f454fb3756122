"""How often the ShapesWorld judge's verdicts equal ShapesWorld's true scores, per dimension and perturbation.

Samples come from ``ShapesWorld(split="test")`` with scores spread evenly over 1-5. Each perturbation is applied to
every image of a request (both images of an edit); "invalid" counts the verdicts the judge refused, with reasons.
Agreement is over all samples (an invalid verdict is a disagreement) and over the valid ones. With ``--flaws N``
a second table reads each degradation kind alone at each severity on N scenes (``flaws.read_quality``) and counts
how often the severity read equals the one applied, and how often another kind is read where there is none.

    python benchmarks/shapes_judge.py -n 200                 # every dimension, every perturbation, 64 px
    python benchmarks/shapes_judge.py -n 100 --size 128 --perturb none
    python benchmarks/shapes_judge.py -n 100 --dimensions quality --perturb none --flaws 10
"""

from __future__ import annotations

import argparse
import io
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image, ImageFilter

from firm.critics.base import DIMENSIONS, JudgeRequest
from firm.worlds.shapes import ShapesWorld
from firm.worlds.shapes.degrade import Degradation
from firm.worlds.shapes.flaws import PIXEL_KINDS, read_quality
from firm.worlds.shapes.judge import ShapesWorldJudge
from firm.worlds.shapes.read import Unreadable


def _jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    def apply(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return apply


def _noise(sigma: float) -> Callable[[Image.Image], Image.Image]:
    def apply(img: Image.Image) -> Image.Image:
        arr = np.asarray(img, dtype=np.float32)
        noisy = arr + np.random.default_rng(0).normal(0, sigma, arr.shape)
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))

    return apply


def _shift(levels: int) -> Callable[[Image.Image], Image.Image]:
    def apply(img: Image.Image) -> Image.Image:
        arr = np.asarray(img, dtype=np.int16) + np.array([levels, -levels // 2, 0], dtype=np.int16)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

    return apply


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda img: img,
    "jpeg q90": _jpeg(90),
    "jpeg q75": _jpeg(75),
    "blur 0.5px": lambda img: img.filter(ImageFilter.GaussianBlur(0.5)),
    "noise 3": _noise(3.0),
    "colour +4": _shift(4),
    "upscale 2x": lambda img: img.resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC),
}


def flaw_table(world: ShapesWorld, n: int) -> None:
    """Severity agreement of ``read_quality`` per degradation kind and severity, each kind applied alone."""
    kinds = (*PIXEL_KINDS, "broken")
    print("\n| kind | severity | n | exact | within 1 | other kinds read | unreadable | ms/image |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for severity in range(1, 5):
            exact = near = other = unreadable = 0
            start = time.perf_counter()
            for index in range(n):
                case = world.gen_case(index, quality=5)
                case = replace(case, degradation=Degradation(**{kind: severity}, seed=index))
                try:
                    read = read_quality(world.gen_image(case)).degradation
                except Unreadable:
                    unreadable += 1
                    continue
                got = getattr(read, kind)
                exact += got == severity
                near += abs(got - severity) <= 1
                other += any(getattr(read, k) for k in kinds if k != kind)
            ms = (time.perf_counter() - start) / n * 1000
            print(
                f"| {kind} | {severity} | {n} | {exact / n:.0%} | {near / n:.0%} | {other / n:.0%} | {unreadable} | "
                f"{ms:.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100, help="samples per dimension")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--perturb", nargs="*", default=list(PERTURBATIONS), choices=list(PERTURBATIONS))
    parser.add_argument("--dimensions", nargs="*", default=list(DIMENSIONS), choices=list(DIMENSIONS))
    parser.add_argument("--flaws", type=int, default=0, help="scenes per degradation kind and severity (0: skip)")
    args = parser.parse_args()
    world = ShapesWorld(size=args.size, split="test")
    judge = ShapesWorldJudge()
    print("| dimension | perturbation | n | agree (all) | agree (valid) | within 1 | invalid | ms/verdict |")
    print("|---|---|---|---|---|---|---|---|")
    reasons: Counter[str] = Counter()
    for dimension in args.dimensions:
        samples = list(world.samples(dimension, args.n))
        for name in args.perturb:
            change = PERTURBATIONS[name]
            agree = valid = near = 0
            start = time.perf_counter()
            for sample in samples:
                source = change(sample.source) if sample.source is not None else None
                request = JudgeRequest(dimension, sample.text, change(sample.image), source)
                verdict = judge.judge([request])[0]
                if verdict.score is None:
                    reasons[f"{dimension} / {name}: {(verdict.invalid_reason or '')[:90]}"] += 1
                    continue
                valid += 1
                agree += verdict.score == sample.score
                near += abs(verdict.score - sample.score) <= 1
            ms = (time.perf_counter() - start) / len(samples) * 1000
            n = len(samples)
            print(
                f"| {dimension} | {name} | {n} | {agree / n:.1%} | {agree / max(valid, 1):.1%} | "
                f"{near / max(valid, 1):.1%} | {n - valid} | {ms:.0f} |"
            )
    if reasons:
        print("\nmost common reasons for invalid verdicts:")
        for reason, count in reasons.most_common(12):
            print(f"  {count:4d}  {reason}")
    if args.flaws:
        flaw_table(world, args.flaws)


if __name__ == "__main__":
    main()

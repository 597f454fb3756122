"""A deterministic annotator for the pipeline's own tests, and small input writers.

:class:`PixelAnnotator` answers every stage from the pixels alone (the score is the edited image's mean brightness on
1-5), so pipeline mechanics (retries, rejections, resume, rewriting, rebalancing, shards) can be checked without a
model. It can be told to reject answers, on the first try or always, for chosen keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from firm.critics.answer import format_answer
from firm.curation.base import Annotator, DifferenceReport, EditItem, GenItem, Label, Plan, PlanItem, Rejected


def brightness_score(image: Image.Image) -> int:
    grey = image.convert("L")
    mean = sum(grey.tobytes()) / (grey.width * grey.height)
    return min(5, 1 + int(mean / 256 * 5))


class PixelAnnotator(Annotator):
    """Scores by brightness; ``reject_first`` keys are rejected on the first try, ``reject_always`` keys on every try.

    A key is chosen when any of the given substrings occurs in it. ``delay_s`` sleeps per stage call (kill tests).
    """

    name = "pixel"

    def __init__(
        self, reject_first: Sequence[str] = (), reject_always: Sequence[str] = (), delay_s: float = 0.0
    ) -> None:
        self.reject_first = tuple(reject_first)
        self.reject_always = tuple(reject_always)
        self.delay_s = delay_s
        self.calls: dict[str, int] = {}

    def _refused(self, key: str, attempt: int) -> Rejected | None:
        if any(s in key for s in self.reject_always) or (attempt == 0 and any(s in key for s in self.reject_first)):
            return Rejected(f"refused {key} on try {attempt + 1}", raw="garbled answer")
        return None

    def _count(self, stage: str) -> None:
        self.calls[stage] = self.calls.get(stage, 0) + 1
        if self.delay_s:
            time.sleep(self.delay_s)

    def describe(self, items: Sequence[EditItem], attempt: int = 0) -> list[DifferenceReport | Rejected]:
        self._count("describe")
        out: list[DifferenceReport | Rejected] = []
        for item in items:
            before, after = brightness_score(item.source), brightness_score(item.image)
            out.append(
                self._refused(item.key, attempt)
                or DifferenceReport((f"brightness {before} -> {after}",), {"overall tone": ("brightness",)})
            )
        return out

    def score_edit(
        self, items: Sequence[EditItem], dimension: str, reports: Sequence[DifferenceReport], attempt: int = 0
    ) -> list[Label | Rejected]:
        self._count(f"score_{dimension}")
        out: list[Label | Rejected] = []
        for item in items:
            score = brightness_score(item.image)
            if item.key.endswith("-rw"):
                score = 1  # a rewritten instruction never matches
            text = format_answer(dimension, score, f"{item.instruction}: brightness {score}")
            out.append(self._refused(item.key, attempt) or Label(dimension, score, text, raw=text))
        return out

    def plan(self, items: Sequence[GenItem], attempt: int = 0) -> list[Plan | Rejected]:
        self._count("plan")
        return [
            self._refused(item.key, attempt)
            or Plan(tuple(PlanItem("main subjects/elements", f"Is there {w}?") for w in item.prompt.split()[:3]))
            for item in items
        ]

    def score_instruction(
        self, items: Sequence[GenItem], plans: Sequence[Plan], attempt: int = 0
    ) -> list[Label | Rejected]:
        self._count("score_instruction")
        out: list[Label | Rejected] = []
        for item, plan in zip(items, plans, strict=True):
            score = brightness_score(item.image)
            lines = [f"{q.question} Yes." for q in plan.items]
            text = format_answer("instruction", score, "brightness", analysis=lines)
            out.append(self._refused(item.key, attempt) or Label("instruction", score, text, raw=text))
        return out

    def score_quality(self, items: Sequence[GenItem], attempt: int = 0) -> list[Label | Rejected]:
        self._count("score_quality")
        out: list[Label | Rejected] = []
        for item in items:
            score = brightness_score(item.image)
            subs = (5, score, 5)
            text = format_answer("quality", score, "brightness", sub_scores=subs)
            out.append(self._refused(item.key, attempt) or Label("quality", score, text, subs, {"q": score}))
        return out

    def rewrite(self, items: Sequence[EditItem], attempt: int = 0) -> list[str | Rejected]:
        self._count("rewrite")
        return [self._refused(item.key + "-rw", attempt) or f"{item.instruction} backwards" for item in items]

    def describe_self(self) -> dict[str, Any]:
        return {"name": self.name, "reject_first": list(self.reject_first), "reject_always": list(self.reject_always)}


def grey(level: int, size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), (level, level, level))


def write_edit_inputs(folder: Path, levels: Sequence[int], name: str = "pairs.jsonl") -> Path:
    """A jsonl of edits whose edited images have the given grey levels (scores by brightness), sources black."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, level in enumerate(levels):
        grey(0).save(images / f"s{i}.png")
        grey(level).save(images / f"e{i}.png")
        lines.append({"id": f"in{i:04d}", "instruction": f"brighten {i}", "source": f"images/s{i}.png",
                      "image": f"images/e{i}.png"})  # fmt: skip
    path = folder / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def write_gen_inputs(folder: Path, levels: Sequence[int], name: str = "gens.jsonl") -> Path:
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, level in enumerate(levels):
        grey(level).save(images / f"g{i}.png")
        lines.append({"id": f"gen{i:04d}", "prompt": f"a grey square number {i}", "image": f"images/g{i}.png"})
    path = folder / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path

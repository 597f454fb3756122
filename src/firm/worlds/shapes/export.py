"""Write ShapesWorld data: critic WebDataset shards, a FIRM-Bench-style bench folder, RL prompt sets, curation pairs.

Formats (docs/shapesworld.md has the full description):

- shards: ``<out>/shapes-<split>-<dimension>-NNNNNN.tar``, one critic sample per key (``firm.data.schema``), each
  written under a temporary name and renamed when complete;
- bench: ``<out>/bench.jsonl`` plus ``<out>/images/``; one line per sample with id, task, dimension, text, image,
  source, score and difficulty (and sub_scores for quality);
- prompts: ``<out>/<split>_metadata.jsonl`` plus ``<out>/images/`` for edits (FIRM's EditRL layout:
  ``{"prompt", "image"}``), or ``{"prompt"}`` lines for generation;
- pairs: ``<out>/pairs.jsonl`` plus ``<out>/images/``: unlabelled curation inputs (edits: instruction, source and
  edited image; generations: prompt and image), each naming its ShapesWorld case in ``metadata``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from firm.critics.base import DIMENSIONS, dimensions_of
from firm.data.schema import encode_png, to_wds
from firm.data.shards import atomic_path, remove_stale_partials
from firm.errors import InputError
from firm.worlds.shapes.balance import UNIFORM
from firm.worlds.shapes.edit import EditCase
from firm.worlds.shapes.world import ShapesWorld


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder to write into")


def _positive(n: int) -> None:
    if n < 1:
        raise ValueError(f"sample count must be at least 1, got {n}")


def write_shards(
    world: ShapesWorld,
    dimension: str,
    n: int,
    out: Path,
    histogram: Sequence[float] = UNIFORM,
    shard_size: int = 1000,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``n`` critic samples of ``dimension`` as WebDataset shards; returns the shard paths.

    Shard ``j`` holds samples ``j * shard_size`` onwards, whatever the number of worker processes, and tar headers
    carry a fixed mtime, so the same arguments give byte-identical shards. A folder that already holds shards of
    this split and dimension is refused unless ``overwrite`` (which deletes them first): a pattern or glob over the
    folder would otherwise read old and new shards mixed.

    Raises:
        ValueError: for an unknown dimension, ``n < 1``, ``workers < 1`` or a bad histogram.
        InputError: when ``out`` is a file, or holds earlier shards and ``overwrite`` is False.
    """
    targets = world.targets(dimension, n, histogram)
    _positive(n)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    _check_folder(out)
    earlier = sorted(out.glob(f"shapes-{world.split}-{dimension}-*.tar")) if out.is_dir() else []
    if earlier and not overwrite:
        raise InputError(
            f"{out} already holds {len(earlier)} {world.split} {dimension} shard(s) from an earlier run; pass "
            "--overwrite to replace them, or choose another --out (old and new shards must not mix)"
        )
    for path in earlier:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        _ShardJob(
            world,
            dimension,
            start,
            targets[start : start + shard_size],
            out / f"shapes-{world.split}-{dimension}-{j:06d}.tar",
        )
        for j, start in enumerate(range(0, n, shard_size))
    ]
    for job in jobs:
        remove_stale_partials(out, job.path.name)  # what a killed earlier run left aside
    with tqdm(total=n, desc=f"{dimension} shards", unit="sample", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(job.run())
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for count in pool.map(_ShardJob.run, jobs):
                    bar.update(count)
    return [job.path for job in jobs]


@dataclass(frozen=True)
class _ShardJob:
    """One shard: samples ``start`` onwards with the given target scores (picklable, for worker processes)."""

    world: ShapesWorld
    dimension: str
    start: int
    targets: list[int]
    path: Path

    def run(self) -> int:
        # Imported here: webdataset imports torch (seconds), which `firm world --help` and the bench export never need.
        from webdataset.writer import TarWriter

        # Written aside and renamed when complete: a killed run leaves no truncated shard under the final name.
        with atomic_path(self.path) as partial, TarWriter(str(partial), mtime=0) as sink:
            # An integer mtime: a float one costs a pax header per file.
            for offset, score in enumerate(self.targets):
                sink.write(to_wds(self.world.sample(self.dimension, self.start + offset, score)))
        return len(self.targets)


def write_bench(
    world: ShapesWorld,
    n: int,
    out: Path,
    dimensions: Sequence[str] = tuple(DIMENSIONS),
    histogram: Sequence[float] = UNIFORM,
    progress: bool = True,
) -> Path:
    """Write a bench folder: ``n`` samples per dimension as ``bench.jsonl`` plus ``images/``; returns the jsonl path.

    Raises:
        ValueError: for an unknown dimension, ``n < 1`` or a bad histogram.
    """
    _positive(n)
    _check_folder(out)
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension {unknown[0]!r}; choose from {', '.join(DIMENSIONS)}")
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = out / "bench.jsonl"
    with (
        path.open("w", encoding="utf-8") as f,
        tqdm(total=n * len(dimensions), desc="bench", disable=not progress) as bar,
    ):
        for dimension in dimensions:
            for sample in world.samples(dimension, n, histogram):
                (images / f"{sample.key}.png").write_bytes(encode_png(sample.image))
                source = None
                if sample.source is not None:
                    source = f"images/{sample.key}_src.png"
                    (out / source).write_bytes(encode_png(sample.source))
                line: dict[str, Any] = {
                    "id": sample.key,
                    "task": sample.task,
                    "dimension": sample.dimension,
                    "text": sample.text,
                    "image": f"images/{sample.key}.png",
                    "source": source,
                    "score": sample.score,
                    "difficulty": sample.provenance["difficulty"],
                }
                if sample.sub_scores is not None:
                    line["sub_scores"] = list(sample.sub_scores)
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                bar.update()
    return path


def write_prompts(world: ShapesWorld, task: str, n: int, out: Path, progress: bool = True) -> Path:
    """Write an RL prompt set of ``n`` prompts for ``task`` ("edit" or "gen"); returns the jsonl path.

    Edit lines are ``{"id", "prompt", "image": "images/<id>.png"}`` with the source images beside them, the layout
    of FIRM's EditRL loader; gen lines are ``{"id", "prompt"}``.

    Raises:
        ValueError: for an unknown task or ``n < 1``.
    """
    if task not in ("edit", "gen"):
        raise ValueError(f"unknown task {task!r}; choose edit or gen")
    _positive(n)
    _check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{world.split}_metadata.jsonl"
    if task == "edit":
        (out / "images").mkdir(exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for index in tqdm(range(n), desc=f"{task} prompts", disable=not progress):
            if task == "edit":
                prompt = world.edit_prompt(index)
                image = f"images/{prompt.key}.png"
                (out / image).write_bytes(encode_png(world.render(prompt.source)))
                line = {"id": prompt.key, "prompt": prompt.instruction, "image": image}
            else:
                line = {"id": world.key("gen-prompt", index), "prompt": world.gen_prompt(index)}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def write_pairs(
    world: ShapesWorld,
    task: str,
    n: int,
    out: Path,
    progress: bool = True,
    dimension: str | None = None,
    histogram: Sequence[float] = UNIFORM,
) -> Path:
    """Write ``n`` unlabelled curation inputs for ``task`` ("edit" or "gen"); returns the path of ``pairs.jsonl``.

    Edit lines are ``{"id", "instruction", "source": "images/<id>_src.png", "image": "images/<id>.png",
    "metadata"}``; gen lines are ``{"id", "prompt", "image", "metadata"}``. Without ``dimension`` the cases are
    :meth:`ShapesWorld.edit_case` / :meth:`ShapesWorld.gen_case` (scores drawn: the natural mix, not a balanced one);
    with one, they are the cases of that dimension's critic samples, their scores following ``histogram`` exactly
    (the same cases ``firm world shards`` writes for it). ``metadata`` names the case,
    ``{"shapesworld": {"split", "seed", "size", "index", "stream", "score"}}`` (stream: the task, or the dimension),
    which the ``shapes`` annotator reads to answer every curation stage exactly.

    Raises:
        ValueError: for an unknown task, a dimension of the other task, ``n < 1`` or a bad histogram.
        InputError: when ``out`` is a file.
    """
    if task not in ("edit", "gen"):
        raise ValueError(f"unknown task {task!r}; choose edit or gen")
    if dimension is not None and DIMENSIONS.get(dimension) != task:
        raise ValueError(f"{dimension!r} is not a dimension of {task}; choose one of {', '.join(dimensions_of(task))}")
    _positive(n)
    _check_folder(out)
    targets: list[int | None] = list(world.targets(dimension, n, histogram)) if dimension else [None] * n
    stream = dimension or task
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / "pairs.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for index in tqdm(range(n), desc=f"{stream} pairs", disable=not progress):
            key = world.key(stream, index)
            meta = {"split": world.split, "seed": world.seed, "size": world.size, "index": index, "stream": stream}
            if dimension is not None:
                meta["score"] = targets[index]
            case = world.case(stream, index, targets[index])
            image = f"images/{key}.png"
            line: dict[str, Any]
            if isinstance(case, EditCase):
                source = f"images/{key}_src.png"
                (out / source).write_bytes(encode_png(world.render(case.source)))
                (out / image).write_bytes(encode_png(world.render(case.edited)))
                line = {"id": key, "instruction": case.instruction, "source": source, "image": image}
            else:
                (out / image).write_bytes(encode_png(world.gen_image(case)))
                line = {"id": key, "prompt": case.prompt, "image": image}
            line["metadata"] = {"shapesworld": meta}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path

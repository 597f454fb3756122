"""Tiny, learnable critic-sample shards for tests of datamodules and tasks.

Each sample's score follows the colour of its edited image (red 1, orange 2, yellow 3, green 4, blue 5), so a critic
trained on a few dozen of them learns something measurable. Shards are written with the schema's own
:func:`~firm.data.schema.to_wds`, as real critic data is.

Example:
    >>> samples = [critic_sample(i) for i in range(24)]
    >>> pattern, paths = write_shards(tmp_path, samples, per_shard=8)  # doctest: +SKIP
    >>> pattern  # doctest: +SKIP
    '/tmp/.../train-{000..002}.tar'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from webdataset.writer import TarWriter

from firm.critics.answer import format_answer
from firm.data.schema import CriticSample, to_wds

__all__ = ["COLOURS", "WORDS", "critic_sample", "write_shard", "write_shards"]

#: The edited image's colour for scores 1 to 5.
COLOURS = [(220, 40, 40), (230, 150, 30), (200, 200, 40), (40, 180, 60), (40, 80, 220)]
#: The colours' names, as the sample texts and answers say them.
WORDS = ["red", "orange", "yellow", "green", "blue"]


def critic_sample(index: int, dimension: str = "execution", size: int = 32) -> CriticSample:
    """A small, valid critic sample whose score is ``index % 5 + 1``.

    Edit dimensions (execution, consistency) get a grey source image and an instruction; generation dimensions a
    prompt and no source.

    Args:
        index: the sample's number: it sets the score, the key (``s00042``) and the colour named in the text.
        dimension: the dimension judged.
        size: the images' width and height in pixels.

    Returns:
        The sample, with its target answer in firm's answer format.
    """
    score = index % 5 + 1
    image = Image.new("RGB", (size, size), COLOURS[score - 1])
    edit = dimension in ("execution", "consistency")
    source = Image.new("RGB", (size, size), (128, 128, 128)) if edit else None
    text = f"paint the square {WORDS[index % 5]}" if edit else f"a {WORDS[index % 5]} square"
    if dimension == "instruction":
        answer = format_answer(dimension, score, f"the square is {WORDS[score - 1]}", analysis=["colour checked"])
    else:
        answer = format_answer(dimension, score, f"the square is {WORDS[score - 1]}")
    return CriticSample(
        key=f"s{index:05d}",
        task="edit" if edit else "gen",
        dimension=dimension,
        text=text,
        image=image,
        source=source,
        score=score,
        answer=answer,
        provenance={"test": index},
    )


def write_shard(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write raw WebDataset records to one tar shard (its folder is created).

    Args:
        path: the shard to write.
        records: WebDataset records: ``__key__`` plus members (``to_wds`` output, or hand-made broken ones).

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with TarWriter(str(path)) as sink:
        for record in records:
            sink.write(dict(record))
    return path


def write_shards(
    folder: Path, samples: Sequence[CriticSample], per_shard: int, prefix: str = "train"
) -> tuple[str, list[Path]]:
    """Write ``samples`` into shards of ``per_shard`` samples each, named ``<prefix>-000.tar``, ``<prefix>-001.tar``...

    Args:
        folder: where the shards go.
        samples: the samples, in order.
        per_shard: samples per shard (the last shard may hold fewer).
        prefix: the shards' name before the number.

    Returns:
        The brace pattern of the shards (``folder/train-{000..002}.tar``) and their paths.
    """
    paths: list[Path] = []
    for start in range(0, len(samples), per_shard):
        index = len(paths)
        chunk = samples[start : start + per_shard]
        paths.append(write_shard(folder / f"{prefix}-{index:03d}.tar", [to_wds(s) for s in chunk]))
    pattern = str(folder / f"{prefix}-{{000..{len(paths) - 1:03d}}}.tar")
    return pattern, paths

"""One edit or generation to judge, as a user gives it: image paths and text from flags or a jsonl line.

:func:`parse_sample` checks the fields and loads the images, so that everything wrong with a sample (a missing
file, an unreadable image, an unknown dimension, an edit without its source) is one :class:`SampleInputError`
naming the problem, before any critic runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from firm.critics.base import JudgeRequest, Task, dimensions_of, task_of
from firm.errors import InputError, check_file

__all__ = ["JudgeSample", "SampleInputError", "load_image", "parse_sample"]


class SampleInputError(InputError):
    """A sample that cannot be judged as given; the message names the field or file and what is wrong."""


@dataclass(frozen=True)
class JudgeSample:
    """An edit (instruction, source and edited image) or a generation (prompt and image) with the dimensions to
    judge, images loaded.

    Attributes:
        task: ``edit`` or ``gen``.
        text: the instruction or the prompt.
        dimensions: the dimensions to judge, all of ``task``.
        image_path: the image as the user named it.
        image: the edited or generated image, RGB.
        source_path: the source image as named (edits only).
        source: the source image, RGB (edits only).
    """

    task: Task
    text: str
    dimensions: tuple[str, ...]
    image_path: str
    image: Image.Image
    source_path: str | None = None
    source: Image.Image | None = None

    def requests(self) -> list[JudgeRequest]:
        """One request per dimension, in :attr:`dimensions` order."""
        return [JudgeRequest(dim, self.text, self.image, self.source) for dim in self.dimensions]


def parse_sample(raw: Mapping[str, Any], base: Path, default_dimensions: str | None = None) -> JudgeSample:
    """Validate one sample (``image``, ``source``, ``instruction`` or ``prompt``, ``dimensions``) and load its images.

    Args:
        raw: the fields, from command-line flags or one jsonl line.
        base: the folder relative image paths start from (the jsonl's folder, or the working directory).
        default_dimensions: comma list used when ``raw`` names none; else the task's dimensions.

    Raises:
        SampleInputError: naming the missing file, unreadable image, unknown dimension or inconsistent fields.
    """
    instruction, prompt = raw.get("instruction"), raw.get("prompt")
    if raw.get("image") is None:
        raise SampleInputError("no image: give --image (or an 'image' field in each jsonl line)")
    if (instruction is None) == (prompt is None):
        raise SampleInputError("give exactly one of --instruction (an edit) or --prompt (a generation)")
    task: Task = "edit" if instruction is not None else "gen"
    if task == "edit" and raw.get("source") is None:
        raise SampleInputError("an edit needs its source image: give --source")
    if task == "gen" and raw.get("source") is not None:
        raise SampleInputError("--source belongs to edits; a generation takes --prompt")
    text = instruction if task == "edit" else prompt
    if not isinstance(text, str):
        raise SampleInputError(f"the {'instruction' if task == 'edit' else 'prompt'} must be text, got {text!r}")
    dims = _dimensions(raw.get("dimensions") or default_dimensions, task)
    source_path = str(raw["source"]) if task == "edit" else None
    return JudgeSample(
        task=task,
        text=text,
        dimensions=dims,
        image_path=str(raw["image"]),
        image=load_image(base / Path(str(raw["image"]))),
        source_path=source_path,
        source=load_image(base / Path(str(raw["source"]))) if task == "edit" else None,
    )


def _dimensions(given: Any, task: Task) -> tuple[str, ...]:
    if isinstance(given, list):
        names = [str(d) for d in given]
    elif given:
        names = str(given).split(",")
    else:
        names = list(dimensions_of(task))
    dims = tuple(d.strip() for d in names if d.strip())
    for dim in dims:
        try:
            dim_task = task_of(dim)
        except ValueError as exc:
            raise SampleInputError(str(exc)) from None
        if dim_task != task:
            raise SampleInputError(
                f"dimension {dim!r} judges {'edits' if dim_task == 'edit' else 'generations'}, "
                f"but this sample is {'an edit' if task == 'edit' else 'a generation'}"
            )
    return dims


def load_image(path: Path) -> Image.Image:
    """Open an image as RGB.

    Raises:
        SampleInputError: when the file is missing or is not a readable image.
    """
    check_file(path, "image", SampleInputError)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    # ValueError: PIL's refusal of an oversized text chunk; DecompressionBombError: of an image over its pixel limit.
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SampleInputError(f"cannot read image {path}: {exc}") from exc

"""Curation inputs: the edits or generations to label, read from jsonl files, WebDataset shards or image folders.

Every form is read as a stream, one item at a time, in a fixed order (so a rerun meets the items in the same order).

jsonl, one item per line (paths relative to the jsonl's folder)::

    {"id": "0001", "instruction": "make the cat blue", "source": "images/0001_src.png", "image": "images/0001.png"}
    {"id": "0002", "prompt": "a red cube left of a blue ball", "image": "images/0002.png", "metadata": {...}}

``key`` is accepted for ``id`` (the line number when both are absent), ``text`` for the instruction or prompt,
``edited`` / ``output`` for ``image``; ``metadata`` (an object) is passed through to annotators and samples.

WebDataset shards (``.tar``, a brace pattern, or a folder of them): ``src.png`` / ``src.jpg`` (edits), ``out.png`` /
``out.jpg`` and a ``json`` member with the fields above (critic shards that ``firm world shards`` writes read too;
their scores are ignored).

Image folders: ``<name>.png`` (or .jpg / .jpeg / .webp) with its text in ``<name>.txt``; an edit's source is
``<name>.src.png`` beside it. Keys are the file names without extension.

An item that cannot be read (a missing or corrupt image, no text, a repeated key) is a :class:`BadInput`: the
pipelines count and report it, and ``strict`` makes it an error. Keys become WebDataset keys, so dots in them are
replaced by ``_``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from firm.curation.base import EditItem, GenItem, Item
from firm.data.schema import IMAGE_MEMBERS
from firm.data.stream import expand_shards, is_local
from firm.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "BadInput", "read_items"]

#: Image files an image folder contributes.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class BadInput:
    """An input that cannot be labelled: where it is and why."""

    where: str
    reason: str
    key: str = ""


class _Bad(Exception):
    pass


def _field(fields: Mapping[str, Any], *names: str) -> Any:
    given = [n for n in names if n in fields]
    if len(given) > 1:
        raise _Bad(f"give one of {', '.join(map(repr, given))}, not several")
    return fields[given[0]] if given else None


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Exception as err:  # PIL raises several unrelated types for corrupt data
        raise _Bad(f"{what} is not a decodable image ({type(err).__name__}: {err})") from None


def clean_key(key: str) -> str:
    """A key usable in WebDataset: dots (which WebDataset reads as member suffixes) and slashes become ``_``."""
    return key.replace(".", "_").replace("/", "_")


def _item(task: str, fields: Any, default_key: str, load: Callable[[Any, str], Image.Image], where: str) -> Item:
    if not isinstance(fields, dict):
        raise _Bad(f"a JSON {type(fields).__name__}, not an object")
    name = "instruction" if task == "edit" else "prompt"
    text = _field(fields, name, "text")
    if not isinstance(text, str) or not text.strip():
        raise _Bad(f"{name!r} (or 'text') must be a non-empty string, got {text!r}")
    key = _field(fields, "id", "key")
    key = default_key if key is None else key
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        raise _Bad(f"'id' must be a non-empty string or an integer, got {key!r}")
    metadata = fields.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _Bad(f"'metadata' must be a JSON object, got {type(metadata).__name__}")
    image = load(_field(fields, "image", "edited", "output"), "image")
    if task == "gen":
        if fields.get("source") is not None:
            raise _Bad("a generation has no 'source' image; curate it with `firm curate edit`")
        return GenItem(clean_key(str(key)), text, image, metadata, where)
    source = load(fields.get("source"), "source")
    return EditItem(clean_key(str(key)), text, source, image, metadata, where)


def _jsonl_items(path: Path, task: str) -> Iterator[Item | BadInput]:
    def load(reference: Any, what: str) -> Image.Image:
        if not isinstance(reference, str) or not reference:
            raise _Bad(f"{what!r} must be an image path, got {reference!r}")
        file = path.parent / reference
        if not file.is_file():
            raise _Bad(f"{what} image not found: {file}")
        return _decode(file.read_bytes(), f"{what} image {file}")

    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield _item(task, json.loads(line), f"{path.stem}-{number}", load, where)
            except _Bad as bad:
                yield BadInput(where, str(bad))
            except ValueError as err:  # includes bytes that are not UTF-8
                yield BadInput(where, f"not JSON ({err})")


def _shard_items(url: str, task: str) -> Iterator[Item | BadInput]:
    from webdataset.tariterators import tarfile_samples  # imports torch: only when shards are read

    for sample in tarfile_samples([{"url": url}]):
        key = sample["__key__"]
        where = f"{url}:{key}"

        def load(reference: Any, what: str, sample: dict[str, Any] = sample) -> Image.Image:
            role = "src" if what == "source" else "out"
            member = next((m for m in IMAGE_MEMBERS[role] if m in sample), None)
            if member is None:
                raise _Bad(f"no {IMAGE_MEMBERS[role][0]!r} member")
            return _decode(sample[member], f"member {member!r}")

        try:
            if "json" not in sample:
                raise _Bad("no 'json' member")
            try:
                fields = json.loads(sample["json"])
            except ValueError as err:
                raise _Bad(f"member 'json' is not JSON ({err})") from None
            if isinstance(fields, dict):
                # A critic shard's json holds "text" and the scores; its images are members, never paths.
                fields = {k: v for k, v in fields.items() if k not in ("image", "source", "key")}
                if "text" in fields and ("instruction" in fields or "prompt" in fields):
                    del fields["text"]
                fields.setdefault("id", key)
            yield _item(task, fields, key, load, where)
        except _Bad as bad:
            yield BadInput(where, str(bad), clean_key(key))


def _folder_items(folder: Path, task: str) -> Iterator[Item | BadInput]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(".src"))
    for path in images:
        where = str(path)
        try:
            text_file = path.with_suffix(".txt")
            if not text_file.is_file():
                raise _Bad(f"no text file {text_file.name} beside the image")
            text = text_file.read_text(encoding="utf-8").strip()
            fields: dict[str, Any] = {"id": path.stem, "text": text, "image": path.name}
            if task == "edit":
                candidates = [path.with_name(f"{path.stem}.src{suffix}") for suffix in IMAGE_SUFFIXES]
                source = next((c for c in candidates if c.is_file()), None)
                if source is None:
                    raise _Bad(f"no source image {path.stem}.src.png beside the edited image")
                fields["source"] = source.name

            def load(reference: Any, what: str) -> Image.Image:
                file = folder / str(reference)
                return _decode(file.read_bytes(), f"{what} image {file}")

            yield _item(task, fields, path.stem, load, where)
        except _Bad as bad:
            yield BadInput(where, str(bad), clean_key(path.stem))
        except (OSError, UnicodeDecodeError) as err:
            yield BadInput(where, f"cannot read: {err}", clean_key(path.stem))


def _sources(path: str) -> list[tuple[str, str]]:
    """(kind, location) pairs for a jsonl file, shard pattern or folder."""
    if not is_local(path):
        return [("tar", url) for url in expand_shards(path)]
    p = Path(path)
    if p.is_dir():
        inner = sorted(q for q in p.iterdir() if q.suffix in (".jsonl", ".tar"))
        if inner:
            return [("jsonl" if q.suffix == ".jsonl" else "tar", str(q)) for q in inner]
        return [("folder", str(p))]
    if p.suffix == ".jsonl":
        if not p.is_file():
            raise InputError(f"input not found: {p}")
        return [("jsonl", str(p))]
    shards = expand_shards(path)
    missing = [s for s in shards if not Path(s).is_file()]
    if missing:
        raise InputError(f"input not found: {missing[0]} (give a .jsonl file, .tar shards or a folder)")
    return [("tar", s) for s in shards]


def read_items(path: str | Path, task: str) -> Iterator[Item | BadInput]:
    """Every item of a curation input, in order; unreadable ones as :class:`BadInput`, repeated keys too.

    Args:
        path: a ``.jsonl`` file, ``.tar`` shard(s) (brace patterns and ``pipe:`` URLs work), or a folder holding
            jsonl files or shards (read in name order) or, failing those, images with their ``.txt`` texts.
        task: ``edit`` or ``gen``.

    Raises:
        InputError: when the input does not exist or names nothing.
    """
    if task not in ("edit", "gen"):
        raise InputError(f"unknown task {task!r}; choose edit or gen")
    seen: set[str] = set()
    for kind, location in _sources(str(path)):
        if kind == "jsonl":
            stream = _jsonl_items(Path(location), task)
        elif kind == "tar":
            stream = _shard_items(location, task)
        else:
            stream = _folder_items(Path(location), task)
        for entry in stream:
            if isinstance(entry, BadInput):
                yield entry
            elif entry.key in seen:
                yield BadInput(entry.origin, f"key {entry.key!r} appears twice; keys must be unique", entry.key)
            else:
                seen.add(entry.key)
                yield entry

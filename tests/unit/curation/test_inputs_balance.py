"""Curation inputs (jsonl, shards, image folders; bad items reported, not fatal) and score rebalancing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from curation_support import grey, write_edit_inputs
from webdataset.writer import TarWriter

from firm.curation.balance import histogram, parse_histogram, rebalance, selected_fraction
from firm.curation.base import EditItem, GenItem, content_hash
from firm.curation.inputs import BadInput, read_items
from firm.errors import InputError


def png(level: int) -> bytes:
    buf = io.BytesIO()
    grey(level).save(buf, format="PNG")
    return buf.getvalue()


def test_jsonl_items_and_what_is_wrong_with_bad_lines(tmp_path: Path) -> None:
    pairs = write_edit_inputs(tmp_path, [10, 20])
    lines = pairs.read_text().splitlines()
    lines += [
        "not json",
        json.dumps({"id": "x", "instruction": "", "source": "images/s0.png", "image": "images/e0.png"}),
        json.dumps({"id": "y", "instruction": "go", "source": "images/none.png", "image": "images/e0.png"}),
        json.dumps({"id": "in0000", "instruction": "again", "source": "images/s0.png", "image": "images/e0.png"}),
        json.dumps(
            {"id": "a.b", "text": "dots", "source": "images/s1.png", "image": "images/e1.png", "metadata": {"m": 1}}
        ),
    ]
    pairs.write_text("\n".join(lines) + "\n")
    got = list(read_items(pairs, "edit"))
    items = [g for g in got if isinstance(g, EditItem)]
    bad = [g for g in got if isinstance(g, BadInput)]
    assert [i.key for i in items] == ["in0000", "in0001", "a_b"]
    assert items[2].instruction == "dots" and items[2].metadata == {"m": 1}
    assert items[1].image.getpixel((0, 0)) == (20, 20, 20) and items[1].origin == f"{pairs}:2"
    reasons = [b.reason for b in bad]
    assert reasons[0].startswith("not JSON")
    assert "'instruction' (or 'text') must be a non-empty string" in reasons[1]
    assert "source image not found" in reasons[2]
    assert "appears twice" in reasons[3]
    with pytest.raises(InputError, match="input not found"):
        list(read_items(tmp_path / "nope.jsonl", "edit"))


def test_shards_and_image_folders(tmp_path: Path) -> None:
    shard = tmp_path / "in-000000.tar"
    with TarWriter(str(shard)) as sink:
        sink.write({"__key__": "k1", "out.png": png(50), "json": json.dumps({"prompt": "a cube"}).encode()})
        sink.write({"__key__": "k2", "out.png": b"broken", "json": json.dumps({"prompt": "a ball"}).encode()})
        sink.write({"__key__": "k3", "json": json.dumps({"prompt": "no image"}).encode()})
    got = list(read_items(shard, "gen"))
    assert isinstance(got[0], GenItem) and got[0].key == "k1" and got[0].prompt == "a cube"
    assert isinstance(got[1], BadInput) and "not a decodable image" in got[1].reason
    assert isinstance(got[2], BadInput) and "no 'out.png' member" in got[2].reason

    folder = tmp_path / "folder"
    folder.mkdir()
    grey(1).save(folder / "one.png")
    (folder / "one.txt").write_text("make it dark\n")
    grey(2).save(folder / "one.src.png")
    grey(3).save(folder / "two.png")  # no text
    got = list(read_items(folder, "edit"))
    assert isinstance(got[0], EditItem) and got[0].instruction == "make it dark"
    assert got[0].source.getpixel((0, 0)) == (2, 2, 2)
    assert isinstance(got[1], BadInput) and "no text file two.txt" in got[1].reason


def test_content_hash_sees_pixels_and_text_only() -> None:
    a = GenItem("a", "a cube", grey(5), {"x": 1}, "here")
    assert content_hash(a) == content_hash(GenItem("b", "a cube", grey(5)))
    assert content_hash(a) != content_hash(GenItem("a", "a cube", grey(6)))
    assert content_hash(a) != content_hash(GenItem("a", "a cubes", grey(5)))


def test_rebalance_keeps_the_most_samples_that_follow_the_target() -> None:
    samples = {f"k{i}": s for i, s in enumerate([1] * 2 + [2] * 10 + [3] * 6 + [5] * 40)}
    keep = rebalance(samples, (1, 1, 1, 1, 1), seed=0)  # score 4 has none: left out, with a warning
    assert histogram(samples[k] for k in keep) == {"1": 2, "2": 2, "3": 2, "4": 0, "5": 2}
    keep = rebalance(samples, (0, 1, 1, 0, 2), seed=0)
    assert histogram(samples[k] for k in keep) == {"1": 0, "2": 6, "3": 6, "4": 0, "5": 12}
    assert keep == rebalance(samples, (0, 1, 1, 0, 2), seed=0)
    assert keep != rebalance(samples, (0, 1, 1, 0, 2), seed=1)
    assert rebalance({}, (1, 1, 1, 1, 1)) == set()


def test_histogram_parsing_and_seeded_selection() -> None:
    assert parse_histogram("1,1,1,1,1") == (1.0,) * 5
    for bad in ("1,1", "a,b,c,d,e", "0,0,0,0,0", "1,-1,1,1,1"):
        with pytest.raises(ValueError, match="five"):
            parse_histogram(bad)
    chosen = [k for k in (f"key{i}" for i in range(2000)) if selected_fraction(k, 0.25, seed=7)]
    assert 400 < len(chosen) < 600
    assert chosen == [k for k in (f"key{i}" for i in range(2000)) if selected_fraction(k, 0.25, seed=7)]
    assert not selected_fraction("x", 0.0)

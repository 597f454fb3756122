"""The critic-sample schema: round trips through WebDataset and a clear error for every kind of bad sample."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds
from PIL import Image

from firm.data import CriticSample, SampleError, from_wds, to_wds


def _img(colour: tuple[int, int, int], size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def _edit(**changes: Any) -> CriticSample:
    fields: dict[str, Any] = {
        "key": "shapes-train-0-execution-0000001",
        "task": "edit",
        "dimension": "execution",
        "text": "Make the red circle blue.",
        "image": _img((0, 0, 255)),
        "source": _img((255, 0, 0)),
        "score": 4,
        "answer": '{"reasoning": "blue, but darker", "score": [4]}',
        "evidence": {"differences": {"obvious": ["the circle is blue"], "detailed": {"colour": ["red to blue"]}}},
        "provenance": {"world": "shapesworld", "seed": 0, "split": "train"},
    }
    fields.update(changes)
    return CriticSample(**fields)


def _quality(**changes: Any) -> CriticSample:
    fields: dict[str, Any] = {
        "key": "q-1",
        "task": "gen",
        "dimension": "quality",
        "text": "A red circle.",
        "image": _img((10, 20, 30)),
        "source": None,
        "score": 2,
        "answer": '{"reasoning": "noisy", "score": [4, 2, 5]}',
        "sub_scores": (4, 2, 5),
        "evidence": {"plan": [{"id": 1, "question": "Is there a circle?", "answer": "yes"}]},
    }
    fields.update(changes)
    return CriticSample(**fields)


def test_edit_sample_round_trips_through_a_real_tar(tmp_path: Path) -> None:
    sample = _edit()
    with wds.TarWriter(str(tmp_path / "s.tar")) as sink:
        sink.write(to_wds(sample))
    (raw,) = list(wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False))
    assert sorted(k for k in raw if not k.startswith("__")) == ["json", "out.png", "src.png"]
    back = from_wds(raw)
    assert back == sample
    assert back.source is not None and back.source.getpixel((0, 0)) == (255, 0, 0)
    assert back.evidence["differences"]["obvious"] == ["the circle is blue"]


def test_gen_sample_has_no_source_member_and_keeps_sub_scores() -> None:
    d = to_wds(_quality())
    assert "src.png" not in d
    meta = json.loads(d["json"])
    assert meta["sub_scores"] == [4, 2, 5] and meta["key"] == "q-1" and meta["dimension"] == "quality"
    back = from_wds(d)
    assert back.sub_scores == (4, 2, 5) and back.source is None and back == _quality()


def test_already_decoded_members_are_accepted() -> None:
    sample = _edit()
    d = to_wds(sample)
    decoded = {
        "__key__": d["__key__"],
        "json": json.loads(d["json"]),
        "out.png": sample.image,
        "src.png": sample.source,
    }
    assert from_wds(decoded) == sample


def test_jpeg_members_are_accepted() -> None:
    d = to_wds(_quality())
    buf = io.BytesIO()
    _img((10, 20, 30)).save(buf, format="JPEG")
    d["out.jpg"] = buf.getvalue()
    del d["out.png"]
    assert from_wds(d).image.size == (8, 8)


def test_equality_compares_pixels() -> None:
    assert _edit() == _edit()
    assert _edit() != _edit(image=_img((0, 0, 254)))


def _broken(edit: bool = True, **meta_changes: Any) -> dict[str, Any]:
    d = to_wds(_edit() if edit else _quality())
    meta = json.loads(d["json"])
    meta.update(meta_changes)
    d["json"] = json.dumps(meta).encode()
    return d


@pytest.mark.parametrize(
    ("mutate", "problem", "kind"),
    [
        (lambda d: d.pop("json"), "missing member 'json'", "missing_member"),
        (lambda d: d.pop("out.png"), "missing member 'out.png'", "missing_member"),
        (lambda d: d.pop("src.png"), "missing member 'src.png'", "missing_member"),
        (
            lambda d: d.update({"out.png": b"\x89PNG not really"}),
            "member 'out.png' is not a decodable image",
            "corrupt_image",
        ),
        (lambda d: d.update({"json": b"{not json"}), "member 'json' is not valid JSON", "bad_json"),
        (lambda d: d.update({"json": b"[1, 2]"}), "member 'json' holds a list, not an object", "bad_json"),
    ],
)
def test_bad_members_name_the_key_and_the_problem(mutate: Any, problem: str, kind: str) -> None:
    d = to_wds(_edit())
    mutate(d)
    with pytest.raises(SampleError, match=problem) as err:
        from_wds(d)
    assert err.value.kind == kind  # what counters and metrics use, instead of the message text
    assert err.value.key == "shapes-train-0-execution-0000001"
    assert str(err.value).startswith("sample 'shapes-train-0-execution-0000001': ")


@pytest.mark.parametrize("score", [0, 6, "4", 3.5, True, None])
def test_out_of_range_or_non_integer_scores_are_rejected(score: object) -> None:
    with pytest.raises(SampleError, match=r"is not an integer in 1-5") as err:
        from_wds(_broken(score=score))
    assert err.value.kind == "bad_score"


def test_unknown_dimension_is_rejected() -> None:
    with pytest.raises(SampleError, match="unknown dimension 'aesthetics'") as err:
        from_wds(_broken(dimension="aesthetics"))
    assert err.value.kind == "invalid_sample"


def test_missing_key_is_rejected() -> None:
    d = to_wds(_edit())
    del d["__key__"]
    with pytest.raises(SampleError, match="missing __key__"):
        from_wds(d)


def test_contradicting_fields_are_rejected() -> None:
    with pytest.raises(SampleError, match="quality score 3 is not the min of its sub-scores"):
        from_wds(_broken(edit=False, score=3))
    with pytest.raises(SampleError, match="sub_scores must be a list of integers"):
        from_wds(_broken(edit=False, sub_scores="4,2,5"))
    with pytest.raises(SampleError, match="only quality samples carry sub-scores"):
        from_wds(_broken(sub_scores=[4, 4, 4]))
    with pytest.raises(SampleError, match="field 'evidence' must be a dict"):
        from_wds(_broken(evidence=["x"]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "gen"}, "task 'gen' does not match dimension 'execution'"),
        ({"source": None}, "an edit sample needs the source image"),
        ({"key": "a.b"}, "key must be a non-empty string without dots"),
        ({"score": 7}, "score 7 is not an integer in 1-5"),
        ({"dimension": "style"}, "unknown dimension 'style'"),
    ],
)
def test_constructor_validates(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _edit(**changes)


def test_quality_needs_three_sub_scores() -> None:
    with pytest.raises(ValueError, match="quality needs three sub-scores"):
        _quality(sub_scores=(2, 2))

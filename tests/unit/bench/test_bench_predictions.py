"""Precomputed predictions (hosted critics): firm's jsonl and FIRM-Bench-Gen's official shape; written back out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firm.bench import Bench, BenchSample, read_predictions, write_predictions
from firm.critics.base import Verdict


def _lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


EDIT = Bench(
    "edit", [BenchSample("a", "execution", 4), BenchSample("a", "consistency", 2), BenchSample("b", "execution", 1)]
)
GEN = Bench("gen", [BenchSample("g1", "instruction", 4, difficulty="easy"), BenchSample("g2", "instruction", 2)])


def test_firm_predictions_null_and_off_scale_scores_are_invalid(tmp_path: Path) -> None:
    path = _lines(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "dimension": "execution", "score": 4, "raw": '{"score": [4]}'},
            {"id": "a", "dimension": "consistency", "score": None, "invalid_reason": "refused"},
            {"id": "b", "dimension": "execution", "score": 7},
            {"id": "zzz", "dimension": "execution", "score": 3},
        ],
    )
    got = read_predictions(path, EDIT)
    assert got[("a", "execution")] == Verdict("execution", 4, raw='{"score": [4]}')
    assert got[("a", "consistency")].invalid_reason == "refused"
    assert got[("b", "execution")].invalid_reason == "out of range: 7 is not an integer 1-5"
    assert got.unmatched == [("zzz", "execution")]


def test_official_gen_prediction_shape(tmp_path: Path) -> None:
    path = _lines(
        tmp_path / "p.jsonl",
        [
            {"id": "g1", "instruction_following": {"score": [5]}, "image": ["en/g1.png"]},
            {"id": "g2", "instruction_following": {"score": []}, "image": ["en_long/g2.png"]},
        ],
    )
    got = read_predictions(path, GEN)
    assert got[("g1", "instruction")].score == 5
    assert not got[("g2", "instruction")].valid


def test_dimension_may_be_left_out_only_on_a_one_dimension_bench(tmp_path: Path) -> None:
    path = _lines(tmp_path / "p.jsonl", [{"id": "g1", "score": 3.0}])
    assert read_predictions(path, GEN)[("g1", "instruction")].score == 3
    with pytest.raises(ValueError, match="no 'dimension'"):
        read_predictions(path, EDIT)


def test_two_predictions_for_one_sample_are_an_error(tmp_path: Path) -> None:
    path = _lines(tmp_path / "p.jsonl", [{"id": "g1", "score": 3}, {"id": "g1", "score": 4}])
    with pytest.raises(ValueError, match="a second prediction for id 'g1'"):
        read_predictions(path, GEN)


def test_written_predictions_hold_every_sample_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "out" / "x.jsonl"
    write_predictions(path, EDIT, {("a", "execution"): Verdict("execution", 3, reasoning="ok")})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["id"], r["dimension"], r["human"], r["score"]) for r in rows] == [
        ("a", "execution", 4, 3),
        ("a", "consistency", 2, None),
        ("b", "execution", 1, None),
    ]
    assert rows[1]["invalid_reason"] == "missing prediction"
    again = read_predictions(path, EDIT)
    assert again[("a", "execution")].score == 3 and not again[("b", "execution")].valid


def test_a_predictions_file_without_a_final_newline_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "hosted.jsonl"
    path.write_text('{"id": "g1", "score": 4}\n{"id": "g2", "score": 2}')  # as many tools write it
    got = read_predictions(path, GEN)
    assert got[("g2", "instruction")].score == 2

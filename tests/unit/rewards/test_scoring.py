"""Batch scoring (firm score --input): one record per input line, resumable through the record store: a record cut
by a kill mid-write is repaired, and its line is neither lost nor judged twice."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from firm.critics.base import Critic, JudgeRequest, Verdict
from firm.data.samples import parse_sample
from firm.errors import InputError
from firm.rewards.critic_reward import CriticReward, strategy_for
from firm.rewards.scoring import BatchInputError, choose_reward, judge_samples, score_jsonl


class CountingCritic(Critic):
    """Execution from the red channel, consistency from the green; counts judgements per text; can die."""

    def __init__(self, die_on_call: int | None = None) -> None:
        self.judged: Counter[str] = Counter()
        self.calls = 0
        self.closed = False
        self.die_on_call = die_on_call

    def judge(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        self.calls += 1
        if self.calls == self.die_on_call:
            raise KeyboardInterrupt("killed")
        self.judged.update(r.text for r in requests if r.dimension == "execution")
        channel = {"execution": 0, "consistency": 1}
        return [
            Verdict(r.dimension, 1 + round(4 * r.image.getpixel((0, 0))[channel[r.dimension]] / 255))  # type: ignore[index]
            for r in requests
        ]

    def close(self) -> None:
        self.closed = True


def _batch(tmp_path: Path, n: int = 6) -> Path:
    Image.new("RGB", (4, 4), (0, 0, 0)).save(tmp_path / "src.png")
    lines = []
    for i in range(n):
        Image.new("RGB", (4, 4), (255 * (i % 2), 255, 0)).save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"id": f"e{i}", "source": "src.png", "image": f"{i}.png", "instruction": f"edit {i}"}))
    lines.insert(3, json.dumps({"id": "bad", "source": "src.png", "image": "missing.png", "instruction": "edit x"}))
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_every_line_gets_one_record_in_order_with_rewards_and_errors(tmp_path: Path) -> None:
    critic = CountingCritic()
    counts = score_jsonl(lambda: critic, _batch(tmp_path), tmp_path / "out.jsonl", chunk=4, progress=False)
    records = _records(tmp_path / "out.jsonl")
    assert [r["line"] for r in records] == list(range(1, 8))
    assert [r.get("id") for r in records] == ["e0", "e1", "e2", "bad", "e3", "e4", "e5"]
    assert "image not found" in records[3]["error"] and "verdicts" not in records[3]
    assert records[1]["reward"] == {
        "name": "cme",
        "total": 1.0,
        "valid": True,
        "components": {"execution": 1.0, "consistency": 1.0},
    }
    assert (counts.scored, counts.errors, counts.skipped) == (6, 1, 0)
    assert critic.calls == 2 and critic.closed


def test_a_torn_last_record_is_cut_and_its_line_judged_once_more(tmp_path: Path) -> None:
    batch, out = _batch(tmp_path), tmp_path / "out.jsonl"
    score_jsonl(CountingCritic, batch, out, chunk=3, progress=False)
    whole = out.read_text()
    # A kill while the last record was being written: half of it reached the disk.
    lines = whole.splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])

    critic = CountingCritic()
    counts = score_jsonl(lambda: critic, batch, out, resume=True, chunk=3, progress=False)
    assert critic.judged == Counter({"edit 5": 1})  # only the torn line, once
    assert counts.skipped == 6 and counts.scored == 1
    assert out.read_text() == whole  # nothing lost, nothing glued, nothing twice


def test_a_run_killed_between_chunks_resumes_with_the_rest(tmp_path: Path) -> None:
    batch, out = _batch(tmp_path), tmp_path / "out.jsonl"
    dying = CountingCritic(die_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        score_jsonl(lambda: dying, batch, out, chunk=3, progress=False)
    assert dying.closed
    assert [r["line"] for r in _records(out)] == [1, 2, 3]
    rest = CountingCritic()
    score_jsonl(lambda: rest, batch, out, resume=True, chunk=3, progress=False)
    assert set(rest.judged) == {"edit 3", "edit 4", "edit 5"}
    assert sorted(r["line"] for r in _records(out)) == list(range(1, 8))


def test_bad_batches_fail_before_the_critic_is_built(tmp_path: Path) -> None:
    def never() -> Critic:
        raise AssertionError("the critic must not be built")

    batch, out = _batch(tmp_path), tmp_path / "out.jsonl"
    out.write_text("")
    with pytest.raises(BatchInputError, match="exists; pass --resume"):
        score_jsonl(never, batch, out, progress=False)
    with pytest.raises(BatchInputError, match="is a directory"):
        score_jsonl(never, tmp_path, tmp_path / "other.jsonl", progress=False)
    with pytest.raises(BatchInputError, match="is a directory"):
        score_jsonl(never, batch, tmp_path, resume=True, progress=False)
    with pytest.raises(InputError, match="no reward named 'nope'"):
        score_jsonl(never, batch, tmp_path / "new.jsonl", reward="nope", progress=False)
    (tmp_path / "notes.jsonl").write_text("just some text\n\nmore text\n")
    with pytest.raises(BatchInputError, match=r"holds no JSON object on any line"):
        score_jsonl(never, tmp_path / "notes.jsonl", tmp_path / "o.jsonl", progress=False)


def test_blank_malformed_and_unreadable_lines_each_get_their_error_line_and_the_batch_goes_on(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    Image.new("RGB", (4, 4), (0, 0, 0)).save(tmp_path / "src.png")
    Image.new("RGB", (4, 4), (255, 255, 0)).save(tmp_path / "ok.png")
    Image.new("1", (20_000, 20_000)).save(tmp_path / "bomb.png")  # 400 Mpx: over PIL's decompression-bomb limit
    chunk = PngImagePlugin.PngInfo()
    chunk.add_text("comment", "x" * (2 << 20), zip=True)  # a zipped text chunk that inflates past PIL's limit
    Image.new("RGB", (4, 4)).save(tmp_path / "bigtext.png", pnginfo=chunk)
    good = {"source": "src.png", "image": "ok.png", "instruction": "paint it"}
    lines = [
        json.dumps({"id": "ok", **good}),
        "",
        '{"id": "cut", "image": ',
        json.dumps({**good, "id": "bomb", "image": "bomb.png"}),
        json.dumps({**good, "id": "text", "image": "bigtext.png"}),
        json.dumps({**good, "id": "number", "image": 123}),
        "[1, 2]",
        json.dumps({"id": "last", **good}),
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    critic = CountingCritic()
    counts = score_jsonl(lambda: critic, tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    records = _records(tmp_path / "out.jsonl")
    assert [r["line"] for r in records] == list(range(1, 9))
    errors = {r["line"]: r.get("error", "") for r in records}
    assert "verdicts" in records[0] and "verdicts" in records[7] and not errors[1] and not errors[8]
    assert errors[2] == "blank line: nothing to judge"
    assert "not valid JSON" in errors[3] and "not a JSON object" in errors[7]
    assert "cannot read image" in errors[4] and "bomb.png" in errors[4]
    assert "cannot read image" in errors[5] and "bigtext.png" in errors[5]
    assert "image not found" in errors[6]
    assert (counts.scored, counts.errors) == (2, 6)


def test_an_input_whose_last_line_has_no_newline_is_read_whole(tmp_path: Path) -> None:
    batch = _batch(tmp_path, n=2)
    batch.write_text(batch.read_text().rstrip("\n"))  # as an editor may save it
    score_jsonl(CountingCritic, batch, tmp_path / "out.jsonl", progress=False)
    records = _records(tmp_path / "out.jsonl")
    assert [r.get("id") for r in records] == ["e0", "e1", "bad"] and "verdicts" in records[1]


def test_default_rewards_apply_only_when_their_dimensions_are_judged(tmp_path: Path) -> None:
    assert choose_reward(None, "edit", ["execution"]) is None
    assert choose_reward("none", "edit", ["execution", "consistency"]) is None
    name, strategy = choose_reward(None, "gen", ["instruction", "quality"]) or ("", None)
    assert name == "qma" and strategy is not None
    with pytest.raises(InputError, match="needs dimensions consistency"):
        choose_reward("cme", "edit", ["execution"])

    batch = _batch(tmp_path)
    sample = parse_sample(json.loads(batch.read_text().splitlines()[0]), base=tmp_path, default_dimensions="execution")
    critic = CountingCritic()
    [record] = judge_samples(critic, [sample], [CriticReward(critic, strategy_for("single"), "single")])
    assert set(record["verdicts"]) == {"execution"} and record["reward"]["name"] == "single"

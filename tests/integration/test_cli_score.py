"""`firm score` end to end on the real EditScore edit pair, with a tiny saved Qwen3-VL critic."""

import json
from pathlib import Path

import pytest
from PIL import Image

from firm.cli import main

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
EDIT_PAIR = FIXTURES / "editscore"

CHEAP = ["--max-new-tokens", "12", "--max-pixels", "4096", "--device", "cpu"]


@pytest.fixture(scope="module")
def edit_pair():
    if not EDIT_PAIR.is_dir():
        pytest.skip(f"no edit pair fixture at {EDIT_PAIR}")
    example = json.loads((EDIT_PAIR / "example.json").read_text())
    return EDIT_PAIR / example["input_image"], EDIT_PAIR / example["output_image"], example["instruction"]


def _edit_args(edit_pair):
    source, edited, instruction = edit_pair
    return ["--source", str(source), "--image", str(edited), "--instruction", instruction]


def test_score_an_edit_prints_both_verdicts_and_the_cme_reward(tiny_critic_dir, edit_pair, capsys):
    assert main(["score", "--model", str(tiny_critic_dir), *CHEAP, *_edit_args(edit_pair)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "edit" and result["text"] == edit_pair[2]
    assert set(result["verdicts"]) == {"execution", "consistency"}
    for dim, verdict in result["verdicts"].items():
        assert verdict["dimension"] == dim and verdict["raw"]
        # Random weights: the answer is arbitrary text. Either a real parse or an honest invalid verdict.
        if verdict["valid"]:
            assert 1 <= verdict["score"] <= 5
        else:
            assert verdict["score"] is None and verdict["invalid_reason"]
    valid = all(v["valid"] for v in result["verdicts"].values())
    assert result["reward"]["name"] == "cme" and result["reward"]["valid"] is valid
    assert (result["reward"]["total"] is None) is (not valid)


def test_score_a_generation_with_the_score_token_critic(tiny_critic_dir, edit_pair, capsys):
    argv = ["score", "--critic", "score_token", "--model", str(tiny_critic_dir), "--max-pixels", "4096"]
    argv += ["--image", str(edit_pair[1]), "--prompt", "a bedroom with a glass wall", "--reward", "logit_expectation"]
    argv += ["--dimensions", "instruction"]
    # logit_expectation defaults to the execution dimension; a gen sample must say which dimension it rewards.
    assert main(argv) == 2
    assert "needs dimensions execution" in capsys.readouterr().err
    argv[-1] = "instruction,quality"
    argv[argv.index("logit_expectation")] = "qma"
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    # A random critic puts almost no probability on the score tokens: each verdict is invalid and says how little,
    # and the reward is null, never a score read from noise (the distribution itself is tested in the unit tests).
    for verdict in result["verdicts"].values():
        assert not verdict["valid"] and verdict["score"] is None
        assert (
            "the score tokens hold" in verdict["invalid_reason"] and "min_digit_mass=0.5" in verdict["invalid_reason"]
        )
    assert result["reward"]["total"] is None and result["reward"]["valid"] is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image", "missing.png", "--prompt", "x"], "image not found: "),
        (["--image", "{garbage}", "--prompt", "x"], "cannot read image "),
        (["--image", "{ok}", "--prompt", "x", "--dimensions", "execution"], "dimension 'execution' judges edits"),
        (["--image", "{ok}", "--prompt", "x", "--dimensions", "beauty"], "unknown dimension 'beauty'"),
        (["--image", "{ok}", "--instruction", "x"], "an edit needs its source image"),
        (["--image", "{ok}", "--prompt", "x", "--critic", "nope"], "no critic named 'nope'"),
        (["--image", "{ok}", "--prompt", "x", "--critic", "openai"], "needs --base-url"),
        (["--image", "{ok}", "--prompt", "x", "--base-url", "http://x"], "does not take --base-url"),
        (["--image", "{ok}", "--prompt", "x", "--critic", "score_token", "--samples", "4"], "does not take --samples"),
        (["--image", "{ok}", "--prompt", "x", "--samples", "0"], "need samples >= 1"),
        (["--image", "{ok}", "--prompt", "x", "--reward", "nope"], "no reward named 'nope'"),
        (["--image", "{ok}", "--prompt", "x", "--model", "{missing_dir}"], "no Hugging Face model folder"),
        (["--image", "{ok}", "--prompt", "x", "--template", "quality=./nowhere.txt"], "nowhere.txt"),
        (["--image", "{ok}", "--prompt", "x", "--template", "quality"], "DIM=NAME_OR_PATH"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, tiny_critic_dir, capsys, extra, message):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    ok = tmp_path / "ok.png"
    Image.new("RGB", (32, 32)).save(ok)
    fill = {"{garbage}": str(garbage), "{ok}": str(ok), "{missing_dir}": str(tmp_path / "no-such-model")}
    argv = ["score", *[fill.get(a, a) for a in extra]]
    if "--model" not in argv:
        argv += ["--model", str(tiny_critic_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("firm score: error: ") and message in err


def test_batch_mode_records_bad_lines_and_resumes(tmp_path, tiny_critic_dir, edit_pair, capsys):
    source, edited, instruction = edit_pair
    lines = [
        {"id": "good-edit", "source": str(source), "image": str(edited), "instruction": instruction},
        {"id": "missing", "source": str(source), "image": "nowhere.png", "instruction": instruction},
        {"id": "gen", "image": str(edited), "prompt": "a bedroom", "dimensions": ["instruction"]},
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["score", "--model", str(tiny_critic_dir), *CHEAP, "--input", str(batch), "--output", str(out)]
    assert main(argv) == 1  # a line had an error: reported, and the others were still judged
    first = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["id"]: ("error" in r) for r in first} == {"good-edit": False, "missing": True}
    assert "image not found" in next(r for r in first if r["id"] == "missing")["error"]

    assert main(argv) == 2 and "pass --resume" in capsys.readouterr().err  # never overwrites silently

    batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main([*argv, "--resume"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["good-edit", "missing", "gen"]  # done lines kept, only the new one judged
    assert set(rows[2]["verdicts"]) == {"instruction"} and "reward" not in rows[2]
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["skipped"] == 2 and summary["scored"] == 1

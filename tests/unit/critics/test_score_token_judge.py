"""ScoreTokenJudge on tiny random-weight Qwen3-VL and Qwen2.5-VL critics built with the real transformers classes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from firm.critics.base import Critic, JudgeRequest, ScoreRange
from firm.critics.score_token import ScoreTokenJudge, score_distribution, score_token_ids
from firm.testing import save_tiny_critic, tiny_tokenizer

Pair = tuple[PreTrainedModel, ProcessorMixin]


def noise(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def requests_of_mixed_lengths() -> list[JudgeRequest]:
    return [
        JudgeRequest("execution", "add a hat", noise(48, 40, 1), source=noise(48, 40, 2)),
        JudgeRequest("instruction", "a red circle above a blue square on a grey floor, photographed", noise(32, 32, 3)),
        JudgeRequest("execution", "turn the square into a circle and move it left", noise(64, 32, 4), noise(64, 32, 5)),
        JudgeRequest("quality", "a cat", noise(40, 56, 6)),
    ]


def test_distribution_is_a_probability_over_the_range(tiny_critic: Pair) -> None:
    judge = ScoreTokenJudge.from_model(*tiny_critic, min_digit_mass=0.0)  # a random critic: accept any mass
    for verdict in judge.judge(requests_of_mixed_lengths()):
        assert verdict.valid and verdict.distribution is not None and verdict.expected is not None
        assert len(verdict.distribution) == 5 and min(verdict.distribution) >= 0
        assert math.isclose(sum(verdict.distribution), 1.0, abs_tol=1e-5)
        assert math.isclose(
            verdict.expected, sum(p * s for p, s in zip(verdict.distribution, range(1, 6), strict=True))
        )
        assert 1 <= verdict.expected <= 5
        assert verdict.score == 1 + int(np.argmax(verdict.distribution))
        assert verdict.reasoning.startswith("digit mass ")


def test_reads_the_last_prompt_position_of_a_plain_forward_pass(tiny_critic: Pair) -> None:
    model, processor = tiny_critic
    request = requests_of_mixed_lengths()[0]
    judge = ScoreTokenJudge.from_model(model, processor, min_digit_mass=0.0)
    # Independently of the judge: one unpadded row, the full logits, the digit tokens looked up by name.
    inputs = processor(text=[judge.chat_text(request)], images=[request.images], return_tensors="pt")
    with torch.inference_mode():
        logits_V = model(**inputs).logits[0, -1]
    digits = [processor.tokenizer.convert_tokens_to_ids(str(s)) for s in range(1, 6)]
    full = logits_V.softmax(-1)
    expected = (full[digits] / full[digits].sum()).tolist()

    (verdict,) = judge.judge([request])
    assert verdict.distribution == pytest.approx(expected, abs=1e-5)
    assert verdict.reasoning == f"digit mass {float(full[digits].sum()):.3g}"
    assert verdict.raw == processor.tokenizer.decode([int(logits_V.argmax())])


def test_batched_equals_one_at_a_time(tiny_critic: Pair) -> None:
    requests = requests_of_mixed_lengths() * 2
    batched = ScoreTokenJudge.from_model(*tiny_critic, batch_size=8, min_digit_mass=0.0)
    mask = batched.encode(requests[:1] + requests[2:3])["attention_mask"]
    assert bool((mask == 0).any()), "rows of different lengths must be padded for this test to mean anything"
    single = ScoreTokenJudge.from_model(*tiny_critic, batch_size=1, min_digit_mass=0.0)
    for b, s in zip(batched.judge(requests), single.judge(requests), strict=True):
        assert b.dimension == s.dimension
        assert b.distribution == pytest.approx(s.distribution, abs=1e-5)
        assert b.expected == pytest.approx(s.expected, abs=1e-4)
        top_two = sorted(s.distribution or ())[-2:]
        if top_two[1] - top_two[0] > 1e-4:
            assert b.score == s.score


def test_low_digit_mass_is_invalid_not_a_score_by_default(tiny_critic: Pair) -> None:
    # A random model spreads its probability over ~260 byte tokens: the five digits get about 2 % of it, far below
    # the default threshold, so an untrained critic never passes noise off as a score.
    judge = ScoreTokenJudge.from_model(*tiny_critic)
    for verdict in judge.judge(requests_of_mixed_lengths()):
        assert not verdict.valid and verdict.score is None
        assert verdict.distribution is None and verdict.expected is None
        assert verdict.invalid_reason is not None and verdict.invalid_reason.startswith("no score: ")
        assert "min_digit_mass=0.5" in verdict.invalid_reason
        assert verdict.reasoning.startswith("digit mass 0.0")


def test_a_score_that_is_not_a_single_token_is_a_clear_error(tiny_critic: Pair) -> None:
    with pytest.raises(ValueError, match=r"score 10 of the range 0-10 is 2 tokens"):
        ScoreTokenJudge.from_model(*tiny_critic, score_range=ScoreRange(0, 10))


def test_score_token_ids_are_the_digits_in_order() -> None:
    tokenizer = tiny_tokenizer()
    ids = score_token_ids(tokenizer, ScoreRange(0, 9))
    assert [tokenizer.decode([i]) for i in ids] == [str(d) for d in range(10)]


def test_score_distribution_on_known_logits() -> None:
    logits_BV = torch.tensor([[0.0, math.log(3.0), 0.0, math.log(4.0)], [5.0, 0.0, 0.0, 0.0]])
    probs_BS, mass_B = score_distribution(logits_BV, [1, 3])
    assert torch.allclose(probs_BS, torch.tensor([[3 / 7, 4 / 7], [0.5, 0.5]]))
    assert mass_B.tolist() == pytest.approx([7 / 9, 2 / (math.exp(5.0) + 3)])


def test_score_instruction_and_answer_prefix_shape_the_input(tiny_critic: Pair) -> None:
    model, processor = tiny_critic
    request = requests_of_mixed_lengths()[1]
    default = ScoreTokenJudge.from_model(model, processor, min_digit_mass=0.0)
    assert "one whole number from 1 to 5.<|im_end|>" in default.chat_text(request)
    bare = ScoreTokenJudge.from_model(model, processor, score_instruction="", score_range=ScoreRange(0, 9))
    rendered = bare.template("instruction").render(request.text)
    assert f"{rendered}<|im_end|>" in bare.chat_text(request), "with no instruction the template is asked as it is"

    prefixed = ScoreTokenJudge.from_model(model, processor, answer_prefix='{"score": [', min_digit_mass=0.0)
    ids = prefixed.encode([request])["input_ids"][0].tolist()
    prefix_ids = processor.tokenizer.encode('{"score": [', add_special_tokens=False)
    assert ids[-len(prefix_ids) :] == prefix_ids, "the prefix is the last thing the model reads"
    (with_prefix,) = prefixed.judge([request])
    (without,) = default.judge([request])
    assert with_prefix.distribution != pytest.approx(without.distribution)


def test_min_digit_mass_must_be_a_probability(tiny_critic: Pair) -> None:
    with pytest.raises(ValueError, match="min_digit_mass is a probability"):
        ScoreTokenJudge.from_model(*tiny_critic, min_digit_mass=1.5)


def test_builds_from_a_yaml_config_with_a_score_range(tmp_path: Path) -> None:
    folder = save_tiny_critic(tmp_path / "tiny-qwen2.5-vl", "qwen2_5_vl")
    config = yaml.safe_load(
        f"""
        critic:
          class_path: firm.critics.transformers.ScoreTokenJudge
          init_args:
            model: {folder}
            score_range: {{low: 0, high: 9}}
            min_digit_mass: 0.001
            device: cpu
        """
    )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--critic", type=Critic)
    critic = parser.instantiate(parser.parse_object(config)).critic
    assert isinstance(critic, ScoreTokenJudge) and critic.score_range == ScoreRange(0, 9)
    (verdict,) = critic.judge([JudgeRequest("quality", "a cat", noise(32, 32, 1))])
    assert verdict.valid and verdict.distribution is not None and len(verdict.distribution) == 10
    assert verdict.score in ScoreRange(0, 9)

"""GenerativeJudge on tiny random-weight Qwen3-VL and Qwen2.5-VL critics built with the real transformers classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from firm.critics.base import Critic, JudgeRequest, Verdict
from firm.critics.parsing import REASON_CATEGORIES, reason_category
from firm.critics.transformers import DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION, GenerativeJudge, average_verdicts

Pair = tuple[PreTrainedModel, ProcessorMixin]


def noise(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def edit(text: str, seed: int, size: tuple[int, int] = (48, 40)) -> JudgeRequest:
    return JudgeRequest("execution", text, noise(*size, seed), source=noise(*size, seed + 100))


def test_batched_greedy_answers_equal_one_at_a_time(tiny_critic: Pair) -> None:
    # Different prompt lengths and image sizes, so the batch is left padded by different amounts per row.
    requests = [
        edit("add a hat", 1),
        edit("turn the small blue square into a large red circle and move it to the top left corner", 2),
        edit("remove the dog", 3, size=(64, 32)),
        edit("make it night", 4, size=(32, 32)),
    ]
    judge = GenerativeJudge.from_model(*tiny_critic, max_new_tokens=12, batch_size=4)
    mask = judge.encode(requests)["attention_mask"]
    assert (mask == 0).any(dim=1).sum() >= 3, "rows of different lengths must be padded for this test to mean anything"

    batched = judge.answer_tokens(requests, 12)
    single = [judge.answer_tokens([r], 12)[0] for r in requests]
    # A batch pads finished rows to the longest answer; compare up to each single answer's own length.
    assert [row[: len(one)] for row, one in zip(batched, single, strict=True)] == single

    # judge() goes the same way: its raw answers are the single answers, decoded.
    decoded = tiny_critic[1].tokenizer.batch_decode(single, skip_special_tokens=True)
    assert [v.raw for v in judge.judge(requests)] == decoded


def test_left_padding_is_forced_even_if_the_tokenizer_pads_right(tiny_critic: Pair) -> None:
    model, processor = tiny_critic
    processor.tokenizer.padding_side = "right"
    try:
        judge = GenerativeJudge.from_model(model, processor, max_new_tokens=4)
        mask = judge.encode([edit("a", 1), edit("a much longer instruction than the first", 2)])["attention_mask"]
        assert mask[0, 0] == 0 and mask[0, -1] == 1 and bool(mask[1].all())
        assert processor.tokenizer.padding_side == "right", "the shared processor keeps its own setting"
    finally:
        processor.tokenizer.padding_side = "left"


def test_edit_requests_show_the_source_image_first(tiny_critic: Pair) -> None:
    model, processor = tiny_critic
    source, edited = noise(64, 32, 1), noise(32, 64, 2)
    request = JudgeRequest("consistency", "swap the colours", edited, source=source)
    judge = GenerativeJudge.from_model(model, processor, max_new_tokens=4)
    inputs = judge.encode([request])

    alone = [processor.image_processor(images=[img], return_tensors="pt") for img in (source, edited)]
    assert inputs["image_grid_thw"].tolist() == [
        alone[0]["image_grid_thw"][0].tolist(),
        alone[1]["image_grid_thw"][0].tolist(),
    ]
    n_source = alone[0]["pixel_values"].shape[0]
    assert torch.equal(inputs["pixel_values"][:n_source], alone[0]["pixel_values"])
    assert torch.equal(inputs["pixel_values"][n_source:], alone[1]["pixel_values"])
    # Both images come before the question in the user turn.
    text = judge.chat_text(request)
    assert text.rindex("<|vision_end|>") < text.index("swap the colours")
    assert text.endswith("<|im_start|>assistant\n")


def test_verdicts_come_back_in_input_order_for_mixed_dimensions(tiny_critic: Pair) -> None:
    image, source = noise(40, 40, 7), noise(40, 40, 8)
    requests = [
        JudgeRequest("instruction", "a red circle above a blue square", image),
        JudgeRequest("execution", "add a hat", image, source=source),
        JudgeRequest("quality", "a cat", image),
        JudgeRequest("consistency", "add a hat", image, source=source),
        JudgeRequest("execution", "remove the tree on the left", image, source=source),
        JudgeRequest("instruction", "one green triangle", noise(32, 48, 9)),
    ]
    judge = GenerativeJudge.from_model(*tiny_critic, max_new_tokens=4, max_new_tokens_per_dimension={}, batch_size=2)
    verdicts = judge.judge(requests)
    alone = [judge.judge([r])[0] for r in requests]
    assert [v.dimension for v in verdicts] == [r.dimension for r in requests]
    assert [v.raw for v in verdicts] == [v.raw for v in alone]
    assert len({v.raw for v in verdicts}) > 1, "the answers differ, so a reordering would show"


def test_random_weights_give_invalid_verdicts_with_reasons_not_scores(tiny_critic: Pair) -> None:
    requests = [edit("add a hat", 1), JudgeRequest("instruction", "a cat", noise(32, 32, 2))]
    # min_new_tokens disables the end token, so every answer fills its budget without finishing.
    judge = GenerativeJudge.from_model(
        *tiny_critic, max_new_tokens=8, max_new_tokens_per_dimension={}, generation_kwargs={"min_new_tokens": 8}
    )
    for verdict in judge.judge(requests):
        assert verdict.score is None and not verdict.valid
        assert verdict.raw, "the raw answer is kept for audit"
        assert verdict.invalid_reason is not None
        assert reason_category(verdict.invalid_reason) in REASON_CATEGORIES
        assert verdict.invalid_reason.endswith("(answer cut at max_new_tokens=8)")


def test_an_answer_that_finishes_is_not_called_cut(tiny_critic: Pair) -> None:
    model, processor = tiny_critic
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # forced_eos_token_id writes the end token as the budget's last token: the answer finishes, exactly on budget.
    judge = GenerativeJudge.from_model(
        model, processor, max_new_tokens=8, generation_kwargs={"forced_eos_token_id": eos}
    )
    (verdict,) = judge.judge([edit("add a hat", 1)])
    assert not verdict.valid and verdict.invalid_reason is not None
    assert "max_new_tokens" not in verdict.invalid_reason


def forcing(processor: ProcessorMixin, answer: str) -> Callable[[int, torch.Tensor], list[int]]:
    """A prefix_allowed_tokens_fn that makes the model write ``answer`` and then end its turn."""
    tokenizer = processor.tokenizer
    target = [*tokenizer.encode(answer, add_special_tokens=False), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    header = len(tokenizer.encode("assistant\n", add_special_tokens=False))

    def allowed(batch_id: int, ids: torch.Tensor) -> list[int]:
        seen = ids.tolist()
        answer_start = len(seen) - seen[::-1].index(im_start) + header  # after the last "<|im_start|>assistant\n"
        return [target[min(len(seen) - answer_start, len(target) - 1)]]

    return allowed


def test_a_well_formed_answer_is_decoded_and_parsed_into_its_score(tiny_critic: Pair) -> None:
    model, processor = tiny_critic
    answer = '{"reasoning": "the hat is there", "score": [4]}'
    judge = GenerativeJudge.from_model(
        model, processor, max_new_tokens=64, generation_kwargs={"prefix_allowed_tokens_fn": forcing(processor, answer)}
    )
    verdicts = judge.judge([edit("add a hat", 1), edit("a much longer instruction to pad the other row", 2)])
    for verdict in verdicts:
        assert verdict.valid and verdict.score == 4
        assert verdict.reasoning == "the hat is there"
        assert verdict.raw == answer, "only the new tokens are decoded, special tokens skipped"


def choosing(processor: ProcessorMixin, prefix: str, digits: str) -> Callable[[int, torch.Tensor], list[int]]:
    """A prefix_allowed_tokens_fn that makes the model write ``prefix``, then one of ``digits`` (its own pick), then
    ``]}`` and the end of its turn."""
    tokenizer = processor.tokenizer
    head = tokenizer.encode(prefix, add_special_tokens=False)
    tail = [*tokenizer.encode("]}", add_special_tokens=False), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    choices = [tokenizer.convert_tokens_to_ids(d) for d in digits]
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    header = len(tokenizer.encode("assistant\n", add_special_tokens=False))

    def allowed(batch_id: int, ids: torch.Tensor) -> list[int]:
        seen = ids.tolist()
        at = len(seen) - (len(seen) - seen[::-1].index(im_start) + header)
        if at < len(head):
            return [head[at]]
        if at == len(head):
            return choices
        return [tail[min(at - len(head) - 1, len(tail) - 1)]]

    return allowed


def test_sampled_answers_are_averaged_into_one_seeded_verdict(tiny_critic: Pair) -> None:
    model, processor = tiny_critic
    judge = GenerativeJudge.from_model(
        model, processor, max_new_tokens=48, samples=8, seed=3,
        generation_kwargs={"prefix_allowed_tokens_fn": choosing(processor, '{"reasoning": "r", "score": [', "35")},
    )  # fmt: skip
    requests = [edit("add a hat", i) for i in range(4)]
    state = torch.random.get_rng_state()
    verdicts = judge.judge(requests)
    assert torch.equal(torch.random.get_rng_state(), state), "sampling leaves the global random state alone"
    for verdict in verdicts:
        assert verdict.valid and verdict.expected is not None and verdict.distribution is not None
        low, _, three, _, five = verdict.distribution
        assert low == 0 and three + five == pytest.approx(1.0)
        assert verdict.expected == pytest.approx(3 * three + 5 * five)
        assert verdict.score == int(verdict.expected + 0.5)
    # The random weights split their picks between 3 and 5: the average is not a single answer's score.
    assert any(0 < v.distribution[2] < 1 for v in verdicts if v.distribution)
    assert judge.judge(requests) == verdicts, "the same seed gives the same verdicts"


def test_average_verdicts_rounds_the_mean_and_keeps_invalid_answers_out() -> None:
    answers = [
        Verdict("quality", 3, "a", sub_scores=(3, 5, 4)),
        Verdict("quality", None, raw="?", invalid_reason="no score"),
        Verdict("quality", 4, "b", sub_scores=(4, 4, 5)),
    ]
    averaged = average_verdicts(answers)
    assert (averaged.score, averaged.expected) == (4, 3.5)  # half rounds up
    assert averaged.distribution == (0.0, 0.0, 0.5, 0.5, 0.0)
    assert (averaged.reasoning, averaged.sub_scores) == ("a", None)  # the first closest answer; its 3 is not the score
    assert average_verdicts(answers[2:]).sub_scores == (4, 4, 5)
    none = average_verdicts([answers[1], answers[1]])
    assert not none.valid and none.invalid_reason is not None
    assert none.invalid_reason.startswith("none of the 2 sampled answers gave a score")


def test_token_budgets_per_dimension(tiny_critic: Pair) -> None:
    judge = GenerativeJudge.from_model(*tiny_critic, max_new_tokens=32)
    assert judge.max_new_tokens_for("execution") == 32
    assert judge.max_new_tokens_for("instruction") == DEFAULT_MAX_NEW_TOKENS_PER_DIMENSION["instruction"] == 1024
    flat = GenerativeJudge.from_model(*tiny_critic, max_new_tokens=32, max_new_tokens_per_dimension={})
    assert flat.max_new_tokens_for("instruction") == 32
    custom = GenerativeJudge.from_model(*tiny_critic, max_new_tokens_per_dimension={"quality": 5})
    assert (custom.max_new_tokens_for("quality"), custom.max_new_tokens_for("consistency")) == (5, 256)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_new_tokens_per_dimension": {"style": 8}}, "unknown dimension 'style'"),
        ({"max_new_tokens": 0}, "token budgets must be at least 1"),
        ({"generation_kwargs": {"do_sample": True}}, "cannot set do_sample"),
        ({"templates": {"aesthetics": "quality"}}, "unknown dimension 'aesthetics'"),
        ({"templates": {"execution": "no_such_template"}}, "unknown prompt template"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"device": "cpu", "dtype": "float32"}, "device, dtype configure loading"),
        ({"samples": 0}, "need samples >= 1"),
        ({"samples": 4, "temperature": 0.0}, "temperature > 0"),
        ({"generation_kwargs": {"temperature": 0.7}}, "cannot set temperature"),
    ],
)
def test_bad_settings_fail_at_construction(tiny_critic: Pair, settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerativeJudge.from_model(*tiny_critic, **settings)


def test_a_template_file_is_what_the_model_reads(tiny_critic: Pair, tmp_path: Path) -> None:
    template = tmp_path / "mine.txt"
    template.write_text('Did they {text}? Answer {{"score": [n]}}.', encoding="utf-8")
    judge = GenerativeJudge.from_model(*tiny_critic, templates={"execution": str(template)})
    assert 'Did they add a hat? Answer {"score": [n]}.<|im_end|>' in judge.chat_text(edit("add a hat", 1))
    assert "source image" in judge.chat_text(JudgeRequest("consistency", "add a hat", noise(8, 8, 1), noise(8, 8, 2)))


def test_progress_bar_only_when_asked(tiny_critic: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    GenerativeJudge.from_model(*tiny_critic, max_new_tokens=2).judge([edit("a", 1)])
    assert "judging" not in capsys.readouterr().err
    GenerativeJudge.from_model(*tiny_critic, max_new_tokens=2, progress=True).judge([edit("a", 1)])
    assert "judging" in capsys.readouterr().err


def test_a_saved_critic_folder_builds_from_a_yaml_config(tiny_critic_dir: Path) -> None:
    # As `firm score -c critic.yaml` builds it: a class_path and init_args resolved against the Critic base.
    config = yaml.safe_load(
        f"""
        critic:
          class_path: firm.critics.transformers.GenerativeJudge
          init_args:
            model: {tiny_critic_dir}
            max_new_tokens: 4
            max_new_tokens_per_dimension: {{instruction: 6}}
            max_pixels: 1024
            device: cpu
            dtype: float32
            templates: {{execution: execution}}
        """
    )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--critic", type=Critic)
    critic = parser.instantiate(parser.parse_object(config)).critic
    assert isinstance(critic, GenerativeJudge)
    assert critic.max_new_tokens_for("instruction") == 6 and critic.device.type == "cpu"
    # max_pixels reached the processor: a 64 x 64 image becomes at most 1024 pixels of 16 x 16 patches.
    request = edit("add a hat", 1, size=(64, 64))
    assert critic.encode([request])["image_grid_thw"].prod(dim=1).tolist() == [4, 4]
    (verdict,) = critic.judge([request])
    assert verdict.dimension == "execution" and verdict.raw == critic.judge([request])[0].raw

"""The curation parsers on hand-written answers: difference reports, score labels (and their SFT targets), plans and
rewrites; and the stage templates' checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firm.critics.parsing import parse_verdict
from firm.curation.base import DETAIL_CATEGORIES, PLAN_GROUPS, DifferenceReport, Label, Plan, Rejected
from firm.curation.llm import (
    STAGE_FIELDS,
    load_stage_template,
    parse_label,
    parse_plan,
    parse_report,
    parse_rewrite,
)

REPORT = {
    "obvious": ["the hat: absent in the first picture; red, on the head in the second"],
    "detailed": {"colour": ["the hat is red"], "quantity": ["one hat added"]},
}


# --- difference reports ----------------------------------------------------------------------------------------------


def test_report_read_from_a_fenced_answer_with_prose() -> None:
    answer = f"Here is what I see:\n```json\n{json.dumps(REPORT)}\n```\nThat is all."
    report = parse_report(answer)
    assert isinstance(report, DifferenceReport)
    assert report.obvious == tuple(REPORT["obvious"])
    assert report.detailed["colour"] == ("the hat is red",)
    assert report.detailed["size"] == ()
    assert set(report.detailed) == set(DETAIL_CATEGORIES)


def test_report_category_spellings_and_object_entries_are_normalised() -> None:
    answer = json.dumps(
        {
            "obvious": [{"subject": "hat", "first": "absent", "second": "red"}],
            "detailed": {"Color": ["red"], "Position": ["moved left"], "texture_and_surface": []},
        }
    )
    report = parse_report(answer)
    assert isinstance(report, DifferenceReport)
    assert report.obvious == ("subject: hat; first: absent; second: red",)
    assert report.detailed["colour"] == ("red",)
    assert report.detailed["position and layout"] == ("moved left",)


def test_report_skips_other_objects_and_takes_the_first_report() -> None:
    other = {"obvious": ["something else"], "detailed": {}}
    answer = '{"note": "x"} then ' + json.dumps(REPORT) + " and " + json.dumps(other)
    report = parse_report(answer)
    assert isinstance(report, DifferenceReport)
    assert report.obvious == tuple(REPORT["obvious"])


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("The hat turned red.", "no JSON object with 'obvious' and 'detailed'"),
        ('{"obvious": ["hat"], "detailed": {"colour": ["red"]', "no JSON object with 'obvious' and 'detailed'"),
        ('{"obvious": ["hat"]}', "no JSON object with 'obvious' and 'detailed'"),
        ('{"obvious": "hat", "detailed": {}}', "'obvious' must be a list of strings"),
        ('{"obvious": [], "detailed": {"smell": ["bad"]}}', "unknown detail categories ['smell']"),
        ('{"obvious": [], "detailed": {"size": "bigger"}}', "'size' must be a list of strings"),
    ],
)
def test_bad_reports_are_rejected_with_a_reason(answer: str, reason: str) -> None:
    result = parse_report(answer)
    assert isinstance(result, Rejected)
    assert reason in result.reason
    assert result.raw == answer


# --- score labels ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dimension", ["execution", "consistency"])
def test_edit_label_target_is_firms_format_and_parses_back(dimension: str) -> None:
    answer = '```json\n{"reasoning": "The hat is red now,\\n as asked.", "score": [4]}\n```'
    label = parse_label(answer, dimension)
    assert isinstance(label, Label)
    assert label.score == 4 and label.dimension == dimension and label.raw == answer
    assert json.loads(label.answer) == {"reasoning": "The hat is red now, as asked.", "score": [4]}
    assert parse_verdict(label.answer, dimension).score == 4


def test_free_text_score_becomes_a_json_target() -> None:
    label = parse_label("The hat was added but it is blue, not red.\nScore: 3", "execution")
    assert isinstance(label, Label)
    assert json.loads(label.answer) == {"reasoning": "The hat was added but it is blue, not red.", "score": [3]}


def test_quality_keeps_the_three_sub_scores() -> None:
    label = parse_label('{"reasoning": "Sharp, but the hands are wrong.", "score": [4, 5, 2]}', "quality")
    assert isinstance(label, Label)
    assert label.score == 2 and label.sub_scores == (4, 5, 2)
    verdict = parse_verdict(label.answer, "quality")
    assert verdict.score == 2 and verdict.sub_scores == (4, 5, 2)


def test_quality_with_two_sub_scores_is_rejected() -> None:
    result = parse_label('{"reasoning": "fine", "score": [4, 5]}', "quality")
    assert isinstance(result, Rejected)
    assert result.reason.startswith("wrong number of scores")


INSTRUCTION_ANSWER = """1. A cat is asked for: yes, a grey cat sits in the middle.
2. The cat should wear a red hat: no, the hat is blue.
Final analysis: the cat is there but the hat has the wrong colour,
so one requirement is missed.
Final Alignment Rating: 3
\\boxed{3}"""


def test_instruction_target_keeps_the_checks_and_the_final_analysis() -> None:
    label = parse_label(INSTRUCTION_ANSWER, "instruction")
    assert isinstance(label, Label)
    assert label.score == 3
    assert label.answer.splitlines() == [
        "1. A cat is asked for: yes, a grey cat sits in the middle.",
        "2. The cat should wear a red hat: no, the hat is blue.",
        "Final analysis: the cat is there but the hat has the wrong colour, so one requirement is missed.",
        "Final Alignment Rating: 3",
        "\\boxed{3}",
    ]
    assert label.evidence["checks"] == [
        "A cat is asked for: yes, a grey cat sits in the middle.",
        "The cat should wear a red hat: no, the hat is blue.",
    ]
    assert parse_verdict(label.answer, "instruction").score == 3


@pytest.mark.parametrize(
    ("answer", "dimension", "reason"),
    [
        ("", "execution", "empty answer"),
        ('{"reasoning": "looks fine"}', "execution", "no score"),
        ('{"reasoning": "ok", "score": [7]}', "consistency", "out of range"),
        ('{"reasoning": "ok", "score": [3.5]}', "execution", "not an integer"),
        ('{"reasoning": "", "score": [3]}', "execution", "no reasoning"),
        ('{"reasoning": "The difference report lists a red hat.", "score": [5]}', "execution", "'difference report'"),
        ("1. cat: yes\nFinal analysis: as the plan asks, all is met.\n\\boxed{5}", "instruction", "'the plan'"),
        ("The image matches.\nFinal Alignment Rating: 4\n\\boxed{4}", "instruction", "numbered checks"),
        ("1. cat: yes\nFinal Alignment Rating: 4\n\\boxed{5}", "instruction", "ambiguous"),
    ],
)
def test_bad_score_answers_are_rejected_never_guessed(answer: str, dimension: str, reason: str) -> None:
    result = parse_label(answer, dimension)
    assert isinstance(result, Rejected)
    assert reason in result.reason
    assert result.raw == answer


# --- plans -----------------------------------------------------------------------------------------------------------


def test_plan_headings_map_fuzzily_onto_the_groups() -> None:
    answer = """Here is the checklist.
**Main subjects:**
1. Is there a cat?
2) Is there exactly one hat?
## Attributes and actions
3. Is the hat red?
Style / Composition:
- Is it a watercolour painting?
Negative constraints:
4. Is the picture free of text?"""
    plan = parse_plan(answer)
    assert isinstance(plan, Plan)
    assert [(i.group, i.question) for i in plan.items] == [
        (PLAN_GROUPS[0], "Is there a cat?"),
        (PLAN_GROUPS[0], "Is there exactly one hat?"),
        (PLAN_GROUPS[1], "Is the hat red?"),
        (PLAN_GROUPS[2], "Is it a watercolour painting?"),
        (PLAN_GROUPS[3], "Is the picture free of text?"),
    ]


def test_a_plan_round_trips_through_its_text() -> None:
    plan = parse_plan("Main subjects/elements:\n1. Is there a cat?\nAttributes:\n2. Is it grey?")
    assert isinstance(plan, Plan)
    assert parse_plan(plan.text()) == plan


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "no numbered questions"),
        ("Main subjects:\nA cat and a hat.", "no numbered questions"),
        ("1. Is there a cat?", "before any heading"),
        ("Weather:\n1. Is it raining?", "under the heading 'Weather'"),
        ("Main subjects:\n1. Is there a cat?\n2. Is there  a CAT?", "asks 'Is there  a CAT?' twice"),
    ],
)
def test_bad_plans_are_rejected(answer: str, reason: str) -> None:
    result = parse_plan(answer)
    assert isinstance(result, Rejected)
    assert reason in result.reason


# --- rewrites --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "Make the car green.",
        '"Make the car green."',
        "Instruction: Make the car green.",
        "New instruction: **Make the car green.**\nThis differs because...",
        "\n\n  Make the car green.  \n",
        "Here is a new instruction:\n\nMake the car green.",
    ],
)
def test_rewrite_takes_the_first_line_without_decoration(answer: str) -> None:
    assert parse_rewrite(answer, "add a red hat to the cat") == "Make the car green."


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "holds no instruction"),
        ("   \n", "holds no instruction"),
        ("The original instruction is:", "holds no instruction"),
        ("Add a red  HAT to the cat.", "repeats the original"),
    ],
)
def test_bad_rewrites_are_rejected(answer: str, reason: str) -> None:
    result = parse_rewrite(answer, "add a red hat to the cat")
    assert isinstance(result, Rejected)
    assert reason in result.reason


# --- templates -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", sorted(STAGE_FIELDS))
def test_builtin_templates_load_and_render(stage: str) -> None:
    template = load_stage_template(stage)
    text = template.render(instruction="INSTR", prompt="PROMPT", report="REPORT", plan="PLAN")
    assert len(template.version) == 12
    _, required = STAGE_FIELDS[stage]
    for name in required:
        assert {"instruction": "INSTR", "prompt": "PROMPT"}[name] in text


def test_rendered_score_template_shows_the_report_and_asks_for_firms_format() -> None:
    text = load_stage_template("score_execution").render(instruction="add a hat", report="Obvious changes:\n- hat")
    assert "add a hat" in text and "Obvious changes:\n- hat" in text
    assert '{"reasoning": "<' in text


def test_user_template_with_an_unknown_field_fails_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("Instruction: {instruction}\nPlan: {plan}")
    with pytest.raises(ValueError, match=r"mine\.txt uses unknown field\(s\) \{plan\}"):
        load_stage_template("rewrite", path)
    path.write_text("Describe the edit.")
    with pytest.raises(ValueError, match=r"must use \{instruction\}"):
        load_stage_template("rewrite", path)
    path.write_text("Prompt: {prompt} {")
    with pytest.raises(ValueError, match="literal braces"):
        load_stage_template("plan", path)
    path.write_text("Prompt: {prompt}, shown as {{json}}")
    template = load_stage_template("plan", path)
    assert template.render(prompt="a cat") == "Prompt: a cat, shown as {json}"
    assert template.version != load_stage_template("plan").version
    with pytest.raises(ValueError, match="unknown curation stage"):
        load_stage_template("judge")

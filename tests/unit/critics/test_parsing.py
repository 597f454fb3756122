"""Score extraction: known answers -> known scores or known invalid-reason categories."""

from __future__ import annotations

import functools
import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firm.critics.answer import format_answer
from firm.critics.base import ScoreRange
from firm.critics.parsing import (
    AMBIGUOUS,
    EMPTY,
    NO_SCORE,
    NOT_INTEGER,
    OUT_OF_RANGE,
    REASON_CATEGORIES,
    TRUNCATED,
    WRONG_COUNT,
    WRONG_SCALE,
    parse_verdict,
    reason_category,
)

VIESCORE_RANGE = ScoreRange(0, 10)
EDITSCORE_RANGE = ScoreRange(0, 25)

# (dimension, answer text, expected score or invalid category, extra parse_verdict arguments)
CASES = [
    # --- edit answers: JSON ---
    pytest.param("execution", '{"reasoning": "The hat was added.", "score": [4]}', 4, {}, id="firm-format"),
    pytest.param("consistency", '{"reasoning": "Only the sky changed.", "score": 3}', 3, {}, id="scalar-score"),
    pytest.param("execution", '{"score": [1], "reasoning": "Nothing happened."}', 1, {}, id="score-first"),
    pytest.param("execution", '{"score": "5", "reasoning": "All done."}', 5, {}, id="string-score"),
    pytest.param("execution", '{"score": ["2"]}', 2, {}, id="list-of-string"),
    pytest.param("execution", '{"score": "4/5"}', 4, {}, id="string-four-of-five"),
    pytest.param("execution", '{"score": [4.0]}', 4, {}, id="integral-float"),
    pytest.param("consistency", '{"reasoning": "ok", "rating": 2}', 2, {}, id="rating-key"),
    pytest.param("execution", '{"Score": [5], "Reasoning": "fine"}', 5, {}, id="capitalised-keys"),
    pytest.param("execution", '{"score": [5, 2]}', 5, {}, id="list-first-by-default"),
    pytest.param("execution", '{"score": [5, 2]}', 2, {"reduce": "min"}, id="list-min-when-asked"),
    pytest.param(
        "execution",
        'Here is my verdict:\n```json\n{"reasoning": "The cup is now blue.", "score": [4]}\n```\nLet me know!',
        4,
        {},
        id="markdown-fence-with-prose",
    ),
    pytest.param("consistency", '```json\n{"reasoning": "x", "score": [2]}\n```', 2, {}, id="bare-fence"),
    pytest.param(
        "execution",
        '{"reasoning": "Done.", "score": [1]}\nOverall I would say score: 5',
        1,
        {},
        id="json-beats-trailing",
    ),
    pytest.param("execution", "{'reasoning': 'It\\'s fine', 'score': [4],}", 4, {}, id="python-dict-trailing-comma"),
    pytest.param(
        "execution", '{"reasoning": "The "hat" is red", "score": [4]}', 4, {}, id="unescaped-quotes-regex-fallback"
    ),
    pytest.param(
        "execution", '{"reasoning": "a", "score": [3]} {"reasoning": "b", "score": [3]}', 3, {}, id="two-objects-agree"
    ),
    pytest.param("execution", '{"reasoning": "Done", "score": [3.5]}', NOT_INTEGER, {}, id="half-score"),
    pytest.param("execution", '{"score": [7]}', OUT_OF_RANGE, {}, id="above-range"),
    pytest.param("consistency", '{"score": 0}', OUT_OF_RANGE, {}, id="below-range"),
    pytest.param("execution", '{"score": "8/10"}', WRONG_SCALE, {}, id="other-scale"),
    pytest.param("execution", '{"score": []}', WRONG_COUNT, {}, id="empty-list"),
    pytest.param("execution", '{"score": null}', NOT_INTEGER, {}, id="null-score"),
    pytest.param("execution", '{"score": true}', NOT_INTEGER, {}, id="boolean-score"),
    pytest.param("execution", '{"score": "four"}', NOT_INTEGER, {}, id="word-score"),
    pytest.param("execution", '{"score": "3-4"}', AMBIGUOUS, {}, id="range-string"),
    pytest.param("execution", '{"score": [2], "rating": 4}', AMBIGUOUS, {}, id="score-and-rating-disagree"),
    pytest.param(
        "execution",
        '{"reasoning": "a", "score": [2]}\n{"reasoning": "b", "score": [4]}',
        AMBIGUOUS,
        {},
        id="two-objects",
    ),
    pytest.param("execution", '{"reasoning": "I cannot tell."}', NO_SCORE, {}, id="json-without-score"),
    # --- empty and truncated ---
    pytest.param("execution", "", EMPTY, {}, id="empty"),
    pytest.param("instruction", "  \n\t", EMPTY, {}, id="whitespace-only"),
    pytest.param("execution", '{"reasoning": "The hat is added but the colour', TRUNCATED, {}, id="cut-in-reasoning"),
    pytest.param("execution", '{"reasoning": "The hat is red.", "score": [', TRUNCATED, {}, id="cut-before-number"),
    pytest.param("execution", '{"score": 1', TRUNCATED, {}, id="cut-after-digit"),
    pytest.param("execution", '```json\n{"reasoning": "The', TRUNCATED, {}, id="cut-in-fence"),
    pytest.param("execution", '{"score": [4], "reasoning": "The hat is', 4, {}, id="cut-after-complete-score"),
    pytest.param("execution", '{"reasoning": "{"' * 500, TRUNCATED, {}, id="looping-until-max-tokens"),
    # --- free text ---
    pytest.param("execution", "Score: 4", 4, {}, id="score-colon"),
    pytest.param("execution", "The edit is good.\nScore = 4/5", 4, {}, id="score-equals-of-five"),
    pytest.param("consistency", "**Score:** 3", 3, {}, id="markdown-bold"),
    pytest.param("execution", "I give it a rating of 2 out of 5.", 2, {}, id="rating-out-of"),
    pytest.param("execution", "The final score is 5.", 5, {}, id="score-is"),
    pytest.param("execution", "Score: 4. As said, score: 4.", 4, {}, id="repeated-same"),
    pytest.param("execution", "Score: 3 or 4", AMBIGUOUS, {}, id="either-or"),
    pytest.param("execution", "Score: 3. On reflection, score: 4.", AMBIGUOUS, {}, id="two-numbers"),
    pytest.param("execution", "Score: 4.5", NOT_INTEGER, {}, id="free-text-half"),
    pytest.param("execution", "score: 9", OUT_OF_RANGE, {}, id="free-text-above"),
    pytest.param("execution", "Score: 8/10", WRONG_SCALE, {}, id="free-text-out-of-ten"),
    pytest.param("execution", "The result looks fine to me.", NO_SCORE, {}, id="prose-only"),
    # --- instruction (gen): boxed, final line, JSON ---
    pytest.param(
        "instruction",
        "1. A cat: present.\n2. Red hat: present.\nFinal analysis: all met.\nFinal Alignment Rating: 5\n\\boxed{5}",
        5,
        {},
        id="gen-firm-format",
    ),
    pytest.param("instruction", "Everything matches, so \\boxed{3}", 3, {}, id="boxed-only"),
    pytest.param("instruction", "Final Alignment Rating: 2", 2, {}, id="final-line-only"),
    pytest.param(
        "instruction", "**Final Alignment Rating:** 4\n\n$\\boxed{ 4 }$", 4, {}, id="bold-final-and-spaced-box"
    ),
    pytest.param("instruction", "Final Score: 3", 3, {}, id="final-score-line"),
    pytest.param("instruction", "1. Dog: missing, score: 1 for this item.\n\\boxed{2}", 2, {}, id="boxed-is-decisive"),
    pytest.param("instruction", '{"reasoning": "mostly right", "score": [4]}', 4, {}, id="gen-json-fallback"),
    pytest.param("instruction", "Overall score: 3", 3, {}, id="gen-regex-fallback"),
    pytest.param("instruction", "Final Alignment Rating: 4\n\\boxed{3}", AMBIGUOUS, {}, id="boxed-vs-final"),
    pytest.param("instruction", "\\boxed{3} ... no wait, \\boxed{4}", AMBIGUOUS, {}, id="two-boxes"),
    pytest.param("instruction", "Final Alignment Rating: 6\n\\boxed{6}", OUT_OF_RANGE, {}, id="gen-above-range"),
    pytest.param("instruction", "\\boxed{3.5}", NOT_INTEGER, {}, id="boxed-half"),
    pytest.param("instruction", "\\boxed{n}", NOT_INTEGER, {}, id="template-echo"),
    # Models copy the template's brackets into the box, as into the final line.
    pytest.param("instruction", "Final analysis: all met.\n\\boxed{[4]}", 4, {}, id="bracketed-box"),
    pytest.param("instruction", "Final Alignment Rating: [4]\n$\\boxed{ [ 4 ] }$", 4, {}, id="bracketed-box-and-final"),
    pytest.param("instruction", "\\boxed{[4]} Final Alignment Rating: 3", AMBIGUOUS, {}, id="bracketed-box-vs-final"),
    pytest.param("instruction", "1. Cat: present.\n2. Hat: missing.\nFinal analysis: the", NO_SCORE, {}, id="gen-cut"),
    # --- quality (gen): three sub-scores, min ---
    pytest.param("quality", '{"reasoning": "Sharp, odd hands.", "score": [4, 3, 5]}', 3, {}, id="quality-list"),
    pytest.param(
        "quality", '{"aesthetics": 4, "technical": 5, "structure": 2, "reasoning": "x"}', 2, {}, id="quality-named"
    ),
    pytest.param(
        "quality",
        '{"score": {"Aesthetics": 3, "technical quality": 4, "structure-and-texture": 4}}',
        3,
        {},
        id="quality-named-in-score",
    ),
    pytest.param("quality", "Scores: [5, 4, 4]", 4, {}, id="quality-free-text-list"),
    pytest.param("quality", '{"score": [4, 3]}', WRONG_COUNT, {}, id="quality-two"),
    pytest.param("quality", '{"score": 4}', WRONG_COUNT, {}, id="quality-scalar"),
    pytest.param("quality", '{"aesthetics": 4, "technical": 5}', WRONG_COUNT, {}, id="quality-named-missing"),
    pytest.param("quality", '{"score": [4, 3, 6]}', OUT_OF_RANGE, {}, id="quality-above-range"),
    pytest.param(
        "quality",
        '{"score": [4, 3, 5], "aesthetics": 2, "technical": 3, "structure": 5}',
        AMBIGUOUS,
        {},
        id="quality-list-vs-named",
    ),
    # --- other score ranges ---
    pytest.param(
        "execution", '{"score": [0, 10]}', 0, {"score_range": VIESCORE_RANGE, "reduce": "min"}, id="viescore-zero"
    ),
    pytest.param("execution", "Score: 8/10", 8, {"score_range": VIESCORE_RANGE}, id="viescore-out-of-ten"),
    pytest.param(
        "execution", '{"score": [7]}', WRONG_COUNT, {"score_range": VIESCORE_RANGE, "n_scores": 2}, id="viescore-one"
    ),
    pytest.param("execution", "Score: 25", 25, {"score_range": EDITSCORE_RANGE}, id="editscore-top"),
    pytest.param("execution", "Score: 26", OUT_OF_RANGE, {"score_range": EDITSCORE_RANGE}, id="editscore-above"),
]


@pytest.mark.parametrize(("dimension", "text", "expected", "kwargs"), CASES)
def test_parse_verdict(dimension: str, text: str, expected: int | str, kwargs: dict[str, Any]) -> None:
    verdict = parse_verdict(text, dimension, **kwargs)
    assert verdict.dimension == dimension
    assert verdict.raw == text
    if isinstance(expected, int):
        assert verdict.invalid_reason is None
        assert verdict.score == expected
    else:
        assert verdict.score is None
        assert verdict.invalid_reason is not None
        assert reason_category(verdict.invalid_reason) == expected


def test_cases_are_distinct_and_cover_every_category() -> None:
    keys = [(p.values[0], p.values[1], json.dumps(p.values[3], default=repr)) for p in CASES]
    assert len(set(keys)) == len(keys) >= 40
    assert {p.values[2] for p in CASES} >= set(REASON_CATEGORIES)


@pytest.mark.parametrize(
    ("text", "dimension", "reason"),
    [
        ('{"score": [7]}', "execution", "out of range: 7 is outside 1-5"),
        ("Score: 3.5", "execution", "not an integer: 3.5 is not a whole number"),
        ('{"score": "8/10"}', "execution", "wrong scale: '8/10' is out of 10, expected a score on 1-5"),
        ('{"score": [4, 3]}', "quality", "wrong number of scores: expected 3 scores, got 2: [4, 3]"),
        (
            "Final Alignment Rating: 4\n\\boxed{3}",
            "instruction",
            "ambiguous: different candidate scores: 'Final Alignment Rating: 4', '\\boxed{3}'",
        ),
    ],
)
def test_invalid_reason_is_specific(text: str, dimension: str, reason: str) -> None:
    assert parse_verdict(text, dimension).invalid_reason == reason


@pytest.mark.parametrize(
    ("text", "dimension", "reasoning"),
    [
        ('```json\n{"analysis": "Blue cup.", "score": [4]}\n```', "execution", "Blue cup."),
        ('{"explanation": "Fine.", "score": 2}', "consistency", "Fine."),
        ("The edit is good.\n**Score:** 4/5", "execution", "The edit is good."),
        ("Hat present. Score: 3", "execution", "Hat present."),
        ('{"reasoning": "The "hat" is red", "score": [4]}', "execution", 'The "hat" is red'),
        ('{"score": [4], "reasoning": "The hat is', "execution", "The hat is"),
        (
            "1. Cat: yes.\nFinal analysis: good.\n**Final Alignment Rating:** 4",
            "instruction",
            "1. Cat: yes.\nFinal analysis: good.",
        ),
        ('{"reasoning": "Too noisy.", "score": [7]}', "execution", "Too noisy."),  # kept on invalid verdicts too
    ],
)
def test_reasoning_is_extracted(text: str, dimension: str, reasoning: str) -> None:
    assert parse_verdict(text, dimension).reasoning == reasoning


def test_quality_keeps_sub_scores_and_edit_lists_do_not() -> None:
    assert parse_verdict('{"score": [4, 3, 5]}', "quality").sub_scores == (4, 3, 5)
    assert parse_verdict('{"structure": 2, "aesthetics": 4, "technical": 5}', "quality").sub_scores == (4, 5, 2)
    assert parse_verdict('{"score": [5, 2]}', "execution").sub_scores is None
    assert parse_verdict('{"score": [5, 2]}', "execution", reduce="min").sub_scores == (5, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dimension": "aesthetics"}, "unknown dimension 'aesthetics'"),
        ({"reduce": "max"}, "reduce must be 'first' or 'min'"),
        ({"n_scores": 0}, "n_scores must be at least 1"),
    ],
)
def test_bad_settings_raise(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"dimension": "execution", **kwargs}
    with pytest.raises(ValueError, match=message):
        parse_verdict("Score: 3", **arguments)


# --- round trip with format_answer -----------------------------------------------------------------------------------

REASONINGS = ["", "The hat was added.", 'A "quoted" {brace} and score: 2', "line one\nline two", "Ünïcödé ✓"]


@pytest.mark.parametrize("dimension", ["execution", "consistency"])
@pytest.mark.parametrize("score", range(1, 6))
def test_round_trip_edit(dimension: str, score: int) -> None:
    for reasoning in REASONINGS:
        verdict = parse_verdict(format_answer(dimension, score, reasoning), dimension)
        assert (verdict.score, verdict.reasoning, verdict.sub_scores) == (score, reasoning, None)


def test_round_trip_quality_every_triple() -> None:
    for subs in itertools.product(range(1, 6), repeat=3):
        answer = format_answer("quality", min(subs), "Crisp but flat.", sub_scores=subs)
        verdict = parse_verdict(answer, "quality")
        assert (verdict.score, verdict.sub_scores, verdict.reasoning) == (min(subs), subs, "Crisp but flat.")


@pytest.mark.parametrize("score", range(1, 6))
def test_round_trip_instruction(score: int) -> None:
    # For gen answers the reasoning is everything before the rating: the numbered checks and the final analysis.
    for analysis in ([], ["Cat: present.", "Hat: red, score: 2 would be harsh."]):
        answer = format_answer("instruction", score, "Mostly right.", analysis=analysis)
        verdict = parse_verdict(answer, "instruction")
        expected = "\n".join([*(f"{i}. {a}" for i, a in enumerate(analysis, 1)), "Final analysis: Mostly right."])
        assert (verdict.score, verdict.reasoning) == (score, expected)


@settings(max_examples=60, deadline=None)
@given(
    dimension=st.sampled_from(["execution", "consistency", "quality"]),
    subs=st.tuples(*[st.integers(1, 5)] * 3),
    reasoning=st.text(),
)
def test_round_trip_json_any_reasoning(dimension: str, subs: tuple[int, int, int], reasoning: str) -> None:
    if dimension == "quality":
        answer, expected = format_answer(dimension, min(subs), reasoning, sub_scores=subs), min(subs)
    else:
        answer, expected = format_answer(dimension, subs[0], reasoning), subs[0]
    verdict = parse_verdict(answer, dimension)
    assert (verdict.score, verdict.reasoning) == (expected, reasoning)


@settings(max_examples=60, deadline=None)
@given(
    score=st.integers(1, 5),
    reasoning=st.text(st.characters(codec="utf-8", exclude_characters="\\*#_{}[]\"'`"), max_size=80),
    analysis=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\\\n"), max_size=40), max_size=4),
)
def test_round_trip_instruction_any_text(score: int, reasoning: str, analysis: list[str]) -> None:
    # Instruction answers are prose, so the reasoning comes back stripped of surrounding whitespace; markdown and
    # brace characters are left out of the final analysis because the parser trims lead-in markup before the rating.
    verdict = parse_verdict(format_answer("instruction", score, reasoning, analysis=analysis), "instruction")
    expected = "\n".join([*(f"{i}. {a}" for i, a in enumerate(analysis, 1)), f"Final analysis: {reasoning}"]).strip()
    assert (verdict.score, verdict.reasoning) == (score, expected)


# --- real GPT-4o judge answers (VIEScore, ImagenHub text-guided editing) ----------------------------------------------
#
# The VIEScore files store what *VIEScore's* parser read from GPT-4o, not GPT-4o's raw text: each record holds
# "score" (a list), "reasoning", the prompt and the image URLs. So each test rebuilds the answer in the layout the
# prompt asked GPT-4o for ({"score" : [...], "reasoning" : "..."}, one key per line) and checks that our parser,
# set to VIEScore's 0-10 range and two scores reduced by min, gives back exactly the stored values. Two kinds of
# record are invalid by our rules, on purpose: seven records hold something VIEScore could not read properly:
# - six single-element lists whose reasoning is "guess_if_cannot_parse | ": VIEScore's own parser failed and guessed
#   one number; the prompt asked for two, so we report "wrong number of scores" rather than keep a guess;
# - one [8.5, 9] (Pix2PixZero PQ): a non-integer score, "not an integer".

FIXTURES = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures"
VIESCORE_MODELS = [
    "CycleDiffusion",
    "DiffEdit",
    "InstructPix2Pix",
    "MagicBrush",
    "Pix2PixZero",
    "Prompt2prompt",
    "SDEdit",
    "Text2Live",
]
VIESCORE_FILES = [f"gpt4o_0shot_{model}_{part}.json.gz" for model in VIESCORE_MODELS for part in ("SC", "PQ")]
# SC rates [editing success, over-editing], PQ rates [naturalness, artifacts].
VIESCORE_DIMENSION = {"SC": "execution", "PQ": "quality"}


@functools.cache
def _viescore_records(name: str) -> dict[str, dict[str, Any]]:
    path = FIXTURES / "viescore" / name
    if not path.is_file():
        pytest.skip(f"VIEScore fixture {path} is absent (shared/fixtures is expected beside the repository)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        records: dict[str, dict[str, Any]] = json.load(f)
    return records


def _judge_answer(record: dict[str, Any]) -> str:
    score = json.dumps(record["score"])
    reasoning = json.dumps(record["reasoning"], ensure_ascii=False)
    return f'{{\n"score" : {score},\n"reasoning" : {reasoning}\n}}'


def _expected_category(record: dict[str, Any]) -> str | None:
    if record["reasoning"].startswith("guess_if_cannot_parse"):
        return WRONG_COUNT
    if any(isinstance(s, float) for s in record["score"]):
        return NOT_INTEGER
    return None


@pytest.mark.parametrize("name", VIESCORE_FILES)
def test_viescore_answers_reproduce_stored_scores(name: str) -> None:
    dimension = VIESCORE_DIMENSION[name.removesuffix(".json.gz").rsplit("_", 1)[1]]
    records = _viescore_records(name)
    assert len(records) >= 170
    for key, record in records.items():
        verdict = parse_verdict(_judge_answer(record), dimension, VIESCORE_RANGE, reduce="min", n_scores=2)
        category = _expected_category(record)
        if category is None:
            stored = tuple(record["score"])
            assert (verdict.score, verdict.sub_scores, verdict.reasoning) == (min(stored), stored, record["reasoning"])
        else:
            assert verdict.invalid_reason is not None, key
            assert reason_category(verdict.invalid_reason) == category, key


@pytest.mark.parametrize("name", VIESCORE_FILES)
def test_viescore_answers_read_first_like_firm(name: str) -> None:
    # FIRM's released reading (a list's first element, any length) on the same answers.
    for record in _viescore_records(name).values():
        verdict = parse_verdict(_judge_answer(record), "execution", VIESCORE_RANGE)
        first = record["score"][0]
        assert verdict.score == (first if isinstance(first, int) else None)


def test_viescore_totals() -> None:
    counts: dict[str | None, int] = {}
    for name in VIESCORE_FILES:
        dimension = VIESCORE_DIMENSION[name.removesuffix(".json.gz").rsplit("_", 1)[1]]
        for record in _viescore_records(name).values():
            verdict = parse_verdict(_judge_answer(record), dimension, VIESCORE_RANGE, reduce="min", n_scores=2)
            category = None if verdict.invalid_reason is None else reason_category(verdict.invalid_reason)
            counts[category] = counts.get(category, 0) + 1
    assert counts == {None: 2857, WRONG_COUNT: 6, NOT_INTEGER: 1}

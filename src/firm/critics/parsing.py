"""Reading the score out of a critic's answer text.

:func:`parse_verdict` is the inverse of :func:`firm.critics.answer.format_answer`, and it also reads the looser
answers that real judges write (markdown fences, prose around the JSON, Python-style dicts, "Score: 4/5").

Order of attempts:

1. ``instruction`` only: the ``\\boxed{k}`` value, then the ``Final ... Rating: k`` (or ``Final Score: k``) line.
   When both are present they must agree.
2. JSON: every balanced ``{...}`` span in the text (inside markdown fences too) that loads as a JSON object, or
   failing that as a Python dict literal (single quotes, trailing commas). Prose around the JSON is ignored; two
   objects with different scores are ambiguous. Score keys are ``score``, ``scores`` and ``rating`` (any case).
   A list is reduced by its first element (FIRM's released edit critics) or by ``min`` (quality, VIEScore-style
   judges). ``quality`` also reads named sub-scores (``aesthetics``, ``technical``, ``structure``) at the top level
   or inside a ``score`` object. A score string such as ``"4"`` or ``"4/5"`` is read as a number.
3. A regex fallback over the whole text, used when no JSON object holds a score: ``score: 4``, ``Score = 4/5``,
   ``**Rating:** 3``, ``score of 4 out of 5``, ``"score": [4]`` in JSON that did not load (unescaped quotes, an
   answer cut off after the score). All matches must agree. In an answer cut off inside an unclosed ``{`` or code
   fence, a number at the very end is not trusted ("1" may be the start of "10").

A failure at any step never becomes a number: the verdict is *invalid* and its reason starts with one of the
categories below, then ``": "`` and a sentence for humans (see :func:`reason_category`). Integer-valued floats
(``4.0``) are accepted; ``3.5`` is not. Two different candidates with no decisive format (two JSON objects,
``Score: 3 or 4``, ``\\boxed{4}`` next to ``Final Alignment Rating: 3``) are ambiguous.

The reasoning is the JSON ``reasoning`` (or ``analysis``, ``explanation``, ``reason``, ``rationale``) value, or for
free-form and ``instruction`` answers the text before the score.

Example:
    >>> parse_verdict('{"reasoning": "The hat was added.", "score": [4]}', "execution").score
    4
    >>> parse_verdict("Score: 3.5", "execution").invalid_reason
    'not an integer: 3.5 is not a whole number'
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from firm.critics.answer import QUALITY_ASPECTS
from firm.critics.base import FIRM_RANGE, ScoreRange, Verdict, task_of

Reduce = Literal["first", "min"]

# Invalid-reason categories: every invalid_reason written here starts with one of them.
EMPTY = "empty answer"
NO_SCORE = "no score"
TRUNCATED = "truncated"
NOT_INTEGER = "not an integer"
OUT_OF_RANGE = "out of range"
WRONG_SCALE = "wrong scale"
WRONG_COUNT = "wrong number of scores"
AMBIGUOUS = "ambiguous"
REASON_CATEGORIES = (EMPTY, NO_SCORE, TRUNCATED, NOT_INTEGER, OUT_OF_RANGE, WRONG_SCALE, WRONG_COUNT, AMBIGUOUS)

_SCORE_KEYS = ("score", "scores", "rating")
_REASONING_KEYS = ("reasoning", "analysis", "explanation", "reason", "rationale")
# Key spellings accepted for the quality sub-scores, in QUALITY_ASPECTS order.
_ASPECT_KEYS: dict[str, tuple[str, ...]] = {
    "aesthetics": ("aesthetics", "aesthetic", "aesthetic_quality"),
    "technical": ("technical", "technical_quality", "quality"),
    "structure": ("structure", "structure_texture", "structure_and_texture", "texture"),
}

_NUM = r"[-+]?\d+(?:\.\d+)?"
# One score as written in text: "4", "4/5", "4 out of 5", or a range "3-4" / "3 or 4" (read as ambiguous).
_VALUE = rf"{_NUM}(?:\s*(?:/|out\s+of)\s*\d+)?(?:\s*(?:-|–|\bto\b|\bor\b)\s*{_NUM})?"
_SCALAR_TEXT = re.compile(rf"\s*({_NUM})\s*(?:(?:/|out\s+of)\s*(\d+))?\s*", re.IGNORECASE)
_RANGE_TEXT = re.compile(rf"\s*{_NUM}\s*(?:-|–|to|or)\s*{_NUM}\s*", re.IGNORECASE)
_SEP = r"""["'*\s]*(?::|=|\bis\b|\bof\b)["'*\s]*"""
_KEYED_LIST = re.compile(rf"\b(?:score|rating)s?\b{_SEP}\[([^\[\]]*)\]", re.IGNORECASE)
_KEYED_SCALAR = re.compile(rf"\b(?:score|rating)s?\b{_SEP}({_VALUE})", re.IGNORECASE)
_OBJECT_START = re.compile(r"\{\s*[\"'}]")
# Models copy the template's brackets, so \boxed{[4]} reads like \boxed{4} (and like "Final Alignment Rating: [4]").
_BOXED = re.compile(r"\\boxed\{\s*(?:\[\s*([^{}\[\]]*?)\s*\]|([^{}]*?))\s*\}")
_FINAL_LINE = re.compile(
    rf"\bfinal\b[^\n:=]{{0,40}}?\b(?:rating|score)\b[\"'*\s]*[:=][\"'*\s]*({_VALUE})", re.IGNORECASE
)
# A reasoning field in JSON that did not load (unescaped quotes, cut off): up to the next key, the brace or the end.
_LOOSE_REASONING = re.compile(
    rf"[\"']?(?:{'|'.join(_REASONING_KEYS)})[\"']?\s*:\s*[\"'](.*?)(?:[\"']\s*(?:,\s*[\"']?\w+[\"']?\s*:|\}})|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_MARKUP_ONLY = re.compile(r"\s*(?:```[\w-]*|[*#_{\[\"'`]*)\s*")
_TRAILING_MARKUP = re.compile(r"(?<=\s)[*_#]+$")


@dataclass(frozen=True)
class _Read:
    """A score read from one candidate, or the reason it could not be."""

    score: int | None = None
    sub_scores: tuple[int, ...] | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Settings:
    dimension: str
    score_range: ScoreRange
    reduce: Reduce
    n_scores: int | None


def reason_category(reason: str) -> str:
    """The category of an invalid reason written by :func:`parse_verdict` (one of ``REASON_CATEGORIES``).

    Critics and rewards count invalid verdicts by category, e.g. ``"out of range"`` or ``"truncated"``.
    """
    return reason.partition(":")[0]


def parse_verdict(
    text: str,
    dimension: str,
    score_range: ScoreRange = FIRM_RANGE,
    *,
    reduce: Reduce | None = None,
    n_scores: int | None = None,
) -> Verdict:
    """Read a critic answer into a :class:`Verdict`; never guesses a score.

    Args:
        text: the critic's raw answer.
        dimension: execution, consistency, instruction or quality.
        score_range: the integer scale the critic answers on (FIRM 1-5, VIEScore ``ScoreRange(0, 10)``, ...).
        reduce: how a list of scores becomes one: ``"first"`` (default for every dimension but quality, as FIRM's
            released parser does) or ``"min"`` (default for quality; use it for VIEScore-style ``[success,
            over-editing]`` lists). With ``"min"`` the list is kept in ``Verdict.sub_scores``.
        n_scores: how many scores the answer must give; a list of another length, or a single number when
            ``n_scores > 1``, is invalid. Default: 3 for quality (aesthetics, technical, structure), else any.

    Returns:
        A valid verdict with the score, or an invalid one whose ``invalid_reason`` starts with a category of
        ``REASON_CATEGORIES``. ``raw`` is always ``text`` unchanged.

    Raises:
        ValueError: for an unknown dimension, an unknown ``reduce`` or ``n_scores < 1`` (caller settings, not
            answers).
    """
    task_of(dimension)
    if reduce is None:
        reduce = "min" if dimension == "quality" else "first"
    if reduce not in ("first", "min"):
        raise ValueError(f"reduce must be 'first' or 'min', got {reduce!r}")
    if n_scores is None and dimension == "quality":
        n_scores = len(QUALITY_ASPECTS)
    if n_scores is not None and n_scores < 1:
        raise ValueError(f"n_scores must be at least 1, got {n_scores}")
    if not text.strip():
        return Verdict.invalid(dimension, f"{EMPTY}: the critic returned no text", raw=text)

    settings = _Settings(dimension, score_range, reduce, n_scores)
    read, reasoning = _read_instruction(text, settings) if dimension == "instruction" else (None, "")
    if read is None:
        read, reasoning = _read_json(text, settings)
    if read is None:
        read, reasoning = _read_free_text(text, settings)
    if read.error is not None:
        return Verdict.invalid(dimension, read.error, raw=text, reasoning=reasoning)
    return Verdict(dimension=dimension, score=read.score, reasoning=reasoning, raw=text, sub_scores=read.sub_scores)


# --- values -> scores -------------------------------------------------------------------------------------------


def _fail(category: str, detail: str) -> _Read:
    return _Read(error=f"{category}: {detail}")


def _in_range(value: int, rng: ScoreRange) -> _Read:
    if value in rng:
        return _Read(score=value)
    return _fail(OUT_OF_RANGE, f"{value} is outside {rng.low}-{rng.high}")


def _number(value: object, rng: ScoreRange) -> _Read:
    """One score value (from JSON or matched text) as an integer in range."""
    if isinstance(value, bool) or value is None:
        return _fail(NOT_INTEGER, f"the score is {json.dumps(value)}")
    if isinstance(value, int):
        return _in_range(value, rng)
    if isinstance(value, float):
        if value.is_integer():
            return _in_range(int(value), rng)
        return _fail(NOT_INTEGER, f"{value:g} is not a whole number")
    if isinstance(value, str):
        return _number_from_text(value, rng)
    return _fail(NOT_INTEGER, f"the score {value!r} is not a number")


def _number_from_text(text: str, rng: ScoreRange) -> _Read:
    match = _SCALAR_TEXT.fullmatch(text)
    if match is None:
        if _RANGE_TEXT.fullmatch(text):
            return _fail(AMBIGUOUS, f"{text.strip()!r} is a range, not one score")
        return _fail(NOT_INTEGER, f"the score {text.strip()!r} is not a number")
    number, out_of = match.groups()
    if out_of is not None and int(out_of) != rng.high:
        return _fail(WRONG_SCALE, f"{text.strip()!r} is out of {out_of}, expected a score on {rng.low}-{rng.high}")
    return _number(float(number) if "." in number else int(number), rng)


def _score_value(value: object, settings: _Settings) -> _Read:
    """A score field (a number, a string or a list) reduced to one score."""
    if isinstance(value, (list, tuple)):
        if not value:
            return _fail(WRONG_COUNT, "the score list is empty")
        if settings.n_scores is not None and len(value) != settings.n_scores:
            return _fail(WRONG_COUNT, f"expected {settings.n_scores} scores, got {len(value)}: {list(value)}")
        if settings.reduce == "first":
            return _number(value[0], settings.score_range)
        reads = [_number(v, settings.score_range) for v in value]
        for read in reads:
            if read.error is not None:
                return read
        subs = tuple(r.score for r in reads if r.score is not None)
        return _Read(score=min(subs), sub_scores=subs)
    if settings.n_scores is not None and settings.n_scores > 1:
        return _fail(WRONG_COUNT, f"expected a list of {settings.n_scores} scores, got the single value {value!r}")
    return _number(value, settings.score_range)


def _agree(reads: Sequence[_Read], what: Sequence[str]) -> _Read:
    """The common read of several candidates, or an ambiguity naming them."""
    if len(set(reads)) == 1:
        return reads[0]
    return _fail(AMBIGUOUS, "different candidate scores: " + ", ".join(what))


# --- 1. instruction: \boxed{k} and the final rating line ----------------------------------------------------------


def _value_of(match: re.Match[str]) -> str:
    """The value a boxed or final-rating match captured (a bracketed box captures its inside in group 1)."""
    return next(group for group in match.groups() if group is not None)


def _read_instruction(text: str, settings: _Settings) -> tuple[_Read | None, str]:
    boxed = list(_BOXED.finditer(text))
    final = list(_FINAL_LINE.finditer(text))
    if not boxed and not final:
        return None, ""
    matches = sorted(boxed + final, key=lambda m: m.start())
    reads = [_score_value(_value_of(m), settings) for m in matches]
    read = _agree(reads, [_clip(m.group(0)) for m in matches])
    return read, _text_before(text, min(m.start() for m in matches))


# --- 2. JSON objects ----------------------------------------------------------------------------------------------


def _read_json(text: str, settings: _Settings) -> tuple[_Read | None, str]:
    found: list[tuple[_Read, str, str]] = []
    for span, obj in _json_objects(text):
        read = _read_mapping(obj, settings)
        if read is not None:
            found.append((read, _reasoning_of(obj), span))
    if not found:
        return None, ""
    read = _agree([r for r, _, _ in found], [_clip(span) for _, _, span in found])
    return read, found[0][1]


def _read_mapping(obj: dict[object, object], settings: _Settings) -> _Read | None:
    """The score an object holds, or None when it holds none (any score key or quality sub-score)."""
    fields = {_norm_key(k): v for k, v in obj.items()}
    reads: list[_Read] = []
    what: list[str] = []
    for key in _SCORE_KEYS:
        if key not in fields:
            continue
        value = fields[key]
        if isinstance(value, dict) and settings.dimension == "quality":
            named = _read_aspects({_norm_key(k): v for k, v in value.items()}, settings)
            reads.append(named or _fail(NOT_INTEGER, f"the {key} object has no sub-scores: {value!r}"))
        else:
            reads.append(_score_value(value, settings))
        what.append(f"{key}={value!r}")
    if settings.dimension == "quality":
        named = _read_aspects(fields, settings)
        if named is not None:
            reads.append(named)
            what.append("the named sub-scores")
    return _agree(reads, what) if reads else None


def _read_aspects(fields: dict[str, object], settings: _Settings) -> _Read | None:
    values: list[object] = []
    missing: list[str] = []
    for aspect, keys in _ASPECT_KEYS.items():
        key = next((k for k in keys if k in fields), None)
        if key is None:
            missing.append(aspect)
        else:
            values.append(fields[key])
    if not values:
        return None
    if missing:
        return _fail(WRONG_COUNT, f"missing the {' and '.join(missing)} sub-score")
    return _score_value(values, settings)


def _json_objects(text: str) -> Iterator[tuple[str, dict[object, object]]]:
    """Every balanced brace span that loads as a dict, outermost first, in order of appearance."""
    braces = _Braces(text)
    resume = 0
    # Only "{" followed by a quote or "}" can open a dict; the others are prose or LaTeX.
    for start_match in _OBJECT_START.finditer(text):
        start = start_match.start()
        if start < resume:
            continue
        end = braces.closing(start)
        obj = _load_mapping(text[start : end + 1]) if end is not None else None
        if obj is not None and end is not None:
            yield text[start : end + 1], obj
            resume = end + 1


class _Braces:
    """Matching braces, skipping quoted strings, found with as few passes over the text as possible.

    A brace seen outside quotes during a scan closes where a fresh scan from it would close, so one scan answers for
    every such brace. That keeps degenerate answers (a model looping ``{"a{"a{"a...`` until max tokens) linear.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._closing: dict[int, int | None] = {}

    def closing(self, start: int) -> int | None:
        """Index of the brace closing the one at ``start``; None when it is never closed."""
        if start not in self._closing:
            self._scan(start)
        return self._closing[start]

    def _scan(self, start: int) -> None:
        open_at: list[int] = []
        quote: str | None = None
        escaped = False
        for i in range(start, len(self.text)):
            ch = self.text[i]
            if quote is not None:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "{":
                open_at.append(i)
            elif ch == "}" and open_at:
                self._closing[open_at.pop()] = i
        for i in open_at:
            self._closing[i] = None


def _load_mapping(span: str) -> dict[object, object] | None:
    try:
        obj = json.loads(span)
    except json.JSONDecodeError:
        # Python-style dicts: single quotes, True/None, trailing commas. literal_eval evaluates literals only.
        try:
            obj = ast.literal_eval(span)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


def _norm_key(key: object) -> str:
    return re.sub(r"[\s-]+", "_", str(key).strip().lower())


def _reasoning_of(obj: dict[object, object]) -> str:
    fields = {_norm_key(k): v for k, v in obj.items()}
    for key in _REASONING_KEYS:
        if key in fields:
            value = fields[key]
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return ""


# --- 3. free text -------------------------------------------------------------------------------------------------


def _read_free_text(text: str, settings: _Settings) -> tuple[_Read, str]:
    cut_off = _looks_cut_off(text)
    end_of_text = len(text.rstrip())
    matches: list[tuple[re.Match[str], _Read]] = []
    for m in _KEYED_LIST.finditer(text):
        items = [item.strip().strip("\"'") for item in m.group(1).split(",") if item.strip()]
        matches.append((m, _score_value(items, settings)))
    for m in _KEYED_SCALAR.finditer(text):
        # In a cut-off answer a number touching the end may be incomplete ("1" of "10").
        if not (cut_off and m.end() == end_of_text):
            matches.append((m, _score_value(m.group(1), settings)))
    loose = _LOOSE_REASONING.search(text)
    if not matches:
        reasoning = loose.group(1).strip() if loose else ""
        if cut_off:
            return _fail(TRUNCATED, "the answer ends inside an unclosed JSON object or code block"), reasoning
        return _fail(NO_SCORE, "no JSON score, \\boxed{}, final rating line or 'score: n' found"), reasoning
    matches.sort(key=lambda pair: pair[0].start())
    read = _agree([r for _, r in matches], [_clip(m.group(0)) for m, _ in matches])
    return read, loose.group(1).strip() if loose else _text_before(text, matches[0][0].start())


def _looks_cut_off(text: str) -> bool:
    """An unclosed ``{`` (outside strings) or an unclosed markdown fence: the generation probably hit max tokens."""
    if text.count("```") % 2 == 1:
        return True
    braces = _Braces(text)
    start = text.find("{")
    while start != -1:
        end = braces.closing(start)
        if end is None:
            return True
        start = text.find("{", end + 1)
    return False


def _text_before(text: str, index: int) -> str:
    """The prose before a score, without lead-in markup (an opening fence, a lone ``{``, bold markers)."""
    lines = text[:index].rstrip().split("\n")
    while lines and _MARKUP_ONLY.fullmatch(lines[-1]):
        lines.pop()
    return _TRAILING_MARKUP.sub("", "\n".join(lines)).rstrip()


def _clip(span: str, limit: int = 60) -> str:
    flat = " ".join(span.split())
    return "'" + (flat if len(flat) <= limit else flat[: limit - 3] + "...") + "'"

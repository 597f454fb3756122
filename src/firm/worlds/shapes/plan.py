"""Oracle answers for generations, written from the scene graph: the analysis plan and the critic answers.

- :func:`analysis_plan`: the plan-then-score pipeline's evidence, a numbered yes/no checklist grouped as main
  subjects/elements, attributes, style/composition and negative constraints, each item with its true answer.
- :func:`instruction_answer`: one analysis line per plan item, a final analysis and the rating (firm's gen format).
- :func:`quality_answer`: what is wrong with the image per aspect, and the three sub-scores.
"""

from __future__ import annotations

from typing import Any

from firm.critics.answer import format_answer
from firm.worlds.shapes.degrade import ASPECT_KINDS, Degradation
from firm.worlds.shapes.gen import GenCase
from firm.worlds.shapes.refer import number_word, plural
from firm.worlds.shapes.scene import Scene
from firm.worlds.shapes.spec import CATEGORY_TITLES, RELATIONS, Answer, GenSpec, Requirement, members

INSTRUCTION_VERDICTS = {
    5: "Every requirement, detail, style and negative constraint is met.",
    4: "The main content is right; only one or two non-critical details are off.",
    3: "The main subjects are present, but several requirements are missing or wrong.",
    2: "Most of the main subjects are missing or wrong.",
    1: "The image is unrelated to the prompt: none of its subjects and none of its style.",
}
SEVERITY_WORDS = ("no", "slight", "noticeable", "strong", "severe")
DEGRADATION_NOUNS = {
    "marks": "stray marks scribbled over the picture",
    "washout": "washed-out, dull colours",
    "blur": "blur",
    "noise": "grainy noise",
    "blocks": "blocky compression artifacts",
    "banding": "colour banding",
    "broken": "broken shapes with jagged edges and missing chunks",
}
CLEAN = {
    "aesthetics": "a clean, uncluttered composition with clear colours",
    "technical": "sharp and clean, with no noise, blur or compression artifacts",
    "structure": "every shape is intact and well formed",
}


def analysis_plan(answers: tuple[tuple[Requirement, Answer], ...]) -> list[dict[str, Any]]:
    """The numbered checklist: ``[{"id", "group", "question", "answer"}, ...]``.

    ``answers`` come in plan order already (:func:`~firm.worlds.shapes.spec.requirements` emits them grouped).
    """
    return [
        {"id": i, "group": CATEGORY_TITLES[req.category], "question": req.question, "answer": ans}
        for i, (req, ans) in enumerate(answers, 1)
    ]


def plan_text(plan: list[dict[str, Any]]) -> str:
    """The plan as a planner would write it: group headings, then numbered questions."""
    lines: list[str] = []
    for item in plan:
        heading = f"{item['group'][0].upper()}{item['group'][1:]}:"
        if heading not in lines:
            lines.append(heading)
        lines.append(f"{item['id']}. {item['question']}")
    return "\n".join(lines)


def _listing(values: list[str]) -> str:
    unique = list(dict.fromkeys(values))
    return unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " and " + unique[-1]


def finding(req: Requirement, ans: Answer, spec: GenSpec, scene: Scene) -> str:
    """What the image shows for one plan item (the fact behind the yes/no)."""
    group = spec.groups[req.group] if req.group is not None else None
    if group is not None:
        found = members(scene, group)
        if req.check == "count":
            n = len(found)
            return f"there {'is' if n == 1 else 'are'} {number_word(n)} {group.kind if n == 1 else plural(group.kind)}"
        if ans == "n/a":
            return f"there is no {group.kind} to check"
        values = [s.colour if req.check == "colour" else s.size for s in found]
        return f"{'it is' if len(found) == 1 else 'they are'} {_listing(values)}"
    if req.check == "relation" and spec.relation is not None:
        r = spec.relation
        a, b = spec.groups[r.a], spec.groups[r.b]
        if ans == "n/a":
            return "one side of the relation is missing"
        rel = RELATIONS[r.rel]
        return f"{a.the()} {'are' if a.count > 1 else 'is'} {'' if ans == 'yes' else 'not '}{rel} {b.the()}"
    if req.check == "background":
        return f"the background is {scene.background.colour}"
    if req.check == "texture":
        return f"the background is {scene.background.texture}"
    if req.check == "style":
        if ans == "n/a":
            return "there are no shapes"
        styles = ["outlined" if s.outline else "solid" for s in scene.shapes]
        return f"the shapes are {_listing(styles)}"
    if req.check == "no_kind":
        return f"there is {'no' if ans == 'yes' else 'a'} {spec.no_kind}"
    return f"there is {'nothing' if ans == 'yes' else 'something'} {spec.no_colour}"


def _miss(req: Requirement, fact: str, spec: GenSpec, scene: Scene) -> str:
    """A failed plan item as a short phrase for the final analysis: what was asked and what is there."""
    group = spec.groups[req.group] if req.group is not None else None
    if group is not None and req.check == "count":
        return (
            f"{fact}, not {number_word(group.count)}"
            if members(scene, group)
            else f"{group.the()} {'are' if group.count > 1 else 'is'} missing"
        )
    if group is not None:
        return f"{group.the()} should be {getattr(group, req.check)} but {fact}"
    wanted = {
        "background": spec.background,
        "texture": spec.texture,
        "style": "outlined" if spec.outline else "solid",
    }.get(req.check)
    return f"{fact}, not {wanted}" if wanted else fact


def instruction_reasoning(case: GenCase) -> tuple[list[str], str]:
    """Analysis lines (one per plan item) and the final analysis for an instruction-following answer."""
    lines, misses = [], []
    for req, ans in case.answers:
        fact = finding(req, ans, case.spec, case.scene)
        word = {"yes": "Yes", "no": "No", "n/a": "Cannot check"}[ans]
        lines.append(f"{req.question} {word}: {fact}.")
        if ans == "no":
            misses.append(_miss(req, fact, case.spec, case.scene))
    summary = INSTRUCTION_VERDICTS[case.instruction]
    if misses and case.instruction > 1:
        summary = f"{summary} Missed: {'; '.join(misses)}."
    return lines, summary


def instruction_answer(case: GenCase) -> str:
    """The instruction-following critic answer for a generation case (firm's gen answer format)."""
    lines, summary = instruction_reasoning(case)
    return format_answer("instruction", case.instruction, summary, analysis=lines)


def quality_reasoning(case: GenCase) -> str:
    return flaw_reasoning(case.degradation)


def flaw_reasoning(degradation: Degradation) -> str:
    """What is wrong with an image per quality aspect, its sub-scores and the overall quality."""
    parts = []
    for (aspect, kinds), score in zip(ASPECT_KINDS.items(), degradation.sub_scores, strict=True):
        flaws = [
            f"{SEVERITY_WORDS[getattr(degradation, kind)]} {DEGRADATION_NOUNS[kind]}"
            for kind in kinds
            if getattr(degradation, kind)
        ]
        parts.append(f"{aspect.capitalize()} {score}: {'; '.join(flaws) if flaws else CLEAN[aspect]}.")
    parts.append(f"Overall quality is the lowest of the three: {min(degradation.sub_scores)}.")
    return " ".join(parts)


def quality_answer(case: GenCase) -> str:
    """The quality critic answer for a generation case: reasoning and the three sub-scores."""
    return format_answer("quality", case.quality, quality_reasoning(case), sub_scores=case.sub_scores)

"""Oracle answers for edits, written from the scene graphs: critic answers and the difference-first report.

- :func:`execution_answer`, :func:`consistency_answer`: short reasoning naming what is right and what is wrong, then
  the score, in firm's answer format (:func:`firm.critics.answer.format_answer`). These are the SFT targets.
- :func:`difference_report`: the difference-first pipeline's evidence, ``{"obvious": [...], "detailed": {...}}``:
  each significantly changed subject as it looks in each image (without judging), then every change, small ones
  included, by category. This is what a
  curation describer should produce, so it doubles as the curation oracle.
"""

from __future__ import annotations

from collections import Counter

from firm.critics.answer import format_answer
from firm.worlds.shapes.diff import Change, diff
from firm.worlds.shapes.edit import EditCase
from firm.worlds.shapes.ops import Add, Move, Op, Recolour, Remove, Resize, Swap
from firm.worlds.shapes.refer import DESTINATIONS, article, noun, number_word, plural, region_of, where
from firm.worlds.shapes.rubric import Fulfilment as F
from firm.worlds.shapes.scene import COLOURS, Scene, Shape, near_shade

#: Detailed-report categories, in report order, and the change aspects each collects.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "quantity": ("added", "removed"),
    "colour": ("colour", "shade"),
    "shape and form": ("kind", "form", "cut", "damage", "outline", "rotation"),
    "size": ("size",),
    "position and layout": ("position",),
    "texture and surface": ("opacity", "background colour", "background texture", "background tint"),
    "overall tone": ("tone",),
}

EXECUTION_VERDICTS = {
    5: "Everything the instruction asked for was done.",
    4: "All key changes were made; only one very subtle detail is off.",
    3: "The main intent is there, but a significant requested element is missing or wrong.",
    2: "The edit barely follows the instruction: most of what was asked is missing or wrong.",
    1: "Nothing the instruction asked for happened, or the opposite was done.",
}
CONSISTENCY_VERDICTS = {
    5: "Nothing changed beyond what the instruction asked for.",
    4: "There is one significant and/or one or two minor unintended changes.",
    3: "There are two or three significant and/or three or four minor unintended changes.",
    2: "There are four or more significant and/or five or more minor unintended changes.",
    1: "The result is almost a different image.",
}


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def looks(shape: Shape) -> str:
    """How a shape looks, e.g. "a faint darker red circle at the top left"."""
    words = []
    if shape.alpha < 1:
        words.append("faint")
    if shape.erase > 0:
        words.append("half-erased")
    if shape.broken > 0:
        words.append("broken")
    if shape.aspect != 1:
        words.append("stretched" if shape.aspect > 1 else "squashed")
    if shape.outline:
        words.append("outlined")
    colour = shape.colour
    if shape.shade is not None:
        near = shape.shade == near_shade(COLOURS[shape.colour])
        colour = f"{'lighter' if shape.colour == 'black' else 'darker'} {colour}" if near else f"tinted {colour}"
    text = " ".join([*words, shape.size, colour, shape.kind])
    return f"{article(text)} {text} {where(shape.x, shape.y)}"


def label(shape: Shape) -> str:
    """A short definite name for a shape, e.g. "the green triangle at the top left"."""
    return f"the {noun(shape, ('colour', 'kind'))} {where(shape.x, shape.y)}"


# --- execution ---------------------------------------------------------------------------------------------------


def _add_text(op: Add, how: F, got: Shape | None) -> str:
    colour, kind = op.shape.colour, op.shape.kind
    want = f"{colour} {kind}"
    if how is F.NONE or got is None:
        return f"No {want} was added {op.where}."
    if how is F.FULL:
        return f"{_cap(article(want))} {want} was added {op.where}, as asked."
    if how is F.SUBTLE:
        return (
            f"A {op.shape.kind} was added {op.where}, but in a darker {op.shape.colour} than a plain {op.shape.colour}."
        )
    if how is F.VAGUE:
        return f"There is only a tiny, faint {colour} smudge {op.where}; the {kind} was barely attempted."
    if got.colour != op.shape.colour:
        return f"A {op.shape.kind} was added {op.where}, but it is {got.colour}, not {op.shape.colour}."
    if got.kind != op.shape.kind:
        return f"{_cap(article(got.colour))} {got.colour} {got.kind} was added {op.where}, not {article(want)} {want}."
    return f"{_cap(article(want))} {want} was added, but {where(got.x, got.y)} instead of {op.where}."


def _remove_text(op: Remove, how: F) -> str:
    ref = op.ref
    return {
        F.FULL: f"{_cap(ref)} was removed, as asked.",
        F.SUBTLE: f"{_cap(ref)} was removed, but a very faint ghost of it is still visible.",
        F.WRONG: f"Only part of {ref} was removed: half of it is still there.",
        F.VAGUE: f"{_cap(ref)} is still there, only faded.",
        F.NONE: f"{_cap(ref)} is still there; it was not removed.",
    }[how]


def _recolour_text(op: Recolour, how: F, old: Shape, got: Shape | None) -> str:
    # got is None only for images the judge read (a world edit keeps its target): the target is not found in them.
    ref, c = op.ref, op.colour
    wrong = f"to {got.colour} instead of {c}" if got is not None else f"not to {c}: it is not found as asked"
    return {
        F.FULL: f"{_cap(ref)} is now {c}, as asked.",
        F.SUBTLE: f"{_cap(ref)} is now {c}, but a darker {c} than a plain {c}.",
        F.WRONG: f"{_cap(ref)} changed colour, but {wrong}.",
        F.VAGUE: f"{_cap(ref)} is still {old.colour}, with only a faint tint toward {c}.",
        F.NONE: f"{_cap(ref)} is still {old.colour}; it was not recoloured.",
    }[how]


def _move_text(op: Move, how: F, got: Shape | None) -> str:
    ref, dest = op.ref, DESTINATIONS[op.region][0]
    where = f"to the {region_of(got.x, got.y)}" if got is not None else "not where it can be found"
    return {
        F.FULL: f"{_cap(ref)} was moved to {dest}, as asked.",
        F.SUBTLE: f"{_cap(ref)} was moved toward {dest} but stopped a little short of it.",
        F.WRONG: f"{_cap(ref)} was moved, but {where} instead of {dest}.",
        F.VAGUE: f"{_cap(ref)} only nudged a little toward {dest}.",
        F.NONE: f"{_cap(ref)} did not move.",
        F.OPPOSITE: f"{_cap(ref)} moved away from {dest}, the opposite way.",
    }[how]


def _resize_text(op: Resize, how: F) -> str:
    ref = op.ref
    big = op.factor > 1
    asked = "twice as big" if big else "half as big"
    return {
        F.FULL: f"{_cap(ref)} is now {asked}, as asked.",
        F.SUBTLE: f"{_cap(ref)} was {'enlarged' if big else 'shrunk'}, but a little less than {asked}.",
        F.WRONG: f"{_cap(ref)} was only {'stretched' if big else 'squashed'} sideways instead of resized evenly.",
        F.VAGUE: f"{_cap(ref)} is only very slightly {'bigger' if big else 'smaller'}.",
        F.NONE: f"{_cap(ref)} kept its size.",
        F.OPPOSITE: f"{_cap(ref)} got {'smaller' if big else 'bigger'} instead of {'bigger' if big else 'smaller'}.",
    }[how]


def _swap_text(op: Swap, how: F) -> str:
    a, b = op.ref_a, op.ref_b
    return {
        F.FULL: f"{_cap(a)} and {b} swapped places, as asked.",
        F.SUBTLE: f"{_cap(a)} and {b} swapped places, but {a} sits slightly off the other's old spot.",
        F.WRONG: f"{_cap(a)} moved to the place of {b}, but {b} went elsewhere instead of taking its place.",
        F.VAGUE: f"{_cap(a)} and {b} only edged toward each other; they did not swap.",
        F.NONE: f"{_cap(a)} and {b} did not move.",
    }[how]


def op_text(op: Op, how: F, source: Scene, edited: Scene) -> str:
    """One sentence saying how far ``op`` was carried out in ``edited``."""
    got = {s.id: s for s in edited.shapes}
    if isinstance(op, Add):
        return _add_text(op, how, got.get(op.shape.id))
    if isinstance(op, Remove):
        return _remove_text(op, how)
    if isinstance(op, Recolour):
        return _recolour_text(op, how, source.get(op.target), got.get(op.target))
    if isinstance(op, Move):
        return _move_text(op, how, got.get(op.target))
    if isinstance(op, Resize):
        return _resize_text(op, how)
    if isinstance(op, Swap):
        return _swap_text(op, how)
    raise TypeError(f"no oracle text for operation {type(op).__name__}")


def execution_reasoning(case: EditCase) -> str:
    if case.replaced:
        parts = ["The edited image is a different picture; none of the requested changes can be seen in it."]
    else:
        parts = [op_text(op, how, case.source, case.edited) for op, how in zip(case.ops, case.outcomes, strict=True)]
        if case.unintended.counted:
            parts.append("Other changes in the image do not count for execution.")
    parts.append(EXECUTION_VERDICTS[case.execution])
    return " ".join(parts)


def execution_answer(case: EditCase) -> str:
    """The execution critic answer for an edit case (firm's JSON answer format)."""
    return format_answer("execution", case.execution, execution_reasoning(case))


# --- consistency -------------------------------------------------------------------------------------------------


def change_text(change: Change, source: Scene, edited: Scene) -> str:
    """A neutral sentence describing one change between the scenes."""
    before = {s.id: s for s in source.shapes}
    after = {s.id: s for s in edited.shapes}
    a = change.aspect
    if a == "tone":
        return f"the whole image looks slightly {'warmer' if edited.tone > source.tone else 'cooler'}"
    if a == "background tint":
        return (
            "the background became slightly darker"
            if sum(edited.background.tint) < sum(source.background.tint)
            else "the background became slightly lighter"
        )
    if a in ("background colour", "background texture"):
        bg0, bg1 = source.background, edited.background
        return f"the background changed from {bg0.texture} {bg0.colour} to {bg1.texture} {bg1.colour}"
    assert change.subject is not None
    if a == "added":
        return f"{looks(after[change.subject])} appeared"
    old = before[change.subject]
    if a == "removed":
        return f"{label(old)} disappeared"
    new = after[change.subject]
    minor = change.level == "minor"
    texts = {
        "colour": f"{label(old)} changed from {old.colour} to {new.colour}",
        "shade": f"{label(old)} is a slightly different shade of {new.colour}",
        "kind": f"{label(old)} turned into {article(new.kind)} {new.kind}",
        "position": f"{label(old)} shifted slightly"
        if minor
        else f"{label(old)} moved to the {region_of(new.x, new.y)}",
        "size": f"{label(old)} became {'slightly ' if minor else 'much '}{'bigger' if new.r > old.r else 'smaller'}",
        "form": f"{label(old)} was {'stretched' if new.aspect > old.aspect else 'squashed'} sideways",
        "opacity": f"{label(old)} became {'fainter' if new.alpha < old.alpha else 'more solid'}",
        "rotation": f"{label(old)} turned {'slightly' if minor else 'clearly'}",
        "outline": f"{label(old)} is now {'an outline' if new.outline else 'filled'}",
        "cut": f"part of {label(old)} was cut away",
        "damage": f"{label(old)} looks broken",
    }
    return texts[a]


def _uncovered(case: EditCase) -> bool:
    """Whether the requested edit uncovers background (a removal, or a shape leaving its place)."""
    moving = (Remove, Move, Swap)
    return any(
        isinstance(op, moving) and how not in (F.NONE, F.VAGUE) for op, how in zip(case.ops, case.outcomes, strict=True)
    )


def consistency_reasoning(case: EditCase) -> str:
    count = case.unintended
    if case.replaced:
        return (
            "Almost everything changed: the background and every object the instruction did not mention are "
            f"different. {CONSISTENCY_VERDICTS[1]}"
        )
    parts = []
    for level in ("significant", "minor"):
        items = [change_text(c, case.source, case.edited) for c in count.counted if c.level == level]
        if items:
            parts.append(f"Unintended {level} change{'s' if len(items) > 1 else ''}: {'; '.join(items)}.")
    if not parts:
        parts.append("Apart from the requested edit, the image is unchanged.")
    excused = [change_text(c, case.source, case.edited) for c in count.excused]
    if _uncovered(case):
        excused.append("the background uncovered by the requested change shows through")
    if excused:
        parts.append(f"Not counted: {'; '.join(excused)}.")
    if count.counted:
        parts.append(f"{count.significant} significant and {count.minor} minor unintended changes in all.")
    parts.append(CONSISTENCY_VERDICTS[case.consistency])
    return " ".join(parts)


def consistency_answer(case: EditCase) -> str:
    """The consistency critic answer for an edit case (firm's JSON answer format)."""
    return format_answer("consistency", case.consistency, consistency_reasoning(case))


# --- difference report -------------------------------------------------------------------------------------------


def _quantity(source: Scene, edited: Scene) -> list[str]:
    before, after = Counter(s.kind for s in source.shapes), Counter(s.kind for s in edited.shapes)
    out = []
    if len(source.shapes) != len(edited.shapes):
        out.append(f"{len(source.shapes)} shapes in the first image, {len(edited.shapes)} in the second")
    for kind in sorted(set(before) | set(after)):
        delta = after[kind] - before[kind]
        if delta:
            n = abs(delta)
            out.append(f"{number_word(n)} {'more' if delta > 0 else 'fewer'} {kind if n == 1 else plural(kind)}")
    return out


def difference_report(source: Scene, edited: Scene) -> dict[str, object]:
    """The difference-first report between two scenes: obvious changes per subject, then details by category."""
    changes = diff(source, edited)
    before = {s.id: s for s in source.shapes}
    after = {s.id: s for s in edited.shapes}
    obvious = []
    # Obvious changes are the significant ones; small shifts and shades only show up in the detailed part.
    for sid in dict.fromkeys(c.subject for c in changes if c.subject is not None and c.level == "significant"):
        first = looks(before[sid]) if sid in before else "nothing there"
        second = looks(after[sid]) if sid in after else "it is gone"
        name = label(before[sid]) if sid in before else f"a new {after[sid].kind}"
        obvious.append(f"{_cap(name)}: in the first image, {first}; in the second image, {second}.")
    if any(c.aspect in ("background colour", "background texture") for c in changes):
        bg0, bg1 = source.background, edited.background
        obvious.append(
            f"The background: in the first image, {bg0.texture} {bg0.colour}; in the second image, "
            f"{bg1.texture} {bg1.colour}."
        )
    detailed: dict[str, list[str]] = {}
    for category, aspects in CATEGORIES.items():
        items = [change_text(c, source, edited) for c in changes if c.aspect in aspects]
        detailed[category] = _quantity(source, edited) + items if category == "quantity" else items
    return {"obvious": obvious, "detailed": detailed}

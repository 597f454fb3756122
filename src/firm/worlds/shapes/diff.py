"""What differs between two scene graphs, each difference graded significant, minor or excused.

The grading is the consistency rubric's vocabulary: an object appearing, vanishing, changing colour name, kind or
form, or moving far is significant; a small shift, a small size change, a near shade or a background tint is minor;
a global colour-temperature shift is excused (the rubric does not count small global tone changes). Areas that a
removal reveals are not differences of the scene graph at all, so they are never counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from firm.worlds.shapes.scene import Scene, Shape

Level = Literal["significant", "minor", "excused"]

#: A move further than this (canvas fraction) is significant; a shorter one is a minor shift.
MOVE_SIGNIFICANT = 0.1
#: A size or stretch ratio at least this far from 1 is significant.
SCALE_SIGNIFICANT = 1.3
#: An opacity change at least this large is significant.
ALPHA_SIGNIFICANT = 0.3
#: A rotation at least this large (degrees) is significant.
TURN_SIGNIFICANT = 20.0


@dataclass(frozen=True)
class Change:
    """One difference between a source and an edited scene.

    Attributes:
        subject: the shape id, or None for the background and the global tone.
        aspect: added, removed, kind, colour, shade, position, size, form, opacity, rotation, outline, cut, damage,
            background colour, background texture, background tint or tone.
        level: significant, minor or excused.
    """

    subject: int | None
    aspect: str
    level: Level


def _ratio(a: float, b: float) -> float:
    return max(a, b) / min(a, b)


def shape_changes(old: Shape, new: Shape) -> list[Change]:
    """Differences between two states of the same shape, one per changed aspect."""
    out: list[Change] = []

    def add(aspect: str, significant: bool) -> None:
        out.append(Change(old.id, aspect, "significant" if significant else "minor"))

    if old.kind != new.kind:
        add("kind", True)
    if old.colour != new.colour:
        add("colour", True)
    elif old.rgb != new.rgb:
        add("shade", False)
    dist = math.hypot(new.x - old.x, new.y - old.y)
    if dist > 0:
        add("position", dist > MOVE_SIGNIFICANT)
    if old.r != new.r:
        add("size", _ratio(old.r, new.r) >= SCALE_SIGNIFICANT)
    if old.aspect != new.aspect:
        add("form", _ratio(old.aspect, new.aspect) >= SCALE_SIGNIFICANT)
    if old.alpha != new.alpha:
        add("opacity", abs(old.alpha - new.alpha) >= ALPHA_SIGNIFICANT)
    if old.angle != new.angle:
        add("rotation", abs(old.angle - new.angle) >= TURN_SIGNIFICANT)
    if old.outline != new.outline:
        add("outline", True)
    if old.erase != new.erase:
        add("cut", True)
    if old.broken != new.broken:
        add("damage", True)
    return out


def diff(source: Scene, edited: Scene) -> list[Change]:
    """Every difference between two scenes: shapes matched by id, then the background and the tone."""
    out: list[Change] = []
    before = {s.id: s for s in source.shapes}
    after = {s.id: s for s in edited.shapes}
    for sid, old in before.items():
        if sid not in after:
            out.append(Change(sid, "removed", "significant"))
        else:
            out += shape_changes(old, after[sid])
    out += [Change(sid, "added", "significant") for sid in after if sid not in before]
    bg0, bg1 = source.background, edited.background
    if bg0.colour != bg1.colour:
        out.append(Change(None, "background colour", "significant"))
    if bg0.texture != bg1.texture:
        out.append(Change(None, "background texture", "significant"))
    if bg0.colour == bg1.colour and bg0.tint != bg1.tint:
        out.append(Change(None, "background tint", "minor"))
    if source.tone != edited.tone:
        out.append(Change(None, "tone", "excused"))
    return out


@dataclass(frozen=True)
class UnintendedCount:
    """The consistency rubric's inputs: the counted unintended changes and whether it is almost another image."""

    significant: int
    minor: int
    different_image: bool
    counted: tuple[Change, ...]
    excused: tuple[Change, ...]


def count_unintended(source: Scene, edited: Scene, requested: set[int]) -> UnintendedCount:
    """Count the changes the instruction did not ask for.

    Changes to the shapes the instruction names or creates (``requested``) belong to execution and are left out;
    excused changes are listed but not counted. It is almost a different image when the background changed and no
    shape outside the request survived without a significant change.
    """
    changes = diff(source, edited)
    counted = tuple(c for c in changes if c.subject not in requested and c.level != "excused")
    excused = tuple(c for c in changes if c.level == "excused")
    touched = {c.subject for c in counted if c.level == "significant"}
    survivors = [s for s in source.shapes if s.id not in requested and s.id not in touched]
    bg_changed = any(c.aspect in ("background colour", "background texture") for c in counted)
    return UnintendedCount(
        significant=sum(c.level == "significant" for c in counted),
        minor=sum(c.level == "minor" for c in counted),
        different_image=bg_changed and not survivors,
        counted=counted,
        excused=excused,
    )

"""Edit cases: a source scene, an instruction of one to three operations, and an edited scene with known scores.

The edited scene is the source with each operation carried out to a chosen :class:`Fulfilment` (execution) plus a
chosen number of unintended changes to shapes the instruction does not name (consistency), and sometimes a global
tone shift that the rubric excuses. Scores are then *computed*: execution from the fulfilments, consistency by
diffing the two scene graphs. Asking for a score only steers the choices; a case whose computed score differs is
thrown away and drawn again, and so is one whose two scene graphs, compared the way the judge compares two
readings (``compare.judge_edit``), say otherwise: a label no image could justify (two look-alikes swapped, an
unintended new shape that looks like a requested one done wrongly) is never written.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from firm.worlds.shapes.case import EditCase
from firm.worlds.shapes.compare import judge_edit
from firm.worlds.shapes.diff import count_unintended
from firm.worlds.shapes.ops import OPS, Op, join_clauses
from firm.worlds.shapes.rubric import Fulfilment, change_plans, consistency_score, execution_score, outcome_plans
from firm.worlds.shapes.scene import BACKGROUNDS, COLOURS, KINDS, Scene, Shape, fits, place, random_shape, sample_scene

__all__ = [
    "BACKGROUND_CONSISTENCY",
    "BACKGROUND_EXECUTION",
    "MAX_UNINTENDED",
    "OP_COUNTS",
    "TONE_SHIFT",
    "EditCase",
    "add_unintended",
    "build_edit_case",
    "execute",
    "sample_ops",
]

#: How often an instruction has one, two or three operations.
OP_COUNTS = ((1, 0.55), (2, 0.3), (3, 0.15))
#: Consistency level of execution-dimension cases (and the reverse), when the caller does not fix it.
BACKGROUND_CONSISTENCY = ((5, 0.4), (4, 0.25), (3, 0.2), (2, 0.15))
BACKGROUND_EXECUTION = ((5, 0.5), (4, 0.15), (3, 0.15), (2, 0.1), (1, 0.1))
#: Most unintended changes put in one image.
MAX_UNINTENDED = 6
#: Probability of an excused global tone shift in an edited image.
TONE_SHIFT = 0.15


def _weighted(rng: random.Random, table: tuple[tuple[int, float], ...]) -> int:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


def sample_ops(scene: Scene, n_ops: int, rng: random.Random) -> tuple[Op, ...] | None:
    """``n_ops`` operations on distinct shapes of ``scene``, or None when the scene cannot host them."""
    ops: list[Op] = []
    mentioned: set[int] = set()
    next_id = scene.next_id()
    for _ in range(n_ops):
        kinds = list(OPS)
        rng.shuffle(kinds)
        op = next((o for o in (k.sample(scene, rng, next_id, mentioned) for k in kinds) if o is not None), None)
        if op is None:
            return None
        ops.append(op)
        mentioned |= set(op.mentions)
        next_id = max(next_id, *op.targets) + 1
    return tuple(ops)


def execute(scene: Scene, ops: tuple[Op, ...], outcomes: tuple[Fulfilment, ...], rng: random.Random) -> Scene | None:
    """``scene`` with every operation carried out to its outcome, or None if one cannot be drawn."""
    for op, how in zip(ops, outcomes, strict=True):
        result = op.apply(scene, how, rng)
        if result is None:
            return None
        scene = result
    return scene


def add_unintended(scene: Scene, protected: set[int], significant: int, minor: int, rng: random.Random) -> Scene | None:
    """``scene`` with exactly ``significant`` and ``minor`` unintended changes to unprotected shapes.

    Significant: another shape removed, recoloured, moved far or changed into another kind, or a new shape added.
    Minor: a small shift or size change of another shape, or a background tint. Each shape takes at most one
    significant change, or up to two minor ones (a shift and a size change). Returns None when the scene has too
    few free shapes or too little room.
    """
    # New shapes need ids no shape of the source ever had, or a diff would match them to removed ones.
    next_id = max(scene.next_id(), *protected, -1) + 1
    free = [s for s in scene.shapes if s.id not in protected]
    rng.shuffle(free)
    n_modify = rng.randint(0, min(significant, len(free)))
    for shape in free[:n_modify]:
        changed = _significant_change(scene, shape, rng)
        if changed is None:
            return None
        scene = changed
    for k in range(significant - n_modify):
        new = place(random_shape(rng, next_id + k), scene, rng)
        if new is None:
            return None
        scene = scene.with_shape(new)
    slots: list[tuple[str, int | None]] = [("tint", None)]
    slots += [(what, s.id) for s in free[n_modify:] for what in ("shift", "scale")]
    if minor > len(slots):
        return None
    for what, sid in rng.sample(slots, minor):
        changed = _minor_change(scene, what, sid, rng)
        if changed is None:
            return None
        scene = changed
    return scene


def _significant_change(scene: Scene, shape: Shape, rng: random.Random) -> Scene | None:
    how = rng.choice(("remove", "recolour", "move", "kind"))
    if how == "remove":
        return scene.without(shape.id)
    if how == "recolour":
        return scene.with_shape(replace(shape, colour=rng.choice([c for c in COLOURS if c != shape.colour])))
    if how == "kind":
        return scene.with_shape(shape.as_kind(rng.choice([k for k in KINDS if k != shape.kind])))
    for _ in range(10):
        moved = place(shape, scene, rng)
        if moved is not None and math.hypot(moved.x - shape.x, moved.y - shape.y) >= 0.2:
            return scene.with_shape(moved)
    return None


def _minor_change(scene: Scene, what: str, sid: int | None, rng: random.Random) -> Scene | None:
    if sid is None:  # a background tint: a little darker, visible side by side, the same colour name
        shade = -rng.randint(12, 18)
        return replace(scene, background=replace(scene.background, tint=(shade, shade, shade)))
    shape = scene.get(sid)
    for _ in range(8):
        if what == "shift":
            angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.035, 0.06)
            cand = shape.moved(shape.x + dist * math.cos(angle), shape.y + dist * math.sin(angle))
        else:
            cand = replace(shape, r=shape.r * rng.choice((1.15, 0.87)))
        if fits(cand, scene.shapes):
            return scene.with_shape(cand)
    return None


def _with_unintended(scene: Scene, protected: set[int], score: int, rng: random.Random) -> Scene | None:
    """``scene`` with a random number of unintended changes that gives consistency ``score``; a few plans tried."""
    # Plans with more than six changes rarely fit on the canvas; the rubric's bands are all reachable without them.
    plans = [p for p in change_plans(score) if sum(p) <= MAX_UNINTENDED]
    for significant, minor in rng.sample(plans, min(4, len(plans))):
        changed = add_unintended(scene, protected, significant, minor, rng)
        if changed is not None:
            return changed
    return None


def _new_image(source: Scene, rng: random.Random) -> Scene:
    """An unrelated scene: another background colour, fresh shapes (ids clear of the source's)."""
    other = sample_scene(rng, (2, 4))
    bg = replace(other.background, colour=rng.choice([c for c in BACKGROUNDS if c != source.background.colour]))
    offset = source.next_id() + 1000
    return replace(other, background=bg, shapes=tuple(replace(s, id=s.id + offset) for s in other.shapes))


def build_edit_case(
    rng: random.Random,
    execution: int | None = None,
    consistency: int | None = None,
    max_tries: int = 500,
) -> EditCase:
    """Draw an edit case whose computed scores equal the requested ones (None: drawn from a background mix).

    Raises:
        ValueError: for a score outside 1-5, or consistency 1 (a different image) with execution above 1.
        RuntimeError: if no case is found in ``max_tries`` draws (a bug, not bad luck).
    """
    for name, value in (("execution", execution), ("consistency", consistency)):
        if value is not None and value not in range(1, 6):
            raise ValueError(f"{name} score must be in 1-5, got {value}")
    if consistency == 1 and execution not in (None, 1):
        raise ValueError("consistency 1 means a different image, where no requested change can be seen: execution 1")
    for _ in range(max_tries):
        case = _try_edit_case(rng, execution, consistency)
        if case is not None:
            return case
    raise RuntimeError(f"no edit case with execution={execution} consistency={consistency} in {max_tries} draws")


def _try_edit_case(rng: random.Random, execution: int | None, consistency: int | None) -> EditCase | None:
    c = consistency if consistency is not None else (1 if execution == 1 and rng.random() < 0.1 else None)
    c = c if c is not None else _weighted(rng, BACKGROUND_CONSISTENCY)
    e = 1 if c == 1 else execution if execution is not None else _weighted(rng, BACKGROUND_EXECUTION)
    source = sample_scene(rng, (3, 6) if c in (2, 3) else (2, 5))
    ops = sample_ops(source, _weighted(rng, OP_COUNTS), rng)
    if ops is None:
        return None
    if c == 1:
        outcomes: tuple[Fulfilment, ...] = (Fulfilment.NONE,) * len(ops)
        edited: Scene | None = _new_image(source, rng)
    else:
        plans = outcome_plans(len(ops), e, [set(op.fulfilments) for op in ops])
        outcomes = rng.choice(plans)
        edited = execute(source, ops, outcomes, rng)
        if edited is not None:
            edited = _with_unintended(edited, {i for op in ops for i in op.mentions}, c, rng)
        if edited is not None and rng.random() < TONE_SHIFT:
            edited = replace(edited, tone=rng.choice((-1, 1)) * rng.uniform(0.5, 1.0))
    if edited is None:
        return None
    requested = {t for op in ops for t in op.targets}
    count = count_unintended(source, edited, requested)
    case = EditCase(
        source=source,
        edited=edited,
        ops=ops,
        outcomes=outcomes,
        instruction=join_clauses([op.clause(rng) for op in ops], rng),
        unintended=count,
        execution=execution_score(outcomes),
        consistency=consistency_score(count.significant, count.minor, count.different_image),
    )
    if (case.execution, case.consistency) != (e, c):
        return None
    seen = judge_edit(source, edited, ops, case.instruction)  # what the two pictures show, ids unseen
    return case if (seen.execution, seen.consistency) == (e, c) else None

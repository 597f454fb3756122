"""An edit judged from two scene readings: match the shapes, then say how far each requested operation was done.

The readings come from pixels, so nothing carries an id: shapes of the source and the edited image are paired by an
optimal assignment that counts differing aspects the way the consistency rubric counts changes (a recolour is one
change; a shape gone and another come is two). Measured values within reading tolerance of each other are taken as
equal, so the scene-graph diff sees exactly the changes that are visible. Each operation's fulfilment then follows
from its target before and after, with thresholds halfway between the degrees ShapesWorld draws. Where other
pairings explain the pixels with no more changes, the one leaving the fewest changes unasked for, then the one that
carries the instruction out furthest, is the edit (look-alikes that trade or take places are otherwise a coin toss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from firm.worlds.shapes.case import EditCase
from firm.worlds.shapes.diff import count_unintended
from firm.worlds.shapes.ops import _ADD_WHERE, MIN_MOVE, Add, Move, Op, Recolour, Remove, Resize, Swap
from firm.worlds.shapes.refer import in_region
from firm.worlds.shapes.rubric import Fulfilment as F
from firm.worlds.shapes.rubric import consistency_score, execution_score
from firm.worlds.shapes.scene import Scene, Shape

#: Reading tolerances: differences below these are reading noise, not changes.
SAME_PLACE = 0.015  # canvas fraction
SAME_SIZE = 1.06  # radius ratio
SAME_ALPHA = 0.06
SAME_FORM = 1.12  # stretch ratio
SAME_CUT = 0.08
SAME_TURN = 3.0  # degrees; nothing an edit does turns a shape, so look-alikes turned apart are two shapes
#: A clear move counts as the opposite one only this close to straight back (cosine to the asked direction).
OPPOSITE_COSINE = -0.97


@dataclass(frozen=True)
class EditReading:
    """An edit as judged: the case rebuilt from the readings (ids aligned, requested ops bound) and its scores."""

    case: EditCase

    @property
    def execution(self) -> int:
        return self.case.execution

    @property
    def consistency(self) -> int:
        return self.case.consistency


def _differences(a: Shape, b: Shape) -> int:
    """How many rubric aspects differ between two readings of (possibly) the same shape."""
    return sum(
        (
            a.kind != b.kind,
            a.colour != b.colour or a.shade != b.shade,
            math.hypot(a.x - b.x, a.y - b.y) >= SAME_PLACE,
            max(a.r, b.r) / min(a.r, b.r) >= SAME_SIZE,
            max(a.aspect, b.aspect) / min(a.aspect, b.aspect) >= SAME_FORM,
            abs(a.alpha - b.alpha) >= SAME_ALPHA,
            a.outline != b.outline,
            abs(a.erase - b.erase) >= SAME_CUT,
            _turned(a, b),
        )
    )


def _turned(a: Shape, b: Shape) -> bool:
    """Whether two readings of look-alikes (same kind, colour and size) sit at clearly different rotations.

    Only look-alikes are compared: a resized shape's rotation reads a few degrees off at a few pixels across, while
    two look-alikes that traded places (a near-miss swap) are told apart by nothing else.
    """
    rotates = a.kind not in ("circle", "square")  # drawn unrotated
    alike = a.kind == b.kind and a.colour == b.colour and max(a.r, b.r) / min(a.r, b.r) < SAME_SIZE
    return rotates and alike and abs(a.angle - b.angle) >= SAME_TURN


def _pair_cost(a: Shape, b: Shape, strict: bool) -> float | None:
    """The cost of reading ``b`` as ``a`` changed, or None when they are better read as one gone and one new."""
    n = _differences(a, b)
    if strict and n:
        return None
    same_look = a.kind == b.kind and a.colour == b.colour and max(a.r, b.r) / min(a.r, b.r) < 1.25
    if n >= 3 or (n == 2 and not same_look):
        return None
    # Ties: an object keeps its look (kind, colour, size) rather than its place (two triangles that swapped places
    # moved, they were not recoloured), and among look-alikes the nearest one is the same shape.
    look = a.kind != b.kind or a.colour != b.colour or max(a.r, b.r) / min(a.r, b.r) >= SAME_SIZE
    return n + 0.05 * look + 0.01 * math.hypot(a.x - b.x, a.y - b.y)


def match(source: Scene, edited: Scene) -> dict[int, int]:
    """Edited shape id -> source shape id for shapes read as the same object (an optimal assignment).

    When the background changed, only unchanged shapes are paired: a repainted scene is not read as every object
    changed in place.
    """
    return readings(source, edited)[0]


#: Most alternative matchings weighed for one edit (scenes are small; this only bounds pathological ones).
MAX_READINGS = 64


def readings(source: Scene, edited: Scene) -> list[dict[int, int]]:
    """Every matching that explains the edit with no more changes than the optimal one, best first by its objective.

    Changes are counted the way the consistency rubric counts them: each differing aspect of a pair is one, a shape
    gone is one and a shape come is one. The optimal assignment breaks ties between readings with the same count
    (look before place, then the nearest look-alike); the others are the same pixels explained equally well.
    """
    strict = source.background.colour != edited.background.colour
    src, dst = list(source.shapes), list(edited.shapes)
    cost = [[_pair_cost(a, b, strict) for b in dst] for a in src]
    # the rubric's count of a pair (0 where the pair is not allowed)
    changes = [
        [0 if c is None else _differences(a, b) for b, c in zip(dst, row, strict=True)]
        for a, row in zip(src, cost, strict=True)
    ]

    best: dict[tuple[int, int], tuple[float, tuple[int, ...]]] = {}

    def solve(i: int, used: int) -> tuple[float, tuple[int, ...]]:
        # source i onwards, edited shapes in ``used`` taken; an unpaired shape costs 1 (gone) and its
        # counterpart 1 (new), so a pair with fewer than two changes is always worth taking
        if i == len(src):
            return float(len(dst) - bin(used).count("1")), ()
        key = (i, used)
        if key not in best:
            skip_cost, skip = solve(i + 1, used)
            options = [(1.0 + skip_cost, (-1, *skip))]
            for j, c in enumerate(cost[i]):
                if c is not None and not used >> j & 1:
                    rest_cost, rest = solve(i + 1, used | 1 << j)
                    options.append((c + rest_cost - 1.0, (j, *rest)))  # pairing spares one "new" shape
            best[key] = min(options, key=lambda o: o[0])
        return best[key]

    least: dict[tuple[int, int], int] = {}

    def fewest(i: int, used: int) -> int:
        # the fewest changes that source i onwards can be read with, edited shapes in ``used`` taken
        if i == len(src):
            return len(dst) - bin(used).count("1")
        key = (i, used)
        if key not in least:
            options = [1 + fewest(i + 1, used)]
            options += [
                changes[i][j] + fewest(i + 1, used | 1 << j)
                for j, c in enumerate(cost[i])
                if c is not None and not used >> j & 1
            ]
            least[key] = min(options)
        return least[key]

    _, choice = solve(0, 0)
    bound = sum(changes[i][j] if j >= 0 else 1 for i, j in enumerate(choice)) + len(dst) - sum(j >= 0 for j in choice)
    found: list[tuple[int, ...]] = [choice]

    def walk(i: int, used: int, spent: int, picked: tuple[int, ...]) -> None:
        if len(found) >= MAX_READINGS or spent + fewest(i, used) > bound:
            return
        if i == len(src):
            if picked != choice:
                found.append(picked)
            return
        walk(i + 1, used, spent + 1, (*picked, -1))
        for j, c in enumerate(cost[i]):
            if c is not None and not used >> j & 1:
                walk(i + 1, used | 1 << j, spent + changes[i][j], (*picked, j))

    walk(0, 0, 0, ())

    def weight(picked: tuple[int, ...]) -> float:  # the optimal assignment's objective
        paired = [cost[i][j] for i, j in enumerate(picked) if j >= 0]
        return sum(c - 1.0 for c in paired if c is not None) + len(src) + len(dst) - 2 * len(paired)

    ranked = [choice, *sorted(found[1:], key=weight)]
    return [{dst[j].id: src[i].id for i, j in enumerate(picked) if j >= 0} for picked in ranked]


def _aligned(source: Scene, edited: Scene, pairs: dict[int, int]) -> Scene:
    """``edited`` with paired shapes under their source ids and unchanged measurements set to the source's."""
    before = {s.id: s for s in source.shapes}
    fresh = max(source.next_id(), edited.next_id()) + 100
    shapes = []
    for k, shape in enumerate(edited.shapes):
        if shape.id not in pairs:
            shapes.append(replace(shape, id=fresh + k))
            continue
        old = before[pairs[shape.id]]
        new = replace(shape, id=old.id, angle=old.angle)
        if math.hypot(old.x - new.x, old.y - new.y) < SAME_PLACE:
            new = replace(new, x=old.x, y=old.y)
        if max(old.r, new.r) / min(old.r, new.r) < SAME_SIZE:
            new = replace(new, r=old.r)
        if max(old.aspect, new.aspect) / min(old.aspect, new.aspect) < SAME_FORM:
            new = replace(new, aspect=old.aspect)
        if abs(old.alpha - new.alpha) < SAME_ALPHA:
            new = replace(new, alpha=old.alpha)
        if abs(old.erase - new.erase) < SAME_CUT:
            new = replace(new, erase=old.erase)
        shapes.append(new)
    background = edited.background
    if background.colour == source.background.colour and background.texture == source.background.texture:
        # a tint reads to the level; the tone is excused whatever it is
        background = replace(background, tint=background.tint if background.tint != (0, 0, 0) else (0, 0, 0))
    return replace(edited, shapes=tuple(shapes), background=background)


def judge_edit(source: Scene, edited: Scene, ops: tuple[Op, ...], instruction: str) -> EditReading:
    """Judge an edit from its two scene readings and its operations bound to ``source`` (see ``grammar``).

    Where the pixels are read equally well by several matchings (``readings``: as few changes each), the edit is the
    one that leaves the fewest changes unasked for, and of those the one under which the instruction was carried out
    furthest: a look-alike that lands exactly where an operation puts it is that operation done, not a coincidence
    (while a faint ghost where a removed shape stood is that removal unfinished, not a new faint shape). Among equals
    the optimal assignment's reading stands.
    """
    judged = [_judge(source, edited, pairs, ops, instruction) for pairs in readings(source, edited)]

    def merit(r: EditReading) -> tuple[int, int, int]:
        count = r.case.unintended
        return -count.significant, -count.minor, r.execution

    return max(judged, key=merit)  # the first of the best: the optimal assignment's on a tie


def _judge(source: Scene, edited: Scene, pairs: dict[int, int], ops: tuple[Op, ...], instruction: str) -> EditReading:
    aligned = _aligned(source, edited, pairs)
    after = {s.id: s for s in aligned.shapes}
    new_ids = [s.id for s in aligned.shapes if s.id not in source.ids()]
    bound: list[Op] = []
    outcomes: list[F] = []
    for op in ops:
        if isinstance(op, Add):
            how, got = _add(op, source, aligned, [after[i] for i in new_ids])
            if got is not None:
                new_ids.remove(got.id)
                shapes = tuple(replace(s, id=op.shape.id) if s.id == got.id else s for s in aligned.shapes)
                aligned = replace(aligned, shapes=shapes)
                after = {s.id: s for s in aligned.shapes}
        else:
            how = _fulfilment(op, source, after)
        bound.append(op)
        outcomes.append(how)
    requested = {t for op in bound for t in op.targets}
    count = count_unintended(source, aligned, requested)
    if count.different_image:  # nothing requested can be seen in another picture
        outcomes = [F.NONE] * len(outcomes)
    case = EditCase(
        source=source,
        edited=aligned,
        ops=tuple(bound),
        outcomes=tuple(outcomes),
        instruction=instruction,
        unintended=count,
        execution=execution_score(outcomes),
        consistency=consistency_score(count.significant, count.minor, count.different_image),
    )
    return EditReading(case)


def _fulfilment(op: Op, source: Scene, after: dict[int, Shape]) -> F:
    if isinstance(op, Remove):
        return _remove(after.get(op.target))
    if isinstance(op, Recolour):
        return _recolour(op, source.get(op.target), after.get(op.target))
    if isinstance(op, Move):
        return _move(op, source.get(op.target), after.get(op.target))
    if isinstance(op, Resize):
        return _resize(op, source.get(op.target), after.get(op.target))
    if isinstance(op, Swap):
        return _swap(source.get(op.a), source.get(op.b), after.get(op.a), after.get(op.b))
    raise TypeError(f"no rule to judge operation {type(op).__name__}")


def _remove(got: Shape | None) -> F:
    if got is None:
        return F.FULL
    if got.erase >= 0.2:
        return F.WRONG  # part of it is still there
    if got.alpha < 0.25:
        return F.SUBTLE  # a faint ghost
    return F.VAGUE if got.alpha < 0.85 else F.NONE


def _recolour(op: Recolour, old: Shape, got: Shape | None) -> F:
    if got is None:
        return F.NONE
    if got.colour == op.colour:
        return F.FULL if got.shade is None else F.SUBTLE
    if got.colour == old.colour:
        return F.VAGUE if got.shade is not None else F.NONE
    return F.WRONG


def _move(op: Move, old: Shape, got: Shape | None) -> F:
    if got is None:
        return F.NONE
    dx, dy = got.x - old.x, got.y - old.y
    if math.hypot(dx, dy) < SAME_PLACE:
        return F.NONE
    if in_region(op.region, got.x, got.y):
        # ShapesWorld's near miss stops 0.09 short; a full move lands on the spot
        return F.FULL if math.hypot(got.x - op.dest[0], got.y - op.dest[1]) < 0.045 else F.SUBTLE
    wanted_x, wanted_y = op.dest[0] - old.x, op.dest[1] - old.y
    moved = math.hypot(dx, dy)
    cosine = (dx * wanted_x + dy * wanted_y) / max(moved * math.hypot(wanted_x, wanted_y), 1e-9)
    # ShapesWorld's opposite move goes straight back along the line; a clear move elsewhere, even partly backwards,
    # is a wrong one. A small step backwards is still the opposite of what was asked.
    if cosine < 0 and (moved < 0.8 * MIN_MOVE or cosine < OPPOSITE_COSINE):
        return F.OPPOSITE
    return F.WRONG if moved >= 0.8 * MIN_MOVE else F.VAGUE


def _resize(op: Resize, old: Shape, got: Shape | None) -> F:
    if got is None:
        return F.NONE
    if max(got.aspect, 1 / got.aspect) >= 1.3:
        return F.WRONG  # stretched one way instead of scaled
    done = math.log(got.r / old.r) / math.log(op.factor)  # 1: as asked, 0: unchanged, below 0: the other way
    if done <= -0.07:
        return F.OPPOSITE
    if done < 0.07:
        return F.NONE
    return F.VAGUE if done < 0.5 else F.SUBTLE if done < 0.9 else F.FULL


def _swap(a: Shape, b: Shape, got_a: Shape | None, got_b: Shape | None) -> F:
    if got_a is None or got_b is None:
        return F.WRONG
    a_there = math.hypot(got_a.x - b.x, got_a.y - b.y)  # a at b's old spot
    b_there = math.hypot(got_b.x - a.x, got_b.y - a.y)
    near, close = 0.03, 0.1
    if a_there < near and b_there < near:
        return F.FULL
    if min(a_there, b_there) < near and max(a_there, b_there) < close:
        return F.SUBTLE
    if min(a_there, b_there) < near:
        return F.WRONG  # only one of them went over
    moved = (
        math.hypot(got_a.x - a.x, got_a.y - a.y) >= SAME_PLACE or math.hypot(got_b.x - b.x, got_b.y - b.y) >= SAME_PLACE
    )
    return F.VAGUE if moved else F.NONE


def _add(op: Add, source: Scene, edited: Scene, fresh: list[Shape]) -> tuple[F, Shape | None]:
    """How far the requested shape was added, and which new shape it is (None when none is it)."""
    want = op.shape
    anchor = None if op.anchor is None else next((s for s in edited.shapes if s.id == op.anchor), None)

    def placed(s: Shape) -> bool:
        if op.anchor is None:
            return in_region(_region_of_add(op), s.x, s.y)
        if anchor is None:
            return False
        # the requested side of the landmark: the direction the grammar placed the new shape in
        landmark = source.get(op.anchor)
        return (s.x - anchor.x) * (want.x - landmark.x) + (s.y - anchor.y) * (want.y - landmark.y) > 0

    ranked: list[tuple[int, float, F, Shape]] = []
    for s in fresh:
        kind, colour, where = s.kind == want.kind, s.colour == want.colour, placed(s)
        if s.alpha < 0.6:
            how = F.VAGUE if colour and where else None  # a faint smudge: its colour and place say what it is
        elif kind and colour and where:
            how = F.SUBTLE if s.shade is not None else F.FULL
        else:
            how = F.WRONG if kind + colour + where == 2 else None  # one thing wrong; else another, unasked shape
        if how is not None:
            rank = (F.FULL, F.SUBTLE, F.WRONG, F.VAGUE).index(how)
            ranked.append((rank, math.hypot(s.x - want.x, s.y - want.y), how, s))
    if not ranked:
        return F.NONE, None
    _, _, how, got = min(ranked, key=lambda r: (r[0], r[1]))
    return how, got


def _region_of_add(op: Add) -> str:
    """The region an add asks for, from its placement phrase."""
    for region, phrases in _ADD_WHERE.items():
        if op.where in phrases:
            return region
    raise ValueError(f"an add placed {op.where!r} names no region")

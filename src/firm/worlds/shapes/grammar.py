"""ShapesWorld text read back into structure: prompts into :class:`GenSpec`, edit instructions into operations.

The grammar is the one the generators speak (``spec.prompt_text``, each ``Op.clause``, ``ops.join_clauses``), so
``parse_prompt(prompt_text(spec, rng)) == spec`` for every sampled spec, and an instruction bound to its source scene
gives back the operations it was written from. Reading ignores case and runs of spaces, and takes "a" and "an" alike;
anything else outside the grammar raises :class:`GrammarError` naming the part that was not understood.

Example:
    >>> parse_prompt("Draw two red circles on a cream background. No stars.").groups
    (Group(kind='circle', count=2, colour='red', size=None),)
    >>> parse_instruction("Swap the red circle and the square, then remove the star.")[1]
    ParsedRemove(ref=Reference(size=None, colour=None, kind='star', qualifier=None))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from string import Formatter

# The private tables are the generators' own wording; reading them here keeps one copy of each phrase.
from firm.worlds.shapes.ops import _ADD_WHERE, Add, Move, Op, Recolour, Remove, Resize, Swap
from firm.worlds.shapes.refer import _COUNTS, _MARGIN, ANCHORS, DESTINATIONS
from firm.worlds.shapes.scene import BACKGROUNDS, COLOURS, KINDS, SIZE_WORDS, SIZES, TEXTURES, Scene, Shape
from firm.worlds.shapes.spec import RELATIONS, GenSpec, Group, Relation


class GrammarError(ValueError):
    """Text that ShapesWorld does not write, or a description that picks out no single shape of a scene."""


# -- words ------------------------------------------------------------------------------------------------------------

#: Qualifiers of refer._qualifier: the axis and the direction (-1: towards 0) the named shape is furthest along.
QUALIFIERS: dict[str, tuple[str, int]] = {
    "on the left": ("x", -1),
    "furthest to the left": ("x", -1),
    "on the right": ("x", 1),
    "furthest to the right": ("x", 1),
    "at the top": ("y", -1),
    "nearest the top": ("y", -1),
    "at the bottom": ("y", 1),
    "nearest the bottom": ("y", 1),
}
#: Add's relations to a landmark (Add.sample), with the unit step from the landmark to the new shape.
ADD_RELATIONS: dict[str, tuple[int, int]] = {
    "to the left of": (-1, 0),
    "to the right of": (1, 0),
    "above": (0, -1),
    "below": (0, 1),
}
_ADD_VERBS = ("add", "put", "draw", "place", "insert")
_REMOVE_VERBS = ("remove", "delete", "erase", "get rid of", "take out", "take away")
_MOVE_VERBS = ("move", "shift", "drag", "slide", "relocate")
_RECOLOUR = (
    "make {ref} {colour}",
    "change the colour of {ref} to {colour}",
    "recolour {ref} {colour}",
    "paint {ref} {colour}",
    "turn {ref} {colour}",
)
_RESIZE = {
    "make {ref} twice as big": 2.0,
    "double the size of {ref}": 2.0,
    "enlarge {ref} to twice its size": 2.0,
    "scale {ref} up to double its size": 2.0,
    "make {ref} half as big": 0.5,
    "halve the size of {ref}": 0.5,
    "shrink {ref} to half its size": 0.5,
    "scale {ref} down to half its size": 0.5,
}
_SWAP = (
    "swap {a} and {b}",
    "swap the positions of {a} and {b}",
    "exchange the places of {a} and {b}",
    "switch {a} and {b} around",
)
#: join_clauses' connectives; clauses never hold a comma or a semicolon, but " and " also joins a swap's two shapes.
_PAIR_JOINS = (" and ", ", then ", "; also ")
_LAST_JOINS = (" and ", ", and finally ")
_JOINS = (" and ", ", then ", "; also ", ", and finally ", ", ")

_PREFIXES = ("a picture of ", "an image of ", "draw ", "show ")
_STYLES = {
    ", drawn as outlines": True,
    ", in outline style": True,
    ", as solid filled shapes": False,
    ", in solid colours": False,
}
_NO_KIND = ("no {kinds}", "do not include any {kinds}")
_NO_COLOUR = ("nothing {colour}", "avoid the colour {colour}")

_DESTINATIONS = {phrase: region for region, phrases in DESTINATIONS.items() for phrase in phrases}
_ADD_REGIONS = {phrase: region for region, phrases in _ADD_WHERE.items() for phrase in phrases}
_RELATION_KEYS = {phrase: key for key, phrase in RELATIONS.items()}
_COUNT_WORDS = {word: n for n, word in enumerate(_COUNTS) if n >= 2}
_PLURALS = {f"{k}s": k for k in KINDS}


def _any(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_SIZE_WORDS = [w for w, _ in SIZE_WORDS]
_REFERENCE = re.compile(
    rf"the (?:({_any(_SIZE_WORDS)}) )?(?:({_any(COLOURS)}) )?({_any(KINDS)})(?: ({_any(QUALIFIERS)}))?"
)
_ADD_OBJECT = re.compile(rf"an? (?:({_any(SIZES)}) )?({_any(COLOURS)}) ({_any(KINDS)})")
_ONE = re.compile(rf"(?:an?|one) (?:({_any(SIZES)}) )?(?:({_any(COLOURS)}) )?({_any(KINDS)})")
_MANY = re.compile(rf"({_any(_COUNT_WORDS)}|[1-9][0-9]*) (?:({_any(SIZES)}) )?(?:({_any(COLOURS)}) )?({_any(KINDS)})s")
_BACKGROUND = re.compile(rf"an? (?:({_any(TEXTURES)}) )?(?:({_any(BACKGROUNDS)}) )?background")
_THE_GROUP = re.compile(rf"the ({_any(KINDS)})(s?)")


@cache
def _vocabulary() -> frozenset[str]:
    phrases = [
        *_ADD_VERBS, *_REMOVE_VERBS, *_MOVE_VERBS, *_RECOLOUR, *_RESIZE, *_SWAP, *_JOINS, "to", "the", "a", "an",
        *QUALIFIERS, *ADD_RELATIONS, *_DESTINATIONS, *_ADD_REGIONS, *COLOURS, *BACKGROUNDS, *TEXTURES, *_SIZE_WORDS,
        *(f"{k} {k}s" for k in KINDS), *_COUNTS, *_PREFIXES, *_STYLES, *_NO_KIND, *_NO_COLOUR, "background with",
        *RELATIONS.values(),
    ]  # fmt: skip
    return frozenset(w for p in phrases for w in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", "", p)))


def _unreadable(what: str, part: str) -> GrammarError:
    """The error for a part of the text outside the grammar, naming the words ShapesWorld never uses."""
    unknown = [w for w in dict.fromkeys(re.findall(r"[a-z]+", part)) if w not in _vocabulary()]
    hint = f" (unknown words: {', '.join(map(repr, unknown))})" if unknown else ""
    return GrammarError(f"not a ShapesWorld {what}: cannot read {part!r}{hint}")


def _normalised(text: str) -> str:
    return " ".join(text.split()).lower()


def _fill(template: str, text: str) -> Iterator[dict[str, str]]:
    """Every way ``text`` fits ``template`` ("make {ref} {colour}"), as the strings its slots take."""
    pieces = [(literal, name) for literal, name, _, _ in Formatter().parse(template)]

    def rest(k: int, pos: int, slots: dict[str, str]) -> Iterator[dict[str, str]]:
        if k == len(pieces):
            if pos == len(text):
                yield slots
            return
        literal, name = pieces[k]
        if not text.startswith(literal, pos):
            return
        pos += len(literal)
        if name is None:
            yield from rest(k + 1, pos, slots)
            return
        after = pieces[k + 1][0] if k + 1 < len(pieces) else None
        ends = [len(text)] if after is None else [e for e in range(pos + 1, len(text)) if text.startswith(after, e)]
        for end in ends:
            yield from rest(k + 1, end, {**slots, name: text[pos:end]})

    yield from rest(0, 0, {})


# -- prompts ----------------------------------------------------------------------------------------------------------


def parse_prompt(text: str) -> GenSpec:
    """The :class:`GenSpec` a generation prompt asks for; the exact inverse of ``spec.prompt_text``.

    Args:
        text: a prompt such as "A picture of two red circles and a star, drawn as outlines. No squares."

    Returns:
        The spec, its groups in the order named and the relation's groups as indices into them.

    Raises:
        GrammarError: when the text is not a ShapesWorld prompt; the message quotes the part not understood.
    """
    norm = _normalised(text)
    sentences = [s.strip() for s in norm.removesuffix(".").split(".")]
    if not sentences[0]:
        raise GrammarError("not a ShapesWorld prompt: the text is empty")
    main = sentences[0]
    outline = next((v for suffix, v in _STYLES.items() if main.endswith(suffix)), None)
    if outline is not None:
        main = main[: main.rindex(",")]
    main, _, relation_text = main.partition(", with ")
    background = texture = None
    if main.endswith(" background"):
        main, _, words = main.rpartition(" on ")
        found = _BACKGROUND.fullmatch(words)
        if found is None or found.groups() == (None, None):
            raise _unreadable("prompt", f"on {words}")
        texture, background = found.groups()
    prefix = next((p for p in _PREFIXES if main.startswith(p)), "")
    groups = _groups(main.removeprefix(prefix))
    relation = _relation(relation_text, groups) if relation_text else None
    no_kind, no_colour = _negatives(sentences[1:])
    return GenSpec(groups, relation, background, texture, outline, no_kind, no_colour)


def _groups(text: str) -> tuple[Group, ...]:
    head, _, last = text.rpartition(" and ")
    phrases = [*head.split(", "), last] if head else [last]
    groups = tuple(_group(p) for p in phrases)
    kinds = [g.kind for g in groups]
    if len(set(kinds)) < len(kinds):
        raise GrammarError(f"not a ShapesWorld prompt: {text!r} names a kind of shape twice")
    return groups


def _group(phrase: str) -> Group:
    if (one := _ONE.fullmatch(phrase)) is not None:
        size, colour, kind = one.groups()
        return Group(kind, 1, colour, size)
    if (many := _MANY.fullmatch(phrase)) is not None:
        count, size, colour, kind = many.groups()
        return Group(kind, _COUNT_WORDS.get(count) or int(count), colour, size)
    raise _unreadable("prompt", phrase)


def _relation(text: str, groups: tuple[Group, ...]) -> Relation:
    for phrase, key in _RELATION_KEYS.items():
        for slots in _fill(f"{{a}} {phrase} {{b}}", text):
            a, b = _group_index(slots["a"], groups), _group_index(slots["b"], groups)
            if a is not None and b is not None:
                return Relation(a, b, key)
    raise _unreadable("prompt", f"with {text}")


def _group_index(text: str, groups: tuple[Group, ...]) -> int | None:
    """The index of the group that "the circle" / "the circles" names (the number has to agree with its count)."""
    found = _THE_GROUP.fullmatch(text)
    if found is None:
        return None
    kind, plural = found.groups()
    return next((i for i, g in enumerate(groups) if g.kind == kind and (g.count > 1) == bool(plural)), None)


def _negatives(sentences: list[str]) -> tuple[str | None, str | None]:
    no_kind = no_colour = None
    for sentence in sentences:
        kind = next(
            (_PLURALS[s["kinds"]] for t in _NO_KIND for s in _fill(t, sentence) if s["kinds"] in _PLURALS), None
        )
        colour = next((s["colour"] for t in _NO_COLOUR for s in _fill(t, sentence) if s["colour"] in COLOURS), None)
        if kind is None and colour is None:
            raise _unreadable("prompt", sentence)
        if (kind is not None and no_kind is not None) or (colour is not None and no_colour is not None):
            raise GrammarError(f"not a ShapesWorld prompt: {sentence!r} is a second negative of its sort")
        no_kind, no_colour = no_kind or kind, no_colour or colour
    return no_kind, no_colour


# -- instructions -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A definite description of one shape ("the small red circle on the left"), as refer.references writes them.

    Attributes:
        size: a size word of :data:`~firm.worlds.shapes.scene.SIZE_WORDS`, when said.
        colour: a colour name, when said.
        kind: the kind of shape.
        qualifier: a position among the look-alikes ("on the left", "nearest the top", ...), when said.
    """

    size: str | None
    colour: str | None
    kind: str
    qualifier: str | None = None

    @property
    def text(self) -> str:
        """The description as written ("the red circle on the left")."""
        return " ".join(w for w in ("the", self.size, self.colour, self.kind, self.qualifier) if w)


def _reference(text: str) -> Reference | None:
    found = _REFERENCE.fullmatch(text)
    return None if found is None else Reference(*found.groups())


@dataclass(frozen=True)
class ParsedAdd:
    """ "add a small red circle in the top left corner" / "... to the left of the blue square".

    Attributes:
        kind: the new shape's kind.
        colour: its colour.
        size: its size class (small, medium or large), or None when not said.
        where: the placement phrase as written.
        region: the region (a key of refer.ANCHORS) for a placement on the canvas, else None.
        relation: "to the left of", "to the right of", "above" or "below" for a placement beside a landmark.
        anchor: the landmark of a relation, else None.
    """

    kind: str
    colour: str
    size: str | None
    where: str
    region: str | None = None
    relation: str | None = None
    anchor: Reference | None = None

    def bind(self, scene: Scene, new_id: int) -> Add:
        r = SIZES[self.size or "medium"]
        if self.region is not None:
            ax, ay = ANCHORS[self.region]
            x, y = 0.5 if ax is None else ax, 0.5 if ay is None else ay
            # Add.sample's wrong spot: the mirror image of the requested one, a corner for the centre
            wrong = (0.2, 0.8) if self.region == "centre" else (1 - x, 1 - y)
            return Add(Shape(new_id, self.kind, self.colour, x, y, r), self.where, self.size is not None, wrong)
        assert self.relation is not None and self.anchor is not None
        anchor = resolve(self.anchor, scene)
        shape = Shape(new_id, self.kind, self.colour, anchor.x, anchor.y, r)
        dx, dy = ADD_RELATIONS[self.relation]
        dist = anchor.extent + shape.extent + 0.05  # Add.sample's spacing
        shape = shape.moved(anchor.x + dx * dist, anchor.y + dy * dist)
        wrong = (anchor.x - dx * dist, anchor.y - dy * dist)
        return Add(shape, self.where, self.size is not None, wrong, anchor.id)


@dataclass(frozen=True)
class ParsedRemove:
    """ "remove the red circle" """

    ref: Reference

    def bind(self, scene: Scene, new_id: int) -> Remove:
        return Remove(resolve(self.ref, scene).id, self.ref.text)


@dataclass(frozen=True)
class ParsedRecolour:
    """ "make the red circle blue" """

    ref: Reference
    colour: str

    def bind(self, scene: Scene, new_id: int) -> Recolour:
        return Recolour(resolve(self.ref, scene).id, self.ref.text, self.colour)


@dataclass(frozen=True)
class ParsedMove:
    """ "move the red circle to the top left corner"; ``region`` is a key of refer.ANCHORS."""

    ref: Reference
    region: str

    def bind(self, scene: Scene, new_id: int) -> Move:
        shape = resolve(self.ref, scene)
        ax, ay = ANCHORS[self.region]
        return Move(
            shape.id, self.ref.text, self.region, (shape.x if ax is None else ax, shape.y if ay is None else ay)
        )


@dataclass(frozen=True)
class ParsedResize:
    """ "make the red circle twice as big"; ``factor`` is 2.0 or 0.5."""

    ref: Reference
    factor: float

    def bind(self, scene: Scene, new_id: int) -> Resize:
        return Resize(resolve(self.ref, scene).id, self.ref.text, self.factor)


@dataclass(frozen=True)
class ParsedSwap:
    """ "swap the red circle and the blue square" """

    a: Reference
    b: Reference

    def bind(self, scene: Scene, new_id: int) -> Swap:
        a, b = resolve(self.a, scene), resolve(self.b, scene)
        if a.id == b.id:
            raise GrammarError(f"{self.a.text!r} and {self.b.text!r} are the same shape: nothing to swap")
        return Swap(a.id, b.id, self.a.text, self.b.text)


ParsedOp = ParsedAdd | ParsedRemove | ParsedRecolour | ParsedMove | ParsedResize | ParsedSwap


def _add(slots: dict[str, str]) -> ParsedAdd | None:
    found = _ADD_OBJECT.fullmatch(slots["obj"])
    if found is None:
        return None
    size, colour, kind = found.groups()
    where = slots["where"]
    if where in _ADD_REGIONS:
        return ParsedAdd(kind, colour, size, where, region=_ADD_REGIONS[where])
    for relation in ADD_RELATIONS:
        anchor = _reference(where.removeprefix(f"{relation} ")) if where.startswith(f"{relation} ") else None
        if anchor is not None:
            return ParsedAdd(kind, colour, size, where, relation=relation, anchor=anchor)
    return None


def _remove(slots: dict[str, str]) -> ParsedRemove | None:
    ref = _reference(slots["ref"])
    return None if ref is None else ParsedRemove(ref)


def _recolour(slots: dict[str, str]) -> ParsedRecolour | None:
    ref = _reference(slots["ref"])
    return None if ref is None or slots["colour"] not in COLOURS else ParsedRecolour(ref, slots["colour"])


def _move(slots: dict[str, str]) -> ParsedMove | None:
    ref, region = _reference(slots["ref"]), _DESTINATIONS.get(slots["dest"])
    return None if ref is None or region is None else ParsedMove(ref, region)


def _resize(factor: float) -> Callable[[dict[str, str]], ParsedResize | None]:
    def read(slots: dict[str, str]) -> ParsedResize | None:
        ref = _reference(slots["ref"])
        return None if ref is None else ParsedResize(ref, factor)

    return read


def _swap(slots: dict[str, str]) -> ParsedSwap | None:
    a, b = _reference(slots["a"]), _reference(slots["b"])
    return None if a is None or b is None else ParsedSwap(a, b)


#: Every clause template of ops.py with the reader of its slots.
_CLAUSES: list[tuple[str, Callable[[dict[str, str]], ParsedOp | None]]] = [
    *((f"{verb} {{obj}} {{where}}", _add) for verb in _ADD_VERBS),
    *((f"{verb} {{ref}}", _remove) for verb in _REMOVE_VERBS),
    *((template, _recolour) for template in _RECOLOUR),
    *((f"{verb} {{ref}} to {{dest}}", _move) for verb in _MOVE_VERBS),
    *((template, _resize(factor)) for template, factor in _RESIZE.items()),
    *((template, _swap) for template in _SWAP),
]


def clause_readings(text: str) -> list[ParsedOp]:
    """Every operation one clause (lower case, no connective) can be read as; ShapesWorld's clauses have one."""
    found = (read(slots) for template, read in _CLAUSES for slots in _fill(template, text))
    return list(dict.fromkeys(op for op in found if op is not None))


def _joined(joins: list[str]) -> bool:
    """Whether the connectives between clauses are ones join_clauses writes for that many clauses."""
    if len(joins) <= 1:
        return not joins or joins[0] in _PAIR_JOINS
    return all(j == ", " for j in joins[:-1]) and joins[-1] in _LAST_JOINS


def instruction_readings(text: str) -> list[tuple[ParsedOp, ...]]:
    """Every reading of an edit instruction as clauses joined the way join_clauses joins them.

    Raises:
        GrammarError: when there is none; the message quotes the first part that no reading gets past.
    """
    norm = _normalised(text).removesuffix(".").rstrip()
    if not norm:
        raise GrammarError("not a ShapesWorld instruction: the text is empty")
    cuts = sorted({(m.start(), join) for join in _JOINS for m in re.finditer(re.escape(join), norm)})
    furthest = 0

    @cache
    def clause(start: int, end: int) -> list[ParsedOp]:
        return clause_readings(norm[start:end])

    # A chart over the cuts: a split is taken only where the clause before it reads.
    def walk(start: int) -> Iterator[tuple[list[ParsedOp], list[str]]]:
        nonlocal furthest
        furthest = max(furthest, start)
        for op in clause(start, len(norm)):
            yield [op], []
        for pos, join in cuts:
            if pos > start:
                for op in clause(start, pos):
                    for ops, joins in walk(pos + len(join)):
                        yield [op, *ops], [join, *joins]

    parses = list(walk(0))
    readings = list(dict.fromkeys(tuple(ops) for ops, joins in parses if _joined(joins)))
    if not readings and parses:
        raise GrammarError(
            f"not a ShapesWorld instruction: its clauses are not joined the way ShapesWorld joins them: {norm!r}"
        )
    if not readings:
        raise _unreadable("instruction", norm[furthest:])
    return readings


def parse_instruction(text: str) -> tuple[ParsedOp, ...]:
    """The operations an edit instruction asks for, in order, without a scene (names are not resolved yet).

    Args:
        text: an instruction such as "Make the red circle blue, then move the star to the top left corner."

    Returns:
        One parsed operation per clause.

    Raises:
        GrammarError: when the text is not a ShapesWorld instruction, or reads two ways (ShapesWorld's never do).
    """
    readings = instruction_readings(text)
    if len(readings) > 1:
        raise GrammarError(f"ambiguous instruction {text!r}: it reads {len(readings)} ways ({readings})")
    return readings[0]


# -- binding to a scene -----------------------------------------------------------------------------------------------


def resolve(ref: Reference, scene: Scene, tolerance: float = 0.05) -> Shape:
    """The shape of ``scene`` that ``ref`` picks out, with the semantics of refer.references.

    The named size, colour and kind must match exactly. A qualifier picks the shape furthest in its direction among
    those that match, which must lead every other one by refer's margin less ``tolerance`` (scenes read from pixels
    place shapes a little off). "on the left" and "furthest to the left" are read alike, whatever the group's size.

    Raises:
        GrammarError: when no shape matches, or more than one could be meant.
    """
    group = [
        s for s in scene.shapes if s.kind == ref.kind and ref.colour in (None, s.colour) and ref.size in (None, s.size)
    ]
    if not group:
        raise GrammarError(f"{ref.text!r} matches no shape in the scene")
    if ref.qualifier is None:
        if len(group) > 1:
            raise GrammarError(f"{ref.text!r} is ambiguous: {len(group)} shapes in the scene match it")
        return group[0]
    axis, sign = QUALIFIERS[ref.qualifier]

    def out(s: Shape) -> float:
        return sign * (s.x if axis == "x" else s.y)

    best = max(group, key=out)
    if any(out(best) - out(s) < _MARGIN - tolerance for s in group if s is not best):
        raise GrammarError(f"{ref.text!r} is ambiguous: no {ref.kind} in the scene is clearly {ref.qualifier}")
    return best


def build_ops(parsed: Iterable[ParsedOp], scene: Scene) -> tuple[Op, ...]:
    """The operations of ops.py that ``parsed`` asks for, bound to the shapes of ``scene``.

    Names resolve against ``scene`` (every clause of an instruction describes the source scene). An add's shape
    takes the id sample_ops gives it: ``scene.next_id()`` plus its position in the instruction. Placements follow
    Add.sample and Move.sample: a region's anchor (0.5 where the region leaves a coordinate free), or beside the
    landmark; an unsaid size is medium.

    Raises:
        GrammarError: when a name picks out no single shape.
    """
    first = scene.next_id()
    return tuple(op.bind(scene, first + k) for k, op in enumerate(parsed))


def instruction_ops(text: str, scene: Scene) -> tuple[Op, ...]:
    """``build_ops(parse_instruction(text), scene)``: an instruction read against its source scene."""
    return build_ops(parse_instruction(text), scene)

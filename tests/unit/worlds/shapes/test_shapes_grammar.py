"""The ShapesWorld grammar: prompts and instructions read back exactly; other text refused with a reason."""

from __future__ import annotations

import random

import pytest

from firm.worlds.shapes.edit import build_edit_case
from firm.worlds.shapes.gen import build_gen_case
from firm.worlds.shapes.grammar import (
    GrammarError,
    ParsedAdd,
    ParsedMove,
    ParsedRecolour,
    ParsedRemove,
    ParsedResize,
    ParsedSwap,
    Reference,
    build_ops,
    instruction_ops,
    instruction_readings,
    parse_instruction,
    parse_prompt,
    resolve,
)
from firm.worlds.shapes.ops import Add, Move, Op, Recolour, Remove, Resize, Swap
from firm.worlds.shapes.scene import SIZES, Background, Scene, Shape
from firm.worlds.shapes.spec import GenSpec, Group, Relation, prompt_text, sample_spec
from firm.worlds.shapes.world import SPLITS, ShapesWorld

SCENE = Scene(
    Background("white"),
    (
        Shape(0, "circle", "red", 0.2, 0.5, 0.075),
        Shape(1, "circle", "red", 0.28, 0.2, 0.075),
        Shape(2, "square", "blue", 0.8, 0.8, 0.105),
        Shape(3, "star", "green", 0.3, 0.8, 0.14),
    ),
)


def _summary(op: Op) -> tuple[object, ...]:
    """What an operation read back from its text must share with the one the text was written from."""
    if isinstance(op, Add):
        return ("add", op.targets, op.shape.kind, op.shape.colour, op.anchor, op.where, op.say_size)
    if isinstance(op, Remove):
        return ("remove", op.target, op.ref)
    if isinstance(op, Recolour):
        return ("recolour", op.target, op.ref, op.colour)
    if isinstance(op, Move):
        return ("move", op.target, op.ref, op.region, op.dest)
    if isinstance(op, Resize):
        return ("resize", op.target, op.ref, op.factor)
    assert isinstance(op, Swap)
    return ("swap", op.a, op.b, op.ref_a, op.ref_b)


# -- prompts ----------------------------------------------------------------------------------------------------------


def test_prompt_reads_every_part() -> None:
    text = (
        "A picture of two small red circles, a square and three blue stars on a striped pale blue background, "
        "with the square to the right of the stars, in outline style. Do not include any hexagons. Nothing pink."
    )
    assert parse_prompt(text) == GenSpec(
        groups=(Group("circle", 2, "red", "small"), Group("square", 1), Group("star", 3, "blue")),
        relation=Relation(1, 2, "right of"),
        background="pale blue",
        texture="striped",
        outline=True,
        no_kind="hexagon",
        no_colour="pink",
    )


def test_prompt_reads_solid_style_and_texture_alone() -> None:
    spec = parse_prompt("An orange triangle on a plain background, in solid colours. Avoid the colour teal.")
    assert spec == GenSpec((Group("triangle", 1, "orange"),), texture="plain", outline=False, no_colour="teal")


def test_prompts_round_trip_over_sampled_specs() -> None:
    for seed in range(3000):
        rng = random.Random(seed)
        spec = sample_spec(rng)
        text = prompt_text(spec, rng)
        assert parse_prompt(text) == spec, text


def test_world_prompts_and_gen_cases_round_trip() -> None:
    for split in SPLITS:
        world = ShapesWorld(split=split)
        for index in range(100):
            parse_prompt(world.gen_prompt(index))
    for seed in range(300):
        case = build_gen_case(random.Random(seed))
        assert parse_prompt(case.prompt) == case.spec, case.prompt


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("a cat on a sofa", "'cat', 'sofa'"),
        ("A mauve circle.", "'mauve'"),
        ("Draw a red circle on a mauve background.", "'on a mauve background'"),
        ("Two red circles, drawn as outlines, in solid colours.", "drawn as outlines"),
        ("A circle and a square, with the circles above the square.", "with the circles above the square"),
        ("A red circle and a blue circle.", "names a kind of shape twice"),
        ("A circle. No squares. Do not include any stars.", "second negative"),
        ("Remove the red circle.", "'remove the red circle'"),
    ],
)
def test_prompt_outside_the_grammar_is_refused_with_the_part_named(text: str, named: str) -> None:
    with pytest.raises(GrammarError, match="not a ShapesWorld prompt") as err:
        parse_prompt(text)
    assert named in str(err.value)


def test_empty_prompt_is_refused() -> None:
    with pytest.raises(GrammarError, match="empty"):
        parse_prompt("  ")


# -- instructions -----------------------------------------------------------------------------------------------------


def test_instruction_reads_each_clause_and_the_and_inside_a_swap() -> None:
    text = "Swap the red circle at the top and the square, make the star twice as big, and finally remove the square."
    assert parse_instruction(text) == (
        ParsedSwap(Reference(None, "red", "circle", "at the top"), Reference(None, None, "square")),
        ParsedResize(Reference(None, None, "star"), 2.0),
        ParsedRemove(Reference(None, None, "square")),
    )


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (
            "Put a large pink hexagon along the top; also paint the small circle furthest to the left teal.",
            (
                ParsedAdd("hexagon", "pink", "large", "along the top", region="top"),
                ParsedRecolour(Reference("small", None, "circle", "furthest to the left"), "teal"),
            ),
        ),
        (
            "Insert a yellow star below the red circle on the left, then slide the square to the upper left corner.",
            (
                ParsedAdd(
                    "star",
                    "yellow",
                    None,
                    "below the red circle on the left",
                    relation="below",
                    anchor=Reference(None, "red", "circle", "on the left"),
                ),
                ParsedMove(Reference(None, None, "square"), "top left"),
            ),
        ),
        (
            "switch the  star and the square around and shrink the circle nearest the bottom to half its size",
            (
                ParsedSwap(Reference(None, None, "star"), Reference(None, None, "square")),
                ParsedResize(Reference(None, None, "circle", "nearest the bottom"), 0.5),
            ),
        ),
    ],
)
def test_instruction_connectives_and_templates(text: str, parsed: tuple[object, ...]) -> None:
    assert parse_instruction(text) == parsed


def test_instructions_round_trip_over_edit_cases() -> None:
    for seed in range(2000):
        case = build_edit_case(random.Random(seed))
        assert len(instruction_readings(case.instruction)) == 1, case.instruction
        ops = instruction_ops(case.instruction, case.source)
        assert [_summary(op) for op in ops] == [_summary(op) for op in case.ops], case.instruction


def test_world_edit_prompts_bind_to_their_scenes() -> None:
    world = ShapesWorld()
    for index in range(300):
        prompt = world.edit_prompt(index)
        ops = instruction_ops(prompt.instruction, prompt.source)
        named = [t for op in ops for t in op.mentions]
        assert 1 <= len(ops) <= 3 and len(set(named)) == len(named), prompt.instruction
        refs = [op.ref for op in ops if isinstance(op, Remove | Recolour | Move | Resize)]
        assert all(ref in prompt.instruction for ref in refs)


def test_build_ops_places_adds_as_add_sample_does() -> None:
    text = "Add a small red star in the top right corner, remove the square and draw a blue diamond above the star."
    region, remove, beside = instruction_ops(text, SCENE)
    assert isinstance(region, Add) and isinstance(beside, Add) and isinstance(remove, Remove)
    # ids as sample_ops gives them: the scene's next id plus the position in the instruction
    assert (region.shape.id, beside.shape.id, remove.target) == (4, 6, 2)
    assert (region.shape.x, region.shape.y, region.shape.r) == (0.8, 0.2, SIZES["small"])
    assert region.wrong_spot == pytest.approx((0.2, 0.8))
    assert region.say_size and not beside.say_size and beside.anchor == 3
    star = SCENE.get(3)
    dist = star.extent + SIZES["medium"] * 1.2 + 0.05
    assert beside.shape.x == star.x and beside.shape.y == pytest.approx(star.y - dist)
    assert beside.wrong_spot == (star.x, pytest.approx(star.y + dist))
    assert beside.where == "above the star"


def test_build_ops_moves_keep_the_free_coordinate() -> None:
    (side,) = build_ops((ParsedMove(Reference(None, None, "star"), "right"),), SCENE)
    (centre,) = build_ops((ParsedMove(Reference(None, None, "star"), "centre"),), SCENE)
    assert isinstance(side, Move) and isinstance(centre, Move)
    assert side.dest == (0.8, 0.8) and centre.dest == (0.5, 0.5)
    (add,) = instruction_ops("Place a green circle in the middle.", SCENE)
    assert isinstance(add, Add) and (add.shape.x, add.shape.y, add.wrong_spot) == (0.5, 0.5, (0.2, 0.8))


# -- resolution -------------------------------------------------------------------------------------------------------


def test_resolve_picks_the_extreme_shape_with_tolerance() -> None:
    assert resolve(Reference(None, None, "circle", "at the top"), SCENE).id == 1
    assert resolve(Reference("large", None, "star"), SCENE).id == 3
    # 0.12 apart: short of refer's margin of 0.15, but within the default slack of 0.05
    near = Scene(
        Background("white"), (Shape(0, "circle", "red", 0.3, 0.5, 0.075), Shape(1, "circle", "red", 0.42, 0.5, 0.075))
    )
    left = Reference(None, None, "circle", "furthest to the left")
    assert resolve(left, near).id == 0
    with pytest.raises(GrammarError, match="no circle in the scene is clearly furthest to the left"):
        resolve(left, near, tolerance=0.0)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Remove the hexagon.", "'the hexagon' matches no shape"),
        ("Remove the small square.", "'the small square' matches no shape"),
        ("Make the circle blue.", "'the circle' is ambiguous: 2 shapes"),
        (
            "Remove the circle on the left.",
            "'the circle on the left' is ambiguous: no circle in the scene is clearly on",
        ),
        ("Swap the square and the blue square.", "are the same shape"),
    ],
)
def test_names_that_pick_out_no_single_shape_are_refused(text: str, named: str) -> None:
    with pytest.raises(GrammarError) as err:
        instruction_ops(text, SCENE)
    assert named in str(err.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("a cat on a sofa", "cannot read 'a cat on a sofa' (unknown words: 'cat', 'sofa')"),
        ("make it pop", "'it', 'pop'"),
        ("Remove the square and make the cat fly.", "cannot read 'make the cat fly'"),
        ("Make the square mauve.", "'mauve'"),
        ("Add a circle at the top.", "cannot read 'add a circle at the top'"),
        ("Move the star to the top, remove the square.", "not joined the way ShapesWorld joins them"),
    ],
)
def test_instruction_outside_the_grammar_is_refused_with_the_part_named(text: str, named: str) -> None:
    with pytest.raises(GrammarError, match="not a ShapesWorld instruction") as err:
        parse_instruction(text)
    assert named in str(err.value)


def test_empty_instruction_is_refused() -> None:
    with pytest.raises(GrammarError, match="empty"):
        parse_instruction(".")

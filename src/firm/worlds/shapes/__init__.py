"""ShapesWorld: procedural scenes of coloured shapes where every FIRM score is computed exactly from scene graphs.

Edits (add, remove, recolour, move, resize, swap; compounds of two or three) are carried out to controlled degrees
and with controlled unintended changes, so execution and consistency are known; prompts are built from scene
specifications and images meet a controlled subset of them, so instruction following is known; degradations give
the quality sub-scores. Every sample comes with the critic answer, the difference report or the analysis plan, all
written from the scene graph. See docs/shapesworld.md.
"""

from firm.worlds.shapes.balance import allocate, parse_histogram, schedule
from firm.worlds.shapes.edit import EditCase, build_edit_case
from firm.worlds.shapes.gen import GenCase, build_gen_case
from firm.worlds.shapes.render import render
from firm.worlds.shapes.rubric import consistency_score, execution_score, instruction_score, quality_score
from firm.worlds.shapes.scene import Background, Scene, Shape, sample_scene
from firm.worlds.shapes.world import SPLITS, ShapesWorld

__all__ = [
    "SPLITS",
    "Background",
    "EditCase",
    "GenCase",
    "Scene",
    "Shape",
    "ShapesWorld",
    "allocate",
    "build_edit_case",
    "build_gen_case",
    "consistency_score",
    "execution_score",
    "instruction_score",
    "parse_histogram",
    "quality_score",
    "render",
    "sample_scene",
    "schedule",
]

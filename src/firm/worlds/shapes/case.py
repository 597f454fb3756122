"""An edit case: the two scenes, the requested operations and how far each was done, with the exact scores.

Built by ``edit.build_edit_case`` from what it draws, and by ``compare.judge_edit`` from what two readings show.
"""

from __future__ import annotations

from dataclasses import dataclass

from firm.worlds.shapes.diff import UnintendedCount
from firm.worlds.shapes.ops import Op
from firm.worlds.shapes.rubric import Fulfilment
from firm.worlds.shapes.scene import Scene


@dataclass(frozen=True)
class EditCase:
    """One edit with its exact scores.

    Attributes:
        source: the scene before the edit.
        edited: the scene after it.
        ops: the requested operations, in instruction order.
        outcomes: how far each operation was carried out.
        instruction: the instruction text.
        unintended: the counted and excused unintended changes.
        execution: the execution score (1-5).
        consistency: the consistency score (1-5).
    """

    source: Scene
    edited: Scene
    ops: tuple[Op, ...]
    outcomes: tuple[Fulfilment, ...]
    instruction: str
    unintended: UnintendedCount
    execution: int
    consistency: int

    @property
    def requested(self) -> set[int]:
        return {t for op in self.ops for t in op.targets}

    @property
    def difficulty(self) -> str:
        """ "easy" for one operation, "hard" for a compound instruction."""
        return "easy" if len(self.ops) == 1 else "hard"

    @property
    def replaced(self) -> bool:
        return self.unintended.different_image

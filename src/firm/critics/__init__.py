"""Critics: the contract (:class:`Critic`, :class:`JudgeRequest`, :class:`Verdict`) and its implementations."""

from firm.critics.base import DIMENSIONS, FIRM_RANGE, Critic, JudgeRequest, ScoreRange, Task, Verdict, task_of
from firm.critics.parsing import parse_verdict, reason_category

__all__ = [
    "DIMENSIONS",
    "FIRM_RANGE",
    "Critic",
    "JudgeRequest",
    "ScoreRange",
    "Task",
    "Verdict",
    "parse_verdict",
    "reason_category",
    "task_of",
]

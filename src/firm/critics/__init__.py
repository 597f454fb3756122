"""Critics: the contract (:class:`Critic`, :class:`JudgeRequest`, :class:`Verdict`) and its implementations."""

from firm.critics.base import DIMENSIONS, FIRM_RANGE, Critic, JudgeRequest, ScoreRange, Task, Verdict, task_of

__all__ = ["DIMENSIONS", "FIRM_RANGE", "Critic", "JudgeRequest", "ScoreRange", "Task", "Verdict", "task_of"]

"""Epoch plans: which worker of a rank reads what, so that a resumed epoch continues exactly where it stopped.

Batches of one rank are dealt round-robin to its dataloader workers (PyTorch's loader takes them in worker order), so
after ``k`` consumed batches the next one comes from worker role ``k % workers``. A plan records, per role, how far its
sample stream had been consumed and how many examples it still owes; rotating roles by ``k`` makes a fresh loader
(which always starts at worker 0) continue in the order of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EpochPlan", "RoleStart", "resumed_plan", "share"]


@dataclass(frozen=True)
class RoleStart:
    """Where one worker role starts an epoch.

    Attributes:
        position: raw samples of the role's stream already consumed (skipped undecoded).
        emitted: examples the role had already handed to the trainer.
        quota: examples the role still yields this epoch (a multiple of the batch size).
    """

    position: int = 0
    emitted: int = 0
    quota: int = 0


@dataclass(frozen=True)
class EpochPlan:
    """What each dataloader worker of this rank does in one epoch.

    Attributes:
        epoch: the epoch (seeds the shuffles).
        rotation: worker ``i`` plays role ``(i + rotation) % workers``. After ``k`` consumed batches the next batch
            comes from role ``k % workers``; PyTorch's loader starts at worker 0, so rotating by ``k`` keeps the order
            of an uninterrupted run.
        roles: one :class:`RoleStart` per role.
    """

    epoch: int
    rotation: int
    roles: tuple[RoleStart, ...]

    @classmethod
    def fresh(cls, epoch: int, workers: int, batches: int, batch_size: int, done: int = 0) -> EpochPlan:
        """A plan that runs ``batches - done`` batches from the start of every role's stream."""
        left = max(batches - done, 0)
        quotas = [share(left, workers, role) * batch_size for role in range(workers)]
        return cls(epoch, 0, tuple(RoleStart(quota=q) for q in quotas))


def share(batches: int, workers: int, role: int) -> int:
    """Batches among ``range(batches)`` that fall to ``role`` when they are dealt round-robin to ``workers``."""
    return batches // workers + (1 if role < batches % workers else 0)


def resumed_plan(
    epoch: int, workers: int, batches: int, batch_size: int, consumed: int, roles: Sequence[Sequence[int]]
) -> EpochPlan:
    """The plan that continues an epoch of ``batches`` batches after ``consumed`` of them.

    Args:
        epoch: the epoch being continued.
        workers: dataloader workers (roles) per rank; the same as when the position was saved.
        batches: batches of this rank in the whole epoch.
        batch_size: examples per batch.
        consumed: batches this rank had trained on.
        roles: per role, ``(stream position, examples emitted)`` at the last consumed batch.
    """
    starts = []
    for role in range(workers):
        position, emitted = roles[role]
        left = share(batches, workers, role) - share(consumed, workers, role)
        starts.append(RoleStart(position=int(position), emitted=int(emitted), quota=left * batch_size))
    return EpochPlan(epoch, consumed % workers, tuple(starts))

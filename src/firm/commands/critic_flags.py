"""The critic flags of ``firm score``, ``firm bench`` and ``firm serve``: :data:`firm.critics.factory.CRITIC_FLAGS`
as argparse arguments, and back to a :class:`~firm.critics.factory.CriticSpec`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from firm.commands import UsageError

if TYPE_CHECKING:
    from firm.critics.base import Critic
    from firm.critics.factory import CriticSpec


def add_critic_arguments(group: Any, critic_default: str | None = "generative") -> None:
    """Add ``--critic`` and every critic flag to an argparse parser or argument group."""
    from firm.critics.factory import CRITIC_FLAGS

    default_note = f" ({critic_default})" if critic_default else " (generative when --model is given)"
    group.add_argument("--critic", default=critic_default, help=f"registered critic name or class path{default_note}")
    for flag in CRITIC_FLAGS:
        if flag.repeatable:
            group.add_argument(
                flag.option, dest=flag.name, action="append", default=[], metavar=flag.metavar, help=flag.help
            )
        else:
            group.add_argument(flag.option, dest=flag.name, type=flag.type, metavar=flag.metavar, help=flag.help)


def given_critic_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The critic flags given on the command line (name -> value)."""
    from firm.critics.factory import CRITIC_FLAGS

    return {f.name: getattr(args, f.name) for f in CRITIC_FLAGS if getattr(args, f.name, None) not in (None, [])}


def critic_spec(args: argparse.Namespace, critic: str | None = None, name: str | None = None) -> CriticSpec:
    """The critic the flags describe (``critic`` overrides ``--critic``).

    Raises:
        UsageError: for an unknown critic, or a flag it does not take or needs.
    """
    from firm.critics.factory import CriticSpec, CriticSpecError

    try:
        return CriticSpec.from_flags(critic or args.critic, given_critic_flags(args), name=name)
    except CriticSpecError as exc:
        raise UsageError(str(exc)) from exc


def build(spec: CriticSpec) -> Critic:
    """Build the critic, a failure as one line.

    Raises:
        UsageError: for a critic that cannot be built or loaded.
    """
    from firm.critics.factory import CriticSpecError, build_critic

    try:
        return build_critic(spec)
    except CriticSpecError as exc:
        raise UsageError(str(exc)) from exc

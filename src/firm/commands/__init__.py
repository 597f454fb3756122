"""Subcommands of the ``firm`` command line. Each module offers ``add_parser(subparsers)`` and ``run(args) -> int``.

Commands only parse, load plugins and call the library; nothing outside ``firm.cli`` and this package imports them.
Top-level imports stay light so that ``firm --help`` and ``firm plugins`` start fast; heavy libraries are imported
inside ``run``.
"""

from firm.errors import InputError


class UsageError(InputError):
    """Bad input from the user, found by a command: printed as one line, exit code 2 (as any InputError)."""

"""Subcommands of the ``firm`` command line. Each module offers ``add_parser(subparsers)`` and ``run(args) -> int``.

Top-level imports stay light so that ``firm --help`` and ``firm plugins`` start fast; heavy libraries are imported
inside ``run``.
"""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""

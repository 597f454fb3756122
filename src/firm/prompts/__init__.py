"""Prompt templates: the text a critic is asked, one template per dimension.

Built-in templates live in ``firm/prompts/templates/<name>.txt`` as package data and ask for exactly the answer format
that :func:`firm.critics.answer.format_answer` writes and :func:`firm.critics.parsing.parse_verdict` reads. A user can
replace one by pointing a critic at any UTF-8 text file.

Template syntax is Python's ``str.format`` with named fields only:

- ``{text}``: the edit instruction or the generation prompt (``{prompt}`` is accepted as another name for it, so
  templates written for FIRM's released servers load unchanged);
- ``{requirement}``: the optional extra constraint of a request (empty when it has none);
- literal braces are doubled: write ``{{"score": [n]}}`` to show ``{"score": [n]}``. Braces inside the inserted
  text need nothing: ``str.format`` never re-reads the values it inserts.

Templates are checked when loaded, so an unknown field or an undoubled brace fails at startup, naming the file, and
never in the middle of a run.

Example:
    >>> template = load_template("execution")
    >>> "Edit instruction: add a red hat" in template.render("add a red hat")
    True
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from firm.critics.base import task_of
from firm.errors import check_file

__all__ = ["FIELDS", "PromptTemplate", "builtin_templates", "default_template", "load_template"]

#: The placeholders a template may use.
FIELDS = ("text", "requirement", "prompt")

_TEMPLATE_DIR = "templates"


@dataclass(frozen=True)
class PromptTemplate:
    """A critic prompt with ``{text}`` / ``{requirement}`` placeholders.

    Attributes:
        name: the built-in name (execution, consistency, instruction, quality) or the user file's stem.
        text: the template text as stored, braces not yet resolved.
        source: the file the text was read from.
        placeholders: the fields the text uses, a subset of :data:`FIELDS` (computed).

    Raises:
        ValueError: when the text uses an unknown or positional field, or has an undoubled brace.
    """

    name: str
    text: str
    source: Path
    placeholders: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "placeholders", _placeholders(self.text, self.source))

    def render(self, text: str, requirement: str = "") -> str:
        """The prompt for one request.

        Args:
            text: the edit instruction or generation prompt; inserted for ``{text}`` and ``{prompt}``.
            requirement: the request's extra constraint; inserted for ``{requirement}``.

        Returns:
            The template with its placeholders filled and doubled braces made single.
        """
        return self.text.format(text=text, prompt=text, requirement=requirement)


def builtin_templates() -> list[str]:
    """Names of the templates shipped with firm, sorted."""
    folder = resources.files(__name__) / _TEMPLATE_DIR
    return sorted(entry.name.removesuffix(".txt") for entry in folder.iterdir() if entry.name.endswith(".txt"))


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """Load a built-in template by name, or a user's template file.

    A string naming a built-in (see :func:`builtin_templates`) loads it, even when a file of that name exists in the
    working directory (write ``./execution`` to mean the file). Any other string with a path separator or a file
    suffix, and any :class:`~pathlib.Path`, is read as a UTF-8 file.

    Args:
        name_or_path: ``"execution"``, ``"consistency"``, ``"instruction"``, ``"quality"`` or a file path.

    Raises:
        ValueError: for a string that is neither a built-in name nor a path, listing the built-in names; for a
            file that is empty or has invalid placeholders.
        FileNotFoundError: for a path that does not exist, naming it.
    """
    builtins = builtin_templates()
    if isinstance(name_or_path, str) and name_or_path in builtins:
        resource = resources.files(__name__) / _TEMPLATE_DIR / f"{name_or_path}.txt"
        return PromptTemplate(name_or_path, resource.read_text(encoding="utf-8"), Path(str(resource)))
    path = Path(name_or_path).expanduser()
    if isinstance(name_or_path, str) and len(path.parts) == 1 and not path.suffix:
        raise ValueError(
            f"unknown prompt template {name_or_path!r}: use a built-in name ({', '.join(builtins)}) "
            "or a path to a text file"
        )
    check_file(path, "prompt template file", FileNotFoundError)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"prompt template file {path} is empty")
    return PromptTemplate(path.stem, text, path)


def default_template(dimension: str) -> PromptTemplate:
    """The built-in template that asks a critic about ``dimension``.

    Raises:
        ValueError: for an unknown dimension, listing the known ones.
    """
    task_of(dimension)
    return load_template(dimension)


def _placeholders(text: str, source: Path) -> frozenset[str]:
    hint = "write literal braces as {{ and }}"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise ValueError(f"prompt template {source}: {err}; {hint}") from None
    names = {name for _, name, _, _ in parsed if name is not None}
    unknown = sorted(name for name in names if name not in FIELDS)
    if unknown:
        shown = ", ".join("{" + name + "}" for name in unknown)
        allowed = ", ".join("{" + name + "}" for name in FIELDS)
        raise ValueError(f"prompt template {source} uses unknown placeholder(s) {shown}; allowed: {allowed}; {hint}")
    return frozenset(names)

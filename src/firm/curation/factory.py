"""Build an annotator from its registered name and plain settings (a YAML file, ``key=value`` flags).

Example:
    >>> build_annotator("mllm", {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "qwen3-vl"})
    >>> build_annotator("shapes")
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from firm.curation.base import Annotator
from firm.errors import InputError, check_file
from firm.plugins import PluginError, resolve_class

__all__ = ["build_annotator", "parse_settings"]


def parse_settings(
    pairs: Sequence[str] = (), config: str | Path | None = None, what: str = "--annotator"
) -> dict[str, Any]:
    """Settings from an optional YAML mapping file, then ``key=value`` pairs (values read as YAML: ``8`` is a number,
    ``true`` a boolean, ``{a: 1}`` a mapping); a pair overrides the file.

    Raises:
        InputError: for a missing file, a file that is not a mapping, or a pair without ``=``.
    """
    settings: dict[str, Any] = {}
    if config is not None:
        path = check_file(Path(config), f"{what} config")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise InputError(f"{what} config {path} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{what} config {path} must be a mapping of settings, got {type(loaded).__name__}")
        settings.update(loaded or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} setting {pair!r} must look like key=value")
        try:
            settings[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            settings[key.strip()] = value
    return settings


def build_annotator(name: str, settings: Mapping[str, Any] | None = None, what: str = "--annotator") -> Annotator:
    """The annotator registered as ``name`` under ``firm.annotators`` (or a class path), built with ``settings``.

    Raises:
        InputError: for an unknown name, a class that is not an annotator, a setting the class does not take
            (listing those it does) or a value it refuses.
    """
    try:
        cls = resolve_class("firm.annotators", name)
    except PluginError as err:
        raise InputError(f"{what} {name}: {err}") from None
    if not issubclass(cls, Annotator):
        raise InputError(f"{what} {name}: {cls.__module__}.{cls.__qualname__} is not a firm Annotator")
    given = dict(settings or {})
    parameters = inspect.signature(cls.__init__).parameters
    accepted = [p for p in parameters if p != "self" and parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(given) - set(accepted))
    if unknown and not takes_any:
        raise InputError(
            f"{what} {name} has no setting {', '.join(map(repr, unknown))}; it takes: {', '.join(accepted) or 'none'}"
        )
    try:
        return cls(**given)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} {name}: {err}") from None

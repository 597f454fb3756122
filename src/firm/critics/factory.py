"""From a description of a critic to a running one: :class:`CriticSpec` and :func:`build_critic`.

Every command that judges (``firm score``, ``firm bench``, ``firm serve``) and every library caller that is handed a
critic by name (RL rewards, curation) goes through here, so a critic is described, keyed and built the same way
everywhere:

- :data:`CRITIC_FLAGS` is the one list of critic settings the command line offers; each is passed to the critic's
  ``__init__`` when given, and refused (naming the flag) when the chosen critic does not take it.
- :meth:`CriticSpec.key` names the critic's class and every setting that can change a verdict (all of them but the
  critic's declared :attr:`~firm.critics.base.Critic.transport_settings`): verdict caches are keyed by it, so a
  verdict judged with one setting is never reused for another.
- :meth:`CriticSpec.row_name` is the name a critic gets in reports and cache files when none is given.

Example:
    >>> spec = CriticSpec.from_flags("generative", {"model": "runs/critic/hf", "samples": 8})
    >>> spec.row_name
    'critic'
    >>> critic = build_critic(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from firm.critics.base import Critic
from firm.errors import InputError, check_file

__all__ = ["CRITIC_FLAGS", "CriticFlag", "CriticSpec", "CriticSpecError", "build_critic", "parse_templates"]


class CriticSpecError(InputError):
    """A critic that cannot be described or built as asked: unknown name, refused or missing setting, bad config."""


@dataclass(frozen=True)
class CriticFlag:
    """One critic setting offered on the command line (``--max-new-tokens`` sets ``max_new_tokens``).

    Attributes:
        name: the critic ``__init__`` argument it sets.
        type: converts the command-line text (None: the text itself).
        help: one line for ``--help``.
        metavar: how ``--help`` shows the value.
        repeatable: the flag may be given several times; its values arrive as a list.
        flag: the option as typed, when it is not the argument's name with dashes (``--timeout`` for ``timeout_s``).
    """

    name: str
    type: Callable[[str], Any] | None
    help: str
    metavar: str | None = None
    repeatable: bool = False
    flag: str | None = None

    @property
    def option(self) -> str:
        """The flag as typed: ``--max-new-tokens``."""
        return self.flag or "--" + self.name.replace("_", "-")


#: The critic settings of ``firm score``, ``firm bench`` and ``firm serve``, in ``--help`` order.
CRITIC_FLAGS: tuple[CriticFlag, ...] = (
    CriticFlag("model", None, "hub id or local Hugging Face folder (or the served model name)"),
    CriticFlag("base_url", None, "server URL, for --critic openai or remote"),
    CriticFlag("device", None, "auto, cpu, cuda, cuda:1 ..."),
    CriticFlag("dtype", None, "auto, float32, bfloat16, float16"),
    CriticFlag("max_new_tokens", int, "token budget of every answer"),
    CriticFlag("max_pixels", int, "cap on image pixels seen by the critic"),
    CriticFlag("batch_size", int, "requests per forward batch of the critic"),
    CriticFlag("samples", int, "answers sampled and averaged per verdict (avg@n); 1 (default) = greedy"),
    CriticFlag("temperature", float, "sampling temperature with --samples (default 1.0)"),
    CriticFlag(
        "templates",
        None,
        "prompt template for a dimension, e.g. execution=./my_exec.txt (repeatable)",
        metavar="DIM=NAME_OR_PATH",
        repeatable=True,
        flag="--template",
    ),
    CriticFlag("timeout_s", float, "seconds to wait for one answer from a critic server", "SECONDS", flag="--timeout"),
    CriticFlag("max_retries", int, "retries when a critic server cannot be reached or is busy", "N", flag="--retries"),
)
_FLAGS = {flag.name: flag for flag in CRITIC_FLAGS}
_CONFIG_KEYS = frozenset({"name", "class_path", "init_args"})


def parse_templates(items: Sequence[str]) -> dict[str, str]:
    """``["execution=./exec.txt", ...]`` (the repeated ``--template`` flag) to ``{"execution": "./exec.txt"}``.

    Raises:
        CriticSpecError: for an item that is not ``DIM=NAME_OR_PATH``.
    """
    templates = {}
    for item in items:
        dim, sep, value = item.partition("=")
        if not sep or not dim.strip() or not value.strip():
            raise CriticSpecError(f"--template takes DIM=NAME_OR_PATH, got {item!r}")
        templates[dim.strip()] = value.strip()
    return templates


def _resolve(critic: str) -> type[Critic]:
    from firm import plugins

    try:
        cls = plugins.resolve_class("firm.critics", critic)
    except (plugins.PluginError, ValueError) as exc:
        raise CriticSpecError(str(exc)) from exc
    if not (isinstance(cls, type) and issubclass(cls, Critic)):
        raise CriticSpecError(f"{critic} is not a firm critic (a subclass of firm.critics.Critic)")
    return cls


def _plain(value: Any) -> Any:
    """``value`` as JSON data (dataclasses as dicts, paths as strings, tuples as lists), for keys and headers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class CriticSpec:
    """A critic to build: its class (a registered name or a class path) and the ``__init__`` arguments to pass.

    Attributes:
        critic: a registered critic name (``generative``, ``score_token``, ``openai``, ``remote``, a plugin's) or a
            class path (``my_pkg.critics.MyCritic``).
        settings: the critic's ``__init__`` arguments, as plain data or typed values (YAML/JSON data is typed by the
            critic's annotations when it is built).
        name: the critic's name in reports and cache files; :attr:`row_name` derives one when None.
        source: where the spec came from (a config file), for error messages.
    """

    critic: str = "generative"
    settings: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    source: str = ""

    @classmethod
    def from_flags(cls, critic: str, flags: Mapping[str, Any], name: str | None = None) -> CriticSpec:
        """The spec for command-line flags: ``flags`` maps :data:`CRITIC_FLAGS` names to values, None (or an empty
        list) for a flag not given. Only given flags become settings.

        ``max_new_tokens`` is the budget of every dimension: for critics with per-dimension budgets it also clears
        their defaults.

        Raises:
            CriticSpecError: for an unknown critic, a flag the critic does not take, or a required argument that no
                flag gave (each named as the flag to add).
        """
        unknown = sorted(set(flags) - set(_FLAGS))
        if unknown:
            raise CriticSpecError(f"not critic flags: {', '.join(unknown)}")
        given = {k: v for k, v in flags.items() if v is not None and v != []}
        if "templates" in given:
            given["templates"] = parse_templates(given["templates"])
        accepted = inspect.signature(_resolve(critic)).parameters
        refused = [_FLAGS[k].option for k in given if k not in accepted]
        if refused:
            raise CriticSpecError(f"critic {critic!r} does not take {', '.join(sorted(refused))}")
        if "max_new_tokens" in given and "max_new_tokens_per_dimension" in accepted:
            given["max_new_tokens_per_dimension"] = {}
        missing = [
            p.name
            for p in accepted.values()
            if p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            and p.name not in given
        ]
        if missing:
            options = [_FLAGS[m].option if m in _FLAGS else m for m in missing]
            raise CriticSpecError(f"critic {critic!r} needs {', '.join(options)}")
        return cls(critic=critic, settings=given, name=name)

    @classmethod
    def from_config(cls, config: Any, where: str = "critic config", default_name: str | None = None) -> CriticSpec:
        """The spec for a config mapping ``{"class_path": ..., "init_args": {...}, "name": ...}`` (YAML or JSON data).

        Raises:
            CriticSpecError: for a config that is not such a mapping, or an unknown key.
        """
        if not isinstance(config, Mapping) or "class_path" not in config:
            raise CriticSpecError(f"{where} must be a mapping with class_path (and optional name, init_args)")
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise CriticSpecError(
                f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(_CONFIG_KEYS))}"
            )
        init_args = config.get("init_args") or {}
        if not isinstance(init_args, Mapping):
            raise CriticSpecError(f"{where}: init_args must be a mapping")
        name = config.get("name") or default_name
        return cls(str(config["class_path"]), dict(init_args), None if name is None else str(name), where)

    @classmethod
    def from_file(cls, path: str | Path) -> CriticSpec:
        """The spec in a YAML or JSON file (see :meth:`from_config`); its name defaults to the file's stem.

        Raises:
            CriticSpecError: for a missing or unreadable file, or a bad config.
        """
        import yaml

        path = check_file(Path(path), "critic config", CriticSpecError)
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CriticSpecError(f"cannot read critic config {path}: {exc}") from exc
        return cls.from_config(config, f"critic config {path}", default_name=path.stem)

    def critic_class(self) -> type[Critic]:
        """The critic's class (imports it).

        Raises:
            CriticSpecError: for an unknown name or a class that is not a critic.
        """
        return _resolve(self.critic)

    @property
    def row_name(self) -> str:
        """The critic's name in reports: ``name``, else the model's folder or hub name (the parent's for a folder
        named ``hf``, as ``firm fit`` exports write ``runs/<run>/hf``), else the critic's name."""
        if self.name:
            return self.name
        model = self.settings.get("model")
        if isinstance(model, (str, PurePath)) and str(model).strip("/"):
            path = Path(str(model).rstrip("/"))
            if path.name == "hf" and path.parent.name not in ("", "."):
                return path.parent.name
            return path.name
        return self.critic.rsplit(".", 1)[-1]

    def key(self) -> dict[str, Any]:
        """The critic's identity for verdict caches: its class path and every setting but its transport settings.

        Raises:
            CriticSpecError: for an unknown critic.
        """
        cls = self.critic_class()
        settings = {k: v for k, v in self.settings.items() if k not in cls.transport_settings}
        return {"critic": f"{cls.__module__}.{cls.__qualname__}", "settings": _plain(settings)}

    def key_text(self) -> str:
        """:meth:`key` as one canonical JSON string."""
        return json.dumps(self.key(), sort_keys=True, ensure_ascii=False)


def build_critic(spec: CriticSpec) -> Critic:
    """Build the critic ``spec`` describes, its settings typed by the critic's ``__init__`` annotations.

    Raises:
        CriticSpecError: for an unknown critic, a setting it does not take or cannot convert, or a model that
            cannot be loaded (the message says which).
    """
    from jsonargparse import ArgumentError, ArgumentParser

    cls = spec.critic_class()
    where = spec.source or f"critic {spec.critic!r}"
    # jsonargparse types the settings by the critic's annotations (YAML strings to numbers, mappings to dataclasses);
    # the critic is then called directly, so that its own errors (a missing model folder) reach the user unwrapped.
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "critic", instantiate=False, sub_configs=True)
    try:
        config = parser.parse_object({"critic": dict(spec.settings)})
        typed = parser.instantiate(config).critic
    except (ArgumentError, TypeError, ValueError) as exc:  # a setting it does not take or cannot convert
        message = " ".join(str(exc).split())  # jsonargparse explains over several lines
        raise CriticSpecError(f"{where}: cannot build {spec.critic}: {message}") from exc
    given = {name: value for name, value in vars(typed).items() if name in spec.settings}
    try:
        return cls(**given)
    except (OSError, ValueError) as exc:  # a model folder that is not there, a template that does not load
        raise CriticSpecError(f"cannot load critic {spec.critic!r}: {exc}") from exc

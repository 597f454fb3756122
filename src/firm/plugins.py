"""The plugin registry: critics, rewards, editors, generators and annotators found through entry points.

firm's own built-ins register through the same groups as third-party packages (see pyproject.toml), so a plugin is
a peer of the built-ins: ``firm plugins`` lists them all, and a name registered twice is an error naming both
distributions. ``FIRM_LOAD_PLUGINS`` (comma-separated distribution names) limits which third-party distributions
load; set it to an empty string to load only firm's own. Unset, every installed distribution loads.

A plugin package declares, in its pyproject.toml::

    [project.entry-points."firm.rewards"]
    my_reward = "my_package.rewards:MyReward"
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points

from firm.errors import InputError

GROUPS = ("firm.critics", "firm.rewards", "firm.editors", "firm.generators", "firm.annotators")
BUILTIN_DISTRIBUTION = "firm"
ALLOW_ENV = "FIRM_LOAD_PLUGINS"


class PluginError(RuntimeError):
    """A plugin cannot be found, loaded or is registered twice."""


@dataclass(frozen=True)
class Plugin:
    """One registered entry point."""

    group: str
    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str

    def load(self) -> type:
        """Import and return the registered class.

        Raises:
            PluginError: naming the plugin and its distribution when the import fails.
        """
        module, _, attr = self.value.partition(":")
        try:
            obj = EntryPoint(self.name, self.value, self.group).load()
        except Exception as exc:  # any import error of third-party code is reported the same way
            raise PluginError(
                f"plugin {self.name!r} in {self.group} (from {self.distribution} {self.version}) "
                f"failed to load {module}:{attr}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(obj, type):
            raise PluginError(f"plugin {self.name!r} in {self.group} points at {self.value}, which is not a class")
        return obj


class PluginConfigError(InputError):
    """``FIRM_LOAD_PLUGINS`` names a distribution that is not installed."""


def _allowed() -> set[str] | None:
    """The distributions ``FIRM_LOAD_PLUGINS`` allows; None when it is unset.

    Raises:
        PluginConfigError: for a name that is not an installed distribution (a typo would silently load nothing).
    """
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    names = {_canonical(name) for name in raw.split(",") if name.strip()}
    missing = sorted(name for name in names - {BUILTIN_DISTRIBUTION} if not _installed(name))
    if missing:
        with_plugins = sorted(
            {
                ep.dist.metadata["Name"]
                for grp in GROUPS
                for ep in entry_points(group=grp)
                if ep.dist is not None and _canonical(ep.dist.metadata["Name"]) != BUILTIN_DISTRIBUTION
            }
        )
        raise PluginConfigError(
            f"{ALLOW_ENV} names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            f"installed plugin distributions: {', '.join(with_plugins) or 'none'} (unset {ALLOW_ENV} to load all)"
        )
    return names


def _installed(name: str) -> bool:
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def discover(group: str | None = None) -> list[Plugin]:
    """Every registered plugin (of one group, or of all firm groups), sorted by group and name.

    Raises:
        ValueError: for a group that is not a firm group.
        PluginConfigError: when ``FIRM_LOAD_PLUGINS`` names a distribution that is not installed.
        PluginError: when two distributions register the same name in one group.
    """
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; firm's groups are {', '.join(GROUPS)}")
    allowed = _allowed()
    found: dict[tuple[str, str], Plugin] = {}
    for grp in [group] if group else GROUPS:
        for ep in entry_points(group=grp):
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
            if (
                allowed is not None
                and _canonical(dist_name) != BUILTIN_DISTRIBUTION
                and _canonical(dist_name) not in allowed
            ):
                continue
            plugin = Plugin(grp, ep.name, ep.value, dist_name, dist.version if dist is not None else "")
            previous = found.get((grp, ep.name))
            if previous is not None and previous.distribution != plugin.distribution:
                raise PluginError(
                    f"{grp} name {ep.name!r} is registered twice: by {previous.distribution} {previous.version} "
                    f"({previous.value}) and by {plugin.distribution} {plugin.version} ({plugin.value}). "
                    f"Uninstall one, or limit what loads with {ALLOW_ENV}."
                )
            found[(grp, ep.name)] = plugin
    return sorted(found.values(), key=lambda p: (p.group, p.name))


def get(group: str, name: str) -> Plugin:
    """The plugin registered as ``name`` in ``group``.

    Raises:
        PluginError: listing the registered names when there is no such plugin.
    """
    plugins = {p.name: p for p in discover(group)}
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        raise PluginError(f"no {group.removeprefix('firm.')[:-1]} named {name!r}; registered: {known}")
    return plugins[name]


def load(group: str, name: str) -> type:
    """Import the class registered as ``name`` in ``group``."""
    return get(group, name).load()


def resolve_class(group: str, name_or_path: str) -> type:
    """A registered name (``cme``) or a full class path (``my_pkg.rewards.MyReward``) to the class."""
    if "." in name_or_path and ":" not in name_or_path:
        module, _, attr = name_or_path.rpartition(".")
        return Plugin(group, attr, f"{module}:{attr}", "<class path>", "").load()
    return load(group, name_or_path)

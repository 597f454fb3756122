import pytest

from firm import plugins
from firm.rewards import ConsistencyModulatedExecution
from firm.testing.plugins import temporary_distribution

BUILTIN_REWARDS = {"cme", "qma", "weighted_sum", "single", "logit_expectation"}


def test_builtins_register_through_entry_points():
    rewards = {p.name: p for p in plugins.discover("firm.rewards")}
    assert set(rewards) >= BUILTIN_REWARDS
    assert {p.distribution for p in rewards.values()} == {"firm"}
    assert rewards["cme"].load() is ConsistencyModulatedExecution
    critics = {p.name for p in plugins.discover("firm.critics")}
    assert {"generative", "score_token", "openai"} <= critics


def test_tests_do_not_see_installed_third_party_plugins():
    # firm-example is installed in the dev environment, but the test session allow-lists nothing.
    assert "geometric_mean" not in {p.name for p in plugins.discover("firm.rewards")}


def test_allow_list_loads_a_named_distribution(tmp_path, monkeypatch):
    eps = {"firm.rewards": {"throwaway": "firm.rewards.strategies:SingleDimension"}}
    with temporary_distribution(tmp_path, "throwaway-plugin", eps):
        assert "throwaway" not in {p.name for p in plugins.discover("firm.rewards")}
        monkeypatch.setenv("FIRM_LOAD_PLUGINS", "throwaway_plugin")  # names are compared canonically
        plugin = plugins.get("firm.rewards", "throwaway")
        assert (plugin.distribution, plugin.version) == ("throwaway-plugin", "0.0.1")
        monkeypatch.delenv("FIRM_LOAD_PLUGINS")  # unset: everything installed loads
        assert "throwaway" in {p.name for p in plugins.discover("firm.rewards")}


def test_a_name_registered_twice_names_both_distributions(tmp_path, monkeypatch):
    monkeypatch.setenv("FIRM_LOAD_PLUGINS", "rival")
    with (
        temporary_distribution(tmp_path, "rival", {"firm.rewards": {"cme": "rival.rewards:Cme"}}),
        pytest.raises(plugins.PluginError, match="'cme' is registered twice") as err,
    ):
        plugins.discover("firm.rewards")
    assert "firm 0.1.0" in str(err.value) and "rival 0.0.1 (rival.rewards:Cme)" in str(err.value)


def test_broken_plugin_reports_its_distribution(tmp_path, monkeypatch):
    monkeypatch.setenv("FIRM_LOAD_PLUGINS", "broken")
    with (
        temporary_distribution(tmp_path, "broken", {"firm.critics": {"nope": "no_such_module:Critic"}}),
        pytest.raises(plugins.PluginError, match=r"'nope' .*from broken 0\.0\.1.*ModuleNotFoundError"),
    ):
        plugins.load("firm.critics", "nope")


def test_unknown_name_and_group_errors_list_what_exists():
    with pytest.raises(plugins.PluginError, match="no reward named 'nope'; registered: cme,"):
        plugins.get("firm.rewards", "nope")
    with pytest.raises(ValueError, match="firm.critics, firm.rewards"):
        plugins.discover("firm.reward")


def test_resolve_class_takes_a_name_or_a_class_path():
    assert plugins.resolve_class("firm.rewards", "cme") is ConsistencyModulatedExecution
    path = "firm.rewards.strategies.ConsistencyModulatedExecution"
    assert plugins.resolve_class("firm.rewards", path) is ConsistencyModulatedExecution

import json

from firm.cli import main


def test_firm_plugins_lists_builtins_and_an_allowed_plugin(capsys, monkeypatch):
    monkeypatch.setenv("FIRM_LOAD_PLUGINS", "firm-example")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["group", "name", "class", "distribution", "version"]
    rows = {tuple(line.split()[:2]): line.split() for line in out[1:]}
    cme_class = "firm.rewards.strategies:ConsistencyModulatedExecution"
    assert rows[("firm.rewards", "cme")][2:] == [cme_class, "firm", "0.1.0"]
    assert rows[("firm.rewards", "geometric_mean")][2:] == ["firm_example:GeometricMean", "firm-example", "0.1.0"]
    assert ("firm.critics", "generative") in rows


def test_firm_plugins_json_and_group_filter(capsys):
    assert main(["plugins", "--group", "critics", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["group"] for r in rows} == {"firm.critics"}
    assert {"generative", "score_token", "openai"} <= {r["name"] for r in rows}


def test_unknown_group_is_one_line_and_exit_2(capsys):
    assert main(["plugins", "--group", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown plugin group 'firm.nope'" in err

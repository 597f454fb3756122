"""Prompt templates: built-ins load and render, user files work, braces and errors behave as documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from firm.critics.base import DIMENSIONS
from firm.critics.parsing import parse_verdict
from firm.prompts import PromptTemplate, builtin_templates, default_template, load_template

BUILTINS = ["consistency", "execution", "instruction", "quality"]


def test_builtin_names_are_the_four_dimensions() -> None:
    assert builtin_templates() == BUILTINS
    assert sorted(DIMENSIONS) == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_and_renders_the_text(name: str) -> None:
    template = load_template(name)
    assert template.name == name
    assert template.source.is_file()
    rendered = template.render("a {curly} cat wearing a red hat")
    # quality judges the image alone, so it is the only template without the text.
    if name == "quality":
        assert template.placeholders == frozenset()
        assert "a {curly} cat" not in rendered
    else:
        assert template.placeholders == frozenset({"text"})
        assert rendered.count("a {curly} cat wearing a red hat") == 1
    assert "{{" not in rendered and "}}" not in rendered


@pytest.mark.parametrize(
    ("name", "example"),
    [
        ("execution", '{"reasoning": "<'),
        ("consistency", '{"reasoning": "<'),
        ("quality", '"score": [<aesthetics>, <technical>, <structure>]}'),
        ("instruction", "Final Alignment Rating: n\n\\boxed{n}"),
    ],
)
def test_builtin_asks_for_the_answer_format_the_parser_reads(name: str, example: str) -> None:
    assert example in load_template(name).render("x")


@pytest.mark.parametrize("dimension", BUILTINS)
def test_answer_shown_in_template_shape_parses(dimension: str) -> None:
    # Fill the template's own example with numbers: the parser must read what the template asks for.
    rendered = default_template(dimension).render("x")
    if dimension == "instruction":
        answer = "1. cat: present\nFinal analysis: fine\nFinal Alignment Rating: 4\n\\boxed{4}"
    else:
        example = rendered[rendered.rindex("{") : rendered.rindex("}") + 1]
        answer = re.sub(r"<[^<>]*>", "4", re.sub(r'"<[^"]*>"', '"fine"', example))
        assert json.loads(answer)["score"]
    assert parse_verdict(answer, dimension).score == 4


def test_default_template_matches_load_and_rejects_unknown_dimension() -> None:
    assert default_template("consistency") == load_template("consistency")
    with pytest.raises(ValueError, match="unknown dimension 'aesthetics'"):
        default_template("aesthetics")


def test_user_file_with_literal_braces_and_requirement(tmp_path: Path) -> None:
    path = tmp_path / "my_exec.txt"
    path.write_text('Instruction: {text}\nAlso: {requirement}\nAnswer as {{"score": [n]}}.\n', encoding="utf-8")
    template = load_template(path)
    assert template == load_template(str(path))
    assert (template.name, template.source) == ("my_exec", path)
    assert template.placeholders == frozenset({"text", "requirement"})
    rendered = template.render("make it {blue}", requirement="keep the dog")
    assert rendered == 'Instruction: make it {blue}\nAlso: keep the dog\nAnswer as {"score": [n]}.\n'


def test_prompt_is_another_name_for_text(tmp_path: Path) -> None:
    # FIRM's released templates call the instruction {prompt}.
    path = tmp_path / "released.txt"
    path.write_text("Edit: {prompt} / {requirement}", encoding="utf-8")
    assert load_template(path).render("add a hat") == "Edit: add a hat / "


def test_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(
        ValueError, match=r"unknown prompt template 'exec'.*consistency, execution, instruction, quality"
    ):
        load_template("exec")


@pytest.mark.parametrize("missing", ["nowhere/exec.txt", "exec.txt"])
def test_missing_file_names_the_path(missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        load_template(missing)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Judge {instruction}", r"unknown placeholder\(s\) \{instruction\}"),
        ("Answer {} now", r"unknown placeholder\(s\) \{\}"),
        ('Answer {"score": [n]}', r'unknown placeholder\(s\) \{"score"\}.*write literal braces as \{\{ and \}\}'),
        ("A lone } brace", r"Single '\}' encountered.*write literal braces"),
        ("   \n", "is empty"),
    ],
)
def test_bad_user_file_fails_at_load(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_template(path)


def test_template_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        PromptTemplate("inline", "{image}", Path("inline.txt"))

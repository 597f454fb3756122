"""The libraries that parse untrusted input in ``firm serve`` are bounded above in pyproject.toml, and what is
installed is inside the bounds (docs/serving.md says how a bound is moved)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PARSERS = ("pillow", "fastapi", "uvicorn", "pydantic")


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


@pytest.mark.parametrize("name", PARSERS)
def test_untrusted_input_parsers_have_an_upper_bound_that_the_install_meets(name: str) -> None:
    requirement = _requirements().get(name)
    assert requirement is not None, f"{name} is not a declared dependency"
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
        f"{name} has no upper bound: {requirement}"
    )
    assert requirement.specifier.contains(version(name)), f"installed {name} {version(name)} is outside {requirement}"

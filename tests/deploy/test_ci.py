"""CI enforces lint as well as tests, and the lint has no module-wide exceptions."""

from __future__ import annotations

import re
import tomllib

from deployfiles import ROOT


def make_recipe(target: str) -> list[str]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert m, target
    return [line.strip() for line in m.group(1).splitlines()]


def test_ci_runs_lint_then_tests():
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make ")
    ]
    assert commands == ["make lint", "make test"]


def test_lint_runs_ruff_and_mypy_over_every_package():
    recipe = make_recipe("lint")
    assert "$(VENV)/bin/ruff check ." in recipe
    assert "$(VENV)/bin/ruff format --check ." in recipe
    (mypy,) = [line for line in recipe if "/mypy " in line]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    assert set(mypy.split()[1:]) == {p.rstrip("*") for p in packages}
    assert {"cli_common", "model", "export", "service"} <= set(mypy.split()[1:])


def test_mypy_has_no_per_module_exceptions():
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "overrides" not in mypy
    assert not {"disable_error_code", "ignore_errors", "follow_imports"} & set(mypy)

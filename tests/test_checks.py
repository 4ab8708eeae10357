"""The checks a contributor runs, run by CI too: ruff and mypy over the tree as configured in
pyproject.toml (docs/development.md "Checks"), and the dependency bounds they and the sync
client rely on. A failure prints the tool's own report."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <tool> ...`` from this environment, at the repository root."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    done = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"


def test_mypy_finds_nothing():
    # the cache under the build directory (ignored by git) keeps a second run to a few seconds
    done = run_tool("mypy", "--cache-dir", str(ROOT / "build" / "mypy_cache"))
    assert done.returncode == 0, f"mypy found problems:\n{done.stdout}{done.stderr}"
    assert "Success" in done.stdout, done.stdout


def test_the_strict_modules_are_checked_strictly():
    """The contract, the lane's core and the dispenser drivers are strict: the override that
    says so names them, and turns on every flag that --strict would."""
    overrides = PYPROJECT["tool"]["mypy"]["overrides"]
    strict = [o for o in overrides if "terminal.fuel_core" in o["module"]]
    assert len(strict) == 1
    for module in ("wire.bodies", "wire.topics", "hw.dispensers.*"):
        assert module in strict[0]["module"]
    for flag in ("disallow_untyped_defs", "disallow_any_generics", "warn_return_any", "check_untyped_defs",
                 "no_implicit_reexport", "disallow_untyped_calls"):
        assert strict[0][flag] is True, flag


def requirement(spec: str) -> tuple[str, str]:
    """``(name, version bounds)`` of a requirement line."""
    m = re.fullmatch(r"([A-Za-z0-9_.\[\]-]+)\s*(.*)", spec.strip())
    assert m, spec
    return m.group(1).lower().split("[")[0], m.group(2).replace(" ", "")


@pytest.mark.parametrize("name, upper", [("aiomqtt", "<3")])
def test_dependencies_whose_next_major_breaks_us_are_bounded(name, upper):
    bounds = dict(requirement(r) for r in PYPROJECT["project"]["dependencies"])
    assert upper in bounds[name].split(","), bounds[name]


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_the_checkers_are_test_dependencies_with_bounds(tool):
    bounds = dict(requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"])
    assert tool in bounds and ">=" in bounds[tool] and "<" in bounds[tool].replace("<=", ""), bounds.get(tool)

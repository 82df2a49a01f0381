"""The code's shape is checked with its behaviour: the import layers of DESIGN.md (import-linter's
contracts in pyproject.toml), the linter (ruff check) and the formatter (ruff format --check).

Each test runs the tool as CI would and fails with the tool's own report.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ["src", "tests", "benchmarks"]


def tool(name: str) -> str:
    """The tool installed beside this Python (the test extra), else on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: install the test extra (pip install -e '.[test]'), as ./dev test does"
    return found


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_imports_follow_the_layers_of_design_md() -> None:
    result = run(tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_ruff_finds_nothing() -> None:
    result = run(tool("ruff"), "check", "--no-cache", *CODE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    result = run(tool("ruff"), "format", "--check", "--no-cache", *CODE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their base name (no packages under tests/): two files of one name
    in different directories cannot both be collected in one run."""
    names = sorted(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert [n for i, n in enumerate(names) if n in names[:i]] == []

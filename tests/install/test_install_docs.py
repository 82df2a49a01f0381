"""docs/install.md's offline worked example, run as written: each ``$ plait …`` line of the first console
block is run (from the checkout) and must print exactly the lines under it (stdout and stderr;
``> /dev/null`` drops stdout)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from plait.cli.main import app

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "install.md"


def examples() -> list[tuple[list[str], bool, list[str]]]:
    block = re.findall(r"```console\n(.*?)```", DOC.read_text(), flags=re.DOTALL)[0]
    runs: list[tuple[list[str], bool, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            words = shlex.split(line[2:])
            quiet = words[-2:] == [">", "/dev/null"]
            runs.append((words[1:-2] if quiet else words[1:], quiet, []))
        else:
            runs[-1][2].append(line)
    return runs


def test_the_offline_example_prints_what_the_page_says(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = examples()
    assert [args[0] for args, _, _ in runs] == ["profile", "profile", "manifest", "manifest"]
    for args, quiet, expected in runs:
        result = CliRunner().invoke(app, args)
        printed = (result.stderr if quiet else result.stdout + result.stderr).splitlines()
        assert printed == expected, f"plait {' '.join(args)}"

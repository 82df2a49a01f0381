"""Where the CLI writes: `out` for results (piped output is not cut to 80 columns, so tables stay
whole for grep and scripts, as kubectl's do), `err` for problems, and how problems are printed."""

from __future__ import annotations

import sys

from rich.console import Console

from plait.api.errors import Problem

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_problems(problems: list[Problem]) -> None:
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        err.print(
            f"[{colour}]{p.severity}[/]: {p.where()}" + (f": [bold]{p.path}[/]" if p.path else "") + f": {p.message}",
            markup=True,
        )

"""The one rule for the toolbox's rich consoles: in a terminal, its width; anywhere
else (a pipe, a file, a CI log) wide enough that no table truncates a column."""

from __future__ import annotations

from rich.console import Console

#: Columns a console that is not a terminal gets (a wide table then wraps nothing).
PIPE_WIDTH = 240


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) sized by the rule above."""
    out = Console(stderr=stderr)
    if out.is_terminal:
        return out
    return Console(stderr=stderr, width=PIPE_WIDTH)

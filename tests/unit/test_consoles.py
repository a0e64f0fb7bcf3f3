"""Tables printed where stdout is not a terminal (a pipe, a CI log) keep every column."""

from __future__ import annotations

import pytest
from rich.table import Table

from spotfleet_cli import consoles


def test_a_wide_table_is_not_truncated_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    con = consoles.console()
    assert not con.is_terminal and con.width == consoles.PIPE_WIDTH
    heads = [f"column number {i} with a long head" for i in range(6)]
    t = Table()
    for h in heads:
        t.add_column(h)
    t.add_row(*[f"value {i} that is long too" for i in range(6)])
    con.print(t)
    out = capsys.readouterr().out
    assert "…" not in out
    for h in heads:
        assert h in out
    assert "value 5 that is long too" in out

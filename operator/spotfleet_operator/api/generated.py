"""The shared command line of the generators (``crdgen``, ``docgen``): write a
rendered file to ``--out`` or stdout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(prog: str, render: Callable[[], str], argv: list[str] | None = None) -> int:
    """Parse ``--out``, write ``render()`` there (or to stdout); exit code 0."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0

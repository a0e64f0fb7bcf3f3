"""``spotfleet db upgrade|current|history``: the store's schema migrations (Alembic) from
the command line. The operator runs ``upgrade head`` itself at start-up; these are for
an operator that runs without write access to the schema, and for looking."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer

app = typer.Typer(
    help="The store's schema: upgrade, current revision, history.", no_args_is_help=True
)

URL_HELP = "postgresql://user@host/db or sqlite:///path (default: $SPOTFLEET_DATABASE_URL)"


def _store(url: str | None) -> Any:
    from spotfleet_operator.store import Store  # heavy: only when a command runs

    return Store(url)


def _schema() -> Any:
    from spotfleet_operator.store import schema

    return schema


async def _upgrade(url: str | None, target: str) -> tuple[str | None, str | None]:
    s, schema = _store(url), _schema()
    try:
        result: tuple[str | None, str | None] = await schema.upgrade(s.engine, target)
        return result
    finally:
        await s.close()


async def _current(url: str | None) -> str | None:
    s, schema = _store(url), _schema()
    try:
        rev: str | None = await schema.current(s.engine)
        return rev
    finally:
        await s.close()


@app.command()
def upgrade(
    url: str = typer.Option(None, "--database-url", "--url", help=URL_HELP),
    target: str = typer.Argument("head", help="revision to upgrade to"),
) -> None:
    """Migrate the store to ``target`` (default: the newest revision); idempotent."""
    before, after = asyncio.run(_upgrade(url, target))
    if before == after:
        typer.echo(f"already at {after}")
    else:
        typer.echo(f"upgraded {before or '(empty or release 0.1.0)'} -> {after}")


@app.command()
def current(
    url: str = typer.Option(None, "--database-url", "--url", help=URL_HELP),
) -> None:
    """Print the store's revision (and whether it is the newest this release knows)."""
    rev = asyncio.run(_current(url))
    head = _schema().head()
    state = "head" if rev == head else f"behind: head is {head}" if rev else "not migrated"
    typer.echo(f"{rev or '-'} ({state})")


@app.command()
def history(as_json: bool = typer.Option(False, "--json", help="JSON for scripts")) -> None:
    """Every revision, oldest first."""
    revs = _schema().history()
    if as_json:
        typer.echo(json.dumps(revs, indent=1))
        return
    for r in revs:
        typer.echo(f"{r['down_revision'] or '<base>'} -> {r['revision']}: {r['doc']}")

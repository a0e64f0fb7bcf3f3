"""``spotfleet report``: what a policy cost, would have cost on-demand, saved, and how
often it was interrupted and replaced — per day and in total, from the store's savings
ledger (a rich table; ``--json`` for scripts; ``--csv`` for finance).

Totals are the sums of the ledger rows in the window (exact decimals). ``current`` is
the newest ledger hour: its ``rate_per_hour`` is the plan in force when it was rolled up,
which is what the policy's ``status.cost.perHour`` says for that hour.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from spotfleet_operator.store import Store, ledger, tables

DAY_FIELDS = (
    "cost",
    "on_demand_equivalent",
    "savings",
    "capacity_hours_spot",
    "capacity_hours_on_demand",
)
COUNT_FIELDS = ("interruptions", "replacements", "launches", "terminations")


def parse_time(text: str | None, default: dt.datetime) -> dt.datetime:
    """ISO date or date-time (naive = UTC)."""
    if not text:
        return default
    t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def summarise(
    policy: str, rows: Sequence[tables.SavingsLedgerRow], start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    """The report document: per UTC day and in total, from ledger rows."""
    days: dict[str, dict[str, Any]] = {}
    total: dict[str, Any] = {f: Decimal(0) for f in DAY_FIELDS} | {f: 0 for f in COUNT_FIELDS}
    total["hours"] = 0
    for r in rows:
        day = ledger._utc(r.hour).date().isoformat()
        d = days.setdefault(
            day, {f: Decimal(0) for f in DAY_FIELDS} | {f: 0 for f in COUNT_FIELDS} | {"hours": 0}
        )
        for f in DAY_FIELDS:
            v = Decimal(getattr(r, f))
            d[f] += v
            total[f] += v
        for f in COUNT_FIELDS:
            d[f] += int(getattr(r, f))
            total[f] += int(getattr(r, f))
        d["hours"] += 1
        total["hours"] += 1

    def out(d: dict[str, Any]) -> dict[str, Any]:
        res = {f: ledger.text(d[f]) for f in DAY_FIELDS} | {f: d[f] for f in COUNT_FIELDS}
        od = d["on_demand_equivalent"]
        res["savings_pct"] = f"{(100 * d['savings'] / od):.2f}" if od else "0.00"
        res["ledger_hours"] = d["hours"]
        return res

    last = rows[-1] if rows else None
    return {
        "policy": policy,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "unit": next((r.unit for r in rows if r.unit), None),
        "days": [{"day": k, **out(v)} for k, v in sorted(days.items())],
        "total": out(total),
        "current": (
            {
                "hour": ledger._utc(last.hour).isoformat(),
                "covered_hours": last.covered_hours,
                "rate_per_hour": last.rate_per_hour,
                "rolled_up_at": ledger._utc(last.rolled_up_at).isoformat(),
            }
            if last is not None
            else None
        ),
    }


def to_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    cols = ["day", *DAY_FIELDS, "savings_pct", *COUNT_FIELDS, "ledger_hours"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["policy", *cols])
    for d in doc["days"]:
        w.writerow([doc["policy"], *[d[c] for c in cols]])
    w.writerow([doc["policy"], "total", *[doc["total"][c] for c in cols[1:]]])
    return buf.getvalue()


def print_table(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from spotfleet_cli import consoles

    t = Table(title=f"{doc['policy']}: {doc['from']} .. {doc['to']} (USD)")
    for c in (
        "day",
        "cost",
        "on-demand eq.",
        "savings",
        "saved %",
        "interruptions",
        "replacements",
    ):
        t.add_column(c, justify="left" if c == "day" else "right")
    for d in [*doc["days"], {"day": "total", **doc["total"]}]:
        t.add_row(
            d["day"],
            d["cost"],
            d["on_demand_equivalent"],
            d["savings"],
            d["savings_pct"],
            str(d["interruptions"]),
            str(d["replacements"]),
        )
    console = consoles.console()
    console.print(t)
    cur = doc["current"]
    if cur:
        console.print(
            f"current hour {cur['hour']}: {cur['rate_per_hour']} USD/h in force "
            f"({cur['covered_hours']} h covered, rolled up {cur['rolled_up_at']})"
        )


async def build(
    url: str | None,
    policy: str,
    start: dt.datetime,
    end: dt.datetime,
    refresh: bool = False,
    lookback_hours: float = 24.0 * 7,
) -> dict[str, Any]:
    from spotfleet_operator import jobs

    ns, _, name = policy.partition("/")
    if not ns or not name:
        raise ValueError("--policy takes namespace/name")
    s = Store(url)
    try:
        if refresh:
            await s.open()
            await jobs.rollup_ledger(s, dt.datetime.now(dt.UTC), dt.timedelta(hours=lookback_hours))
        rows = await s.ledger(ns, name, ledger.hour_of(start), end)
        return summarise(policy, rows, start, end)
    finally:
        await s.close()


def command(
    url: str | None,
    policy: str,
    start: str | None,
    end: str | None,
    as_json: bool,
    as_csv: bool,
    refresh: bool,
) -> int:
    now = dt.datetime.now(dt.UTC)
    t1 = parse_time(end, now + dt.timedelta(hours=1))
    t0 = parse_time(start, t1 - dt.timedelta(days=30))
    doc = asyncio.run(build(url, policy, t0, t1, refresh))
    if as_json:
        print(json.dumps(doc, indent=1))
    elif as_csv:
        print(to_csv(doc), end="")
    else:
        print_table(doc)
    return 0

"""The savings ledger: per policy per hour, what its fleet cost, what the same capacity
would have cost on-demand, its capacity-hours by market and its interruptions — rolled
up from the decisions, actions and interruptions rows (pure: rows in, rows out).

How an hour is priced: a decision's plan is in force from its time until the next
decision of the policy (dry-run and infeasible decisions change nothing that runs, so
they are skipped). Each hour's cost is the sum over the plans in force of
``cost_per_hour x the hours it was in force within the hour``; the on-demand
equivalent and the capacity-hours likewise. The hour in progress is covered up to
``now`` (``covered_hours`` < 1) and rolled up again on the next run. Interruptions are
the warnings and unannounced stops noticed in the hour; replacements the notices whose
replacements were launched in it; launches and terminations count instances.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

from spotfleet_operator.store import tables

HOUR = dt.timedelta(hours=1)
Q = Decimal("0.000001")  # money and unit-hours: 6 decimals
SKIPPED_OUTCOMES = frozenset({"Infeasible"})
INTERRUPTION_KINDS = frozenset({"warning", "state-change"})


def hour_of(t: dt.datetime) -> dt.datetime:
    """The start of ``t``'s hour, UTC."""
    t = t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC)
    return t.replace(minute=0, second=0, microsecond=0)


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _dec(text: str | None) -> Decimal:
    try:
        return Decimal(text) if text else Decimal(0)
    except ArithmeticError:
        return Decimal(0)


def text(d: Decimal) -> str:
    """A decimal as the ledger stores it (6 decimals, no exponent)."""
    return format(d.quantize(Q), "f")


def counts(row: tables.DecisionRecord) -> bool:
    """Whether a decision changes what runs (and so what the ledger prices)."""
    return not row.dry_run and row.outcome not in SKIPPED_OUTCOMES


def rollup(
    namespace: str,
    policy: str,
    policy_uid: str,
    decisions: Sequence[tables.DecisionRecord],
    in_force: tables.DecisionRecord | None,
    actions: Sequence[tables.ActionRecord],
    interruptions: Sequence[tables.InterruptionRecord],
    start: dt.datetime,
    now: dt.datetime,
) -> list[tables.SavingsLedgerRow]:
    """Ledger rows of every hour from ``start``'s hour to ``now``'s (the last partial).

    ``decisions`` are the policy's decisions in [start hour, now), oldest first;
    ``in_force`` the last one before that (None: the policy started within the span)."""
    first_hour, now = hour_of(start), _utc(now)
    plans = [d for d in ([in_force] if in_force is not None else []) + list(decisions) if d]
    plans = [d for d in plans if counts(d)]
    # (from, to, decision): when each plan was in force
    spans: list[tuple[dt.datetime, dt.datetime, tables.DecisionRecord]] = []
    for i, d in enumerate(plans):
        end = _utc(plans[i + 1].at) if i + 1 < len(plans) else now
        spans.append((_utc(d.at), end, d))
    out: list[tables.SavingsLedgerRow] = []
    hour = first_hour
    while hour <= now:
        h_end = min(hour + HOUR, now)
        cost = od = spot_h = od_h = covered = Decimal(0)
        rate = Decimal(0)
        unit: str | None = None
        for a, b, d in spans:
            lo, hi = max(a, hour), min(b, h_end)
            if hi <= lo:
                continue
            hours = Decimal((hi - lo).total_seconds()) / Decimal(3600)
            covered += hours
            cost += _dec(d.cost_per_hour) * hours
            od += _dec(d.on_demand_equivalent_per_hour) * hours
            spot_h += _dec(d.capacity_spot) * hours
            od_h += _dec(d.capacity_on_demand) * hours
            rate = _dec(d.cost_per_hour)
            unit = d.unit or unit
        in_hour = [x for x in interruptions if hour <= _utc(x.notice_at) < hour + HOUR]
        replaced = [
            x
            for x in interruptions
            if x.replaced_at is not None and hour <= _utc(x.replaced_at) < hour + HOUR
        ]
        acts = [x for x in actions if hour <= _utc(x.at) < hour + HOUR]
        if covered or in_hour or replaced or acts:
            out.append(
                tables.SavingsLedgerRow(
                    namespace=namespace,
                    policy=policy,
                    policy_uid=policy_uid,
                    hour=hour,
                    covered_hours=text(covered),
                    cost=text(cost),
                    on_demand_equivalent=text(od),
                    savings=text(od.quantize(Q) - cost.quantize(Q)),
                    unit=unit,
                    capacity_hours_spot=text(spot_h),
                    capacity_hours_on_demand=text(od_h),
                    interruptions=sum(1 for x in in_hour if x.kind in INTERRUPTION_KINDS),
                    replacements=len(replaced),
                    launches=sum(len(x.instance_ids or []) for x in acts if x.kind == "launch"),
                    terminations=sum(
                        len(x.instance_ids or []) for x in acts if x.kind == "terminate"
                    ),
                    rate_per_hour=text(rate),
                    rolled_up_at=now,
                )
            )
        hour += HOUR
    return out

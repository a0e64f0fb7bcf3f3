"""The rows the pipeline hands to the store: the plan of a decision, one row per EC2
launch or terminate call, one per interruption notice (written again when its
replacement launches and when the replacement runs).

Every function here only builds rows and submits them to ``deps.audit`` (the store's
writer queue, which never blocks); nothing waits for the database and nothing here can
fail a reconcile: a row that cannot be built is logged and skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from spotfleet_engine import model
from spotfleet_engine import plan as plan_mod
from spotfleet_operator import figures, state
from spotfleet_operator.aws import port
from spotfleet_operator.aws import queue as queue_mod
from spotfleet_operator.pipeline import AuditSink, Ctx
from spotfleet_operator.store import tables

log = logging.getLogger("spotfleet.audit")

#: An interruption whose replacement never showed up is written as it is after this long.
SETTLE_AFTER = dt.timedelta(hours=1)

KIND = {
    queue_mod.INTERRUPTION: "warning",
    queue_mod.REBALANCE: "rebalance",
    queue_mod.STATE_CHANGE: "state-change",
}


def decision_fields(plan: plan_mod.Plan) -> dict[str, Any]:
    """The plan and its explanation as JSON, and its capacity by market."""
    return {
        "plan": {
            "outcome": plan.outcome,
            "unit": plan.unit.value,
            "target": plan.target,
            "targets": {p.key(): n for p, n in sorted(plan.targets.items()) if n > 0},
            "launches": [a.to_dict() for a in plan.launches],
            "terminations": [t.to_dict() for t in plan.terminations],
            "costPerHour": figures.price(plan.cost_per_hour),
            "expectedCostPerHour": figures.price(plan.expected_cost_per_hour),
            "onDemandEquivalentPerHour": figures.price(plan.on_demand_equivalent_per_hour),
            "capacityByMarket": {
                m.value: figures.amount(v) for m, v in sorted(plan.capacity_by_market.items())
            },
            "binding": plan.binding.value if plan.binding is not None else None,
            "bindingConstraint": plan.binding_constraint,
        },
        "explanation": plan.explanation.to_dict(),
        "unit": plan.unit.value,
        "capacity_spot": figures.amount(plan.capacity_by_market.get(model.Market.SPOT, 0.0)),
        "capacity_on_demand": figures.amount(
            plan.capacity_by_market.get(model.Market.ON_DEMAND, 0.0)
        ),
    }


def _submit(sink: AuditSink | None, row: Any) -> None:
    if sink is not None:
        sink.submit(row)


def launch(
    ctx: Ctx,
    pool: model.Pool,
    count: int,
    token: str,
    result: port.LaunchResult | None,
    error_code: str | None,
    seconds: float,
) -> None:
    """One CreateFleet call: what was asked, what came back (or the error it raised)."""
    got = tuple(result.instance_ids) if result is not None else ()
    errs = tuple(result.errors) if result is not None else ()
    if error_code is not None:
        outcome = "error"
    elif errs and got:
        outcome = "partial"
    elif errs or not got:
        outcome = "failed"
    else:
        outcome = "ok" if len(got) >= count else "partial"
    _submit(
        ctx.deps.audit,
        tables.ActionRecord(
            at=ctx.now,
            namespace=ctx.namespace,
            policy=ctx.name,
            policy_uid=ctx.uid,
            kind="launch",
            pool=pool.key(),
            count_requested=count,
            instance_ids=list(got),
            request_id=(result.request_id or None) if result is not None else None,
            client_token=token,
            outcome=outcome,
            error_code=error_code or (errs[0].code if errs else None),
            duration_seconds=round(seconds, 6),
        ),
    )


def terminate(
    ctx: Ctx,
    terminations: Sequence[plan_mod.Terminate],
    done: Sequence[str] | None,
    error_code: str | None,
    seconds: float,
    request_id: str = "",
) -> None:
    """One terminate call of the port (TerminateInstances, in batches; ``request_id``
    the AWS request ids of the batches' answers, comma separated)."""
    ids = [t.instance_id for t in terminations]
    pools = {t.pool.key() for t in terminations}
    _submit(
        ctx.deps.audit,
        tables.ActionRecord(
            at=ctx.now,
            namespace=ctx.namespace,
            policy=ctx.name,
            policy_uid=ctx.uid,
            kind="terminate",
            pool=next(iter(pools)) if len(pools) == 1 else None,
            count_requested=len(ids),
            instance_ids=list(done) if done is not None else [],
            request_id=request_id or None,
            outcome="error" if error_code is not None else "ok",
            error_code=error_code,
            duration_seconds=round(seconds, 6),
            reason=",".join(sorted({t.reason for t in terminations})) or None,
        ),
    )


def event_time(body: object) -> dt.datetime | None:
    """The ``time`` of an EventBridge event body (None when absent or unreadable)."""
    try:
        ev = json.loads(body) if isinstance(body, str) else body
        text = ev.get("time") if isinstance(ev, Mapping) else None
        if not isinstance(text, str):
            return None
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    except (ValueError, TypeError, RecursionError):
        return None


def interruption(
    sink: AuditSink | None,
    ps: state.PolicyState,
    owned: port.OwnedInstance,
    notice: queue_mod.Notice,
    notice_at: dt.datetime,
    now: dt.datetime,
) -> None:
    """A notice about an owned instance: written now, kept on the policy until its
    replacement runs (:func:`settle`)."""
    ns, name = ps.ref.split("/", 1)
    kind = KIND.get(notice.kind, "state-change")
    earlier = ps.interruptions.get(notice.instance_id)
    if earlier is not None and earlier.kind == kind:
        return  # the same notice again (the queue delivers at least once)
    row = tables.InterruptionRecord(
        id=f"{notice.instance_id}/{kind}/{notice_at.strftime('%Y%m%dT%H%M%S.%fZ')}",
        at=now,
        namespace=ns,
        policy=name,
        policy_uid=ps.uid,
        instance_id=notice.instance_id,
        pool=owned.pool.key(),
        kind=kind,
        notice_at=notice_at,
    )
    ps.interruptions[notice.instance_id] = row
    _submit(sink, row)


def _copy(row: tables.InterruptionRecord, **update: Any) -> tables.InterruptionRecord:
    """A new row object with the same fields and ``update`` (the one submitted before may
    still wait in the writer's queue: it is never changed)."""
    fields = {name: getattr(row, name) for name in tables.InterruptionRecord.model_fields}
    return tables.InterruptionRecord(**{**fields, **update})


def replacements_launched(ctx: Ctx, new_ids: Sequence[str]) -> None:
    """Instances launched while notices wait for a replacement replace them (shared out
    over the waiting notices, oldest first)."""
    waiting = [r for r in ctx.ps.interruptions.values() if not r.replacement_ids]
    if not new_ids or not waiting:
        return
    waiting.sort(key=lambda r: r.notice_at)
    shares: list[list[str]] = [[] for _ in waiting]
    for i, iid in enumerate(new_ids):
        shares[i % len(waiting)].append(iid)
    for row, ids in zip(waiting, shares, strict=True):
        if not ids:
            continue
        row = _copy(row, replacement_ids=ids, replaced_at=ctx.now)
        ctx.ps.interruptions[row.instance_id] = row
        _submit(ctx.deps.audit, row)


def settle(ctx: Ctx, instances: Sequence[port.OwnedInstance]) -> None:
    """Notices whose replacements all run now are written with the time it took; a
    notice still without a running replacement after :data:`SETTLE_AFTER` is let go."""
    if not ctx.ps.interruptions:
        return
    running = {o.instance_id for o in instances if o.state == "running"}
    for iid, row in list(ctx.ps.interruptions.items()):
        if row.replacement_ids and set(row.replacement_ids) <= running:
            done = _copy(
                row,
                running_at=ctx.now,
                time_to_replace_seconds=round((ctx.now - row.notice_at).total_seconds(), 3),
            )
            _submit(ctx.deps.audit, done)
            del ctx.ps.interruptions[iid]
        elif ctx.now - row.at > SETTLE_AFTER:
            del ctx.ps.interruptions[iid]

"""The report step, pure: (what was observed, what was done, the previous status) ->
the whole new ``SpotPolicy.status``, the Events worth posting, and the figures the
metrics export.

Every condition is computed for the generation it reports, or set ``Unknown`` with
reason ``NotObserved`` and the reason it could not be computed; ``observedGeneration``
moves with them, so nothing claims a spec the operator has not acted on. ``Ready`` is
derived from the other conditions in one place (:func:`derive_ready`). Events are
posted only when something changed: a new plan, an action, a new error (by its
identity, never its message), a new shortage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import explain, model
from spotfleet_engine import market as market_mod
from spotfleet_engine import plan as plan_mod
from spotfleet_operator import failures
from spotfleet_operator import figures as fig
from spotfleet_operator.api import conditions as cond
from spotfleet_operator.api import spec as spec_model
from spotfleet_operator.aws import port

SPOT, ON_DEMAND = model.Market.SPOT, model.Market.ON_DEMAND


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the policy (reason CamelCase)."""

    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What the observe step saw (None: not reached this reconcile)."""

    generation: int | None
    spec: spec_model.SpotPolicySpec | None = None
    credentials: str | None = None  # where they came from, once resolved
    instances: Sequence[port.OwnedInstance] | None = None
    catalog: catalog_mod.Catalog | None = None
    market: market_mod.MarketSnapshot | None = None
    doomed: frozenset[str] = frozenset()
    #: the region's avoided pools, until when (the status records this policy's share)
    avoided: Mapping[model.Pool, dt.datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Acted:
    """What the decide and act steps did."""

    plan: plan_mod.Plan | None = None
    launched: Sequence[tuple[model.Pool, int]] = ()
    terminated: Sequence[plan_mod.Terminate] = ()
    #: terminations held back until the replacements run (launch before terminate)
    deferred: int = 0
    #: pools that answered a capacity or quota error this reconcile -> (code, avoided until)
    avoided: Mapping[model.Pool, tuple[str, dt.datetime]] = field(default_factory=dict)
    failure: failures.Failure | None = None
    consecutive_failures: int = 0
    retry_in: float | None = None
    replacements: Sequence[dt.datetime] = ()


@dataclass
class Report:
    status: dict[str, Any]
    events: list[Event]
    figures: fig.Figures | None  # None: the fleet was not observed


class _Conditions:
    def __init__(self, previous: Sequence[Any], generation: int | None, now: dt.datetime):
        self.items: list[Any] = list(previous)
        self.generation = generation
        self.now = now

    def set(self, type_: str, status: str, reason: str, message: str) -> None:
        self.items = cond.set_condition(
            self.items, type_, status, reason, message, self.generation, self.now
        )

    def get(self, type_: str) -> Any:
        return cond.get_condition(self.items, type_)


def derive_ready(
    conditions: Sequence[Any], *, suspended: bool, dry_run: bool
) -> tuple[str, str, str]:
    """(status, reason, message) of Ready from the other conditions: the one place the
    rule lives. False when suspended, the credentials are invalid, the policy is
    degraded or capacity is not fulfilled; Unknown when one of them is unknown; else
    True (reason DryRun for a dry-run policy)."""
    if suspended:
        return cond.FALSE, cond.SUSPENDED, "reconciliation is suspended"
    cv = cond.get_condition(conditions, cond.CREDENTIALS_VALID)
    dg = cond.get_condition(conditions, cond.DEGRADED)
    cf = cond.get_condition(conditions, cond.CAPACITY_FULFILLED)
    for c, bad in ((cv, cond.FALSE), (dg, cond.TRUE), (cf, cond.FALSE)):
        if c is not None and c.status == bad:
            return cond.FALSE, c.reason, c.message
    for c in (cv, dg, cf):
        if c is None:
            return cond.UNKNOWN, cond.NOT_OBSERVED, "not determined yet"
        if c.status == cond.UNKNOWN:
            return cond.UNKNOWN, c.reason, c.message
    assert cf is not None
    if dry_run:
        return cond.TRUE, cond.DRY_RUN, "dryRun: " + cf.message
    return cond.TRUE, cond.RECONCILED, cf.message


#: The condition reason of each binding kind of a plan that cannot meet the target.
BINDING_REASONS: dict[explain.Binding, str] = {
    explain.Binding.BUDGET: cond.BUDGET_EXCEEDED,
    explain.Binding.NO_ELIGIBLE_POOLS: cond.NO_ELIGIBLE_POOLS,
    explain.Binding.MAX_PRICE: cond.NO_ELIGIBLE_POOLS,
    explain.Binding.CAPACITY: cond.INSUFFICIENT_CAPACITY,
    explain.Binding.INVALID_POLICY: cond.INVALID_SPEC,
    explain.Binding.DIVERSIFICATION: cond.INSUFFICIENT_CAPACITY,
    explain.Binding.ON_DEMAND: cond.INSUFFICIENT_CAPACITY,
    explain.Binding.CHURN: cond.REBALANCING,
}


def _binding_reason(plan: plan_mod.Plan) -> str:
    """The condition reason of a plan that cannot meet the target: from its typed binding
    kind, never its prose."""
    if plan.binding is None:
        return cond.INSUFFICIENT_CAPACITY
    return BINDING_REASONS[plan.binding]


def _previous_error(previous: Mapping[str, Any]) -> tuple[str, str]:
    last = previous.get("lastError") or {}
    return (str(last.get("reason") or ""), str(last.get("code") or last.get("reason") or ""))


def report(
    observed: Observed,
    acted: Acted,
    previous: Mapping[str, Any],
    now: dt.datetime,
    failures_before_degraded: int = 3,
) -> Report:
    """The new status (every field this reconcile owns), the Events and the figures."""
    spec = observed.spec
    gen = observed.generation
    c = _Conditions(list(previous.get("conditions") or []), gen, now)
    events: list[Event] = []
    status: dict[str, Any] = {}
    failure = acted.failure
    plan = acted.plan
    figs: fig.Figures | None = None
    last_error: dict[str, Any] | None = None
    prev_error = _previous_error(previous)

    def error(reason: str, message: str, code: str) -> None:
        nonlocal last_error
        last_error = {
            "time": fig.rfc3339(now),
            "reason": reason,
            "code": code,
            "message": message[:4000],
        }
        if (reason, code) != prev_error:
            events.append(Event("Warning", reason, message[:1024]))

    suspended = bool(spec is not None and spec.suspend)
    dry_run = bool(spec is not None and spec.dry_run)

    # ---- credentials -------------------------------------------------------------
    if failure is not None and failure.rule.credentials:
        c.set(cond.CREDENTIALS_VALID, cond.FALSE, failure.reason, failure.message)
    elif observed.credentials is not None:
        c.set(cond.CREDENTIALS_VALID, cond.TRUE, cond.CREDENTIALS_RESOLVED, observed.credentials)
    else:
        why = "reconciliation is suspended" if suspended else "credentials not resolved"
        if failure is not None:
            why = f"credentials not resolved: {failure.reason}"
        c.set(cond.CREDENTIALS_VALID, cond.UNKNOWN, cond.NOT_OBSERVED, why)

    # ---- capacity ----------------------------------------------------------------
    observed_fleet = (
        spec is not None
        and observed.instances is not None
        and observed.catalog is not None
        and not suspended
    )
    if observed_fleet:
        assert spec is not None and observed.instances is not None and observed.catalog is not None
        figs, allocation, biggest = fig.of_fleet(
            spec, observed.instances, observed.catalog, observed.market, plan
        )
        unit = spec.capacity.unit
        total = sum(figs.fulfilled.values())
        doomed_units = fig.units_of(
            spec,
            observed.catalog,
            [o.pool for o in observed.instances if o.instance_id in observed.doomed],
        )
        effective = total - doomed_units
        target = figs.target
        extra = (
            f" ({fig.amount(doomed_units)} {unit} under interruption notice)"
            if doomed_units
            else ""
        )
        shown = f"{fig.amount(effective)}/{fig.amount(target)} {unit}{extra}"
        if dry_run:
            held = plan.capacity if plan is not None else 0.0
            ok = plan is not None and held + 1e-9 >= target
            c.set(
                cond.CAPACITY_FULFILLED,
                cond.TRUE if ok else cond.FALSE,
                cond.DRY_RUN if ok else _binding_reason(plan) if plan else cond.NOT_OBSERVED,
                f"dryRun: the plan holds {fig.amount(held)}/{fig.amount(target)} {unit}",
            )
        elif effective + 1e-9 < target:
            if acted.launched and not acted.avoided:
                reason = cond.LAUNCHING
            elif failure is not None and failure.kind is failures.Kind.QUOTA_EXCEEDED:
                reason = cond.QUOTA_EXCEEDED
            elif plan is not None and plan.outcome in ("Degraded", "Infeasible"):
                reason = _binding_reason(plan)
            elif acted.avoided:
                reason = cond.INSUFFICIENT_CAPACITY
            elif failure is not None:
                reason = failure.reason
            else:
                reason = cond.LAUNCHING
            if reason == cond.QUOTA_EXCEEDED and failure is not None:
                short: str | None = failure.message
            else:
                short = plan.binding_constraint if plan is not None else None
            c.set(
                cond.CAPACITY_FULFILLED, cond.FALSE, reason, f"{shown}: {short}" if short else shown
            )
        elif effective > target + max(biggest, 1e-9) + 1e-9 and not (
            acted.deferred or acted.terminated or acted.launched
        ):
            why = plan.binding_constraint if plan is not None and plan.binding_constraint else ""
            c.set(
                cond.CAPACITY_FULFILLED,
                cond.FALSE,
                cond.ABOVE_TARGET,
                f"{shown}: above the target by more than one instance"
                + (f"; {why}" if why else ""),
            )
        elif plan is not None and plan.on_demand_fallback > 0 and not acted.deferred:
            c.set(
                cond.CAPACITY_FULFILLED,
                cond.TRUE,
                cond.ON_DEMAND_FALLBACK,
                f"{shown}: {fig.amount(plan.on_demand_fallback)} {unit} on-demand in place "
                "of spot (the spot pools are out of capacity); moved back to spot within "
                "maxReplacementsPerHour once they return",
            )
        else:
            reason = cond.REPLACING if acted.deferred else cond.FULFILLED
            c.set(cond.CAPACITY_FULFILLED, cond.TRUE, reason, shown)
        status["capacity"] = {
            "unit": unit,
            "fulfilled": {
                "spot": fig.amount(figs.fulfilled[SPOT]),
                "onDemand": fig.amount(figs.fulfilled[ON_DEMAND]),
                "total": fig.amount(total),
            },
            "spotPercent": round(100 * figs.fulfilled[SPOT] / total) if total else 0,
        }
        status["capacity"]["desired"] = (
            {
                "spot": fig.amount(figs.desired[SPOT]),
                "onDemand": fig.amount(figs.desired[ON_DEMAND]),
                "total": fig.amount(sum(figs.desired.values())),
            }
            if figs.desired
            else None  # no plan for this generation (a merge patch deletes it)
        )
        status["allocation"] = allocation
        status["cost"] = {
            "perHour": fig.price(figs.cost),
            "onDemandEquivalentPerHour": fig.price(figs.on_demand_equivalent),
            "savingsPercent": fig.percent(100 * figs.savings_ratio),
        }
    else:
        why = "the fleet was not observed"
        if suspended:
            why = "reconciliation is suspended: the fleet is left as it is"
        elif failure is not None:
            why = f"the fleet was not observed: {failure.reason}: {failure.message}"
        c.set(cond.CAPACITY_FULFILLED, cond.UNKNOWN, cond.NOT_OBSERVED, why[:4000])
        # what runs was observed for an earlier generation: keep it, drop the old plan
        prev_cap = dict(previous.get("capacity") or {})
        if prev_cap:
            prev_cap["desired"] = None  # a merge patch deletes it
            status["capacity"] = prev_cap

    # ---- degraded / progressing ----------------------------------------------------
    if suspended:
        c.set(cond.DEGRADED, cond.FALSE, cond.SUSPENDED, "")
        c.set(cond.PROGRESSING, cond.FALSE, cond.SUSPENDED, "spec.suspend is true: not acting")
        was = c.get(cond.READY)
        if was is None or was.reason != cond.SUSPENDED:
            events.append(
                Event(
                    "Normal", cond.SUSPENDED, "reconciliation suspended; the fleet is left as it is"
                )
            )
        if "lastError" in previous:
            last_error = previous.get("lastError")
    elif failure is not None:
        n = max(1, acted.consecutive_failures)
        degraded = failure.rule.degraded_at_once or n >= failures_before_degraded
        if degraded:
            detail = (
                failure.message
                if failure.rule.degraded_at_once
                else (f"{n} consecutive failures; last: {failure.message}")
            )
            c.set(cond.DEGRADED, cond.TRUE, failure.reason, detail[:4000])
        else:
            c.set(
                cond.DEGRADED,
                cond.FALSE,
                failure.reason,
                f"{n} failure(s) in a row (Degraded after {failures_before_degraded})",
            )
        if failure.rule.permanent or failure.rule.credentials:
            what = (
                "waiting for valid credentials"
                if failure.rule.credentials
                else "waiting for the spec or the account to change"
            )
            c.set(cond.PROGRESSING, cond.FALSE, failure.reason, what)
        else:
            when = f" in {acted.retry_in:g} s" if acted.retry_in is not None else ""
            c.set(
                cond.PROGRESSING,
                cond.TRUE,
                failure.reason,
                f"retrying{when}: {failure.message}"[:4000],
            )
        error(failure.reason, failure.message, failure.identity()[1])
    else:
        if plan is not None and plan.outcome in ("Infeasible", "Degraded"):
            reason = _binding_reason(plan)
            text = plan.binding_constraint or plan.summary()
            c.set(cond.DEGRADED, cond.TRUE, reason, text)
            error(reason, text, f"plan:{reason}")
        else:
            c.set(cond.DEGRADED, cond.FALSE, cond.AS_EXPECTED, "")
        n_launched = sum(n for _, n in acted.launched)
        if dry_run and plan is not None:
            c.set(
                cond.PROGRESSING,
                cond.FALSE,
                cond.DRY_RUN,
                "dryRun: planned, not acted: " + plan.summary(),
            )
        elif acted.launched or acted.terminated or acted.deferred:
            reason = cond.LAUNCHING if acted.launched else cond.TERMINATING
            if acted.deferred and not acted.launched:
                reason = cond.REPLACING
            msg = f"launched {n_launched}, terminated {len(acted.terminated)} this reconcile"
            if acted.deferred:
                msg += f"; {acted.deferred} to terminate once their replacements run"
            c.set(cond.PROGRESSING, cond.TRUE, reason, msg)
        else:
            c.set(cond.PROGRESSING, cond.FALSE, cond.STABLE, "the fleet matches the plan")

    ready = derive_ready(c.items, suspended=suspended, dry_run=dry_run)
    c.set(cond.READY, *ready)

    # ---- events of the actions -------------------------------------------------------
    if acted.launched:
        parts = ", ".join(f"{n} x {p.key()}" for p, n in acted.launched)
        events.append(Event("Normal", "Launched", f"launched {parts}"))
    if acted.terminated:
        by_reason: dict[str, int] = {}
        for t in acted.terminated:
            by_reason[t.reason] = by_reason.get(t.reason, 0) + 1
        events.append(
            Event(
                "Normal",
                "Terminated",
                f"terminated {len(acted.terminated)} instance(s): "
                + ", ".join(f"{n} for {r}" for r, n in sorted(by_reason.items())),
            )
        )
    if acted.avoided:
        pools = sorted(acted.avoided.items())
        listed = ", ".join(f"{p.key()} ({code})" for p, (code, _) in pools[:10])
        more = f" and {len(pools) - 10} more" if len(pools) > 10 else ""
        until = max(u for _, (_, u) in pools)
        events.append(
            Event(
                "Warning",
                cond.INSUFFICIENT_CAPACITY,
                f"{len(pools)} pool(s) could not launch: {listed}{more}; avoided until "
                f"{fig.rfc3339(until)}",
            )
        )

    # ---- the decision ------------------------------------------------------------------
    prev_decision = previous.get("lastDecision") or {}
    if plan is not None:
        if (
            prev_decision.get("planHash") != plan.plan_hash()
            or prev_decision.get("generation") != gen
        ):
            events.append(
                Event("Normal", cond.DRY_RUN if dry_run else "Planned", plan.summary()[:1024])
            )
        alternatives = [
            {
                "summary": r.pool.key(),
                "costPerHour": fig.price(r.price),
                "reason": r.reason[:1000],
            }
            for r in plan.explanation.rejected[:3]
        ]
        alternatives += [
            {"summary": p.key(), "reason": f"{code}: out of capacity, avoided"}
            for p, (code, _) in sorted(acted.avoided.items())
        ][: max(0, 10 - len(alternatives))]
        decision: dict[str, Any] = {
            "time": fig.rfc3339(now),
            "generation": gen,
            "summary": plan.summary()[:4000],
            "planHash": plan.plan_hash(),
        }
        if alternatives:
            decision["alternatives"] = alternatives
        status["lastDecision"] = decision
    elif prev_decision:
        status["lastDecision"] = prev_decision

    status["replacements"] = [fig.rfc3339(t) for t in acted.replacements] or None
    # the pools this policy found out of capacity, while the region still avoids them (so
    # a shortage rewrites only the statuses of the policies that met it)
    mine = {p for p, _ in acted.avoided.items()}
    for entry in previous.get("avoidedPools") or []:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            mine.add(model.Pool.parse(str(entry["pool"])))
    kept = sorted(
        ((p, u) for p in mine if (u := observed.avoided.get(p)) is not None),
        key=lambda kv: (kv[1], kv[0].key()),
    )[:50]
    status["avoidedPools"] = [{"pool": p.key(), "until": fig.rfc3339(u)} for p, u in kept] or None
    status["observedGeneration"] = gen
    status["conditions"] = cond.to_json(c.items)
    status["lastError"] = last_error
    return Report(status, events, figs)

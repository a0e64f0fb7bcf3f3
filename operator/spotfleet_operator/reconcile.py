"""One reconcile of one SpotPolicy: observe -> decide -> act -> report, then one write.

Every trigger (the policy's loop, a spec change, an interruption notice) comes here;
nothing else writes a policy's status. The policy's lock is held from the first
read to the status patch, so two triggers never interleave.

1. **observe** (:mod:`~spotfleet_operator.observe`, reads only): the spec, the
   credentials, the subnets, the policy's instances from the account's shared sweep,
   the region's shared market.
2. **decide** (pure, on the decision thread pool, never on the event loop):
   ``planner.decide`` with the market's risk scored once per snapshot.
3. **act** (:mod:`~spotfleet_operator.act`): launches first; terminations only once
   nothing the move launched is still pending (so capacity never drops below the
   target during a move); capacity errors mark the pools avoided and re-plan, at most
   ``max_replans`` times.
4. **report**: :func:`spotfleet_operator.status.report`, pure.

Failures are values (:mod:`spotfleet_operator.failures`); :func:`run` never raises for
anything a user or AWS can cause and returns how to retry. Level-based: the fleet is
rebuilt from EC2 ownership tags, so a restarted operator adopts what it launched and
launches nothing twice (idempotency tokens).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from spotfleet_engine import candidates, model, planner
from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import plan as plan_mod
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_operator import act, api, audit, failures, figures, observe, state
from spotfleet_operator import status as status_mod
from spotfleet_operator.api import spec as spec_model
from spotfleet_operator.aws import credentials, errors, port
from spotfleet_operator.pipeline import (
    AuditSink,
    Ctx,
    Deps,
    SecretReader,
    StatusWriter,
    Stop,
    ref_of,
)

log = logging.getLogger("spotfleet.reconcile")

#: After launching, how soon the policy looks again (to terminate what was replaced).
FOLLOW_UP_SECONDS = 10.0

__all__ = [
    "FOLLOW_UP_SECONDS",
    "AuditSink",
    "Deps",
    "Result",
    "SecretReader",
    "StatusWriter",
    "ref_of",
    "run",
]


@dataclass
class Result:
    """What one reconcile did and how to continue: ``retry`` is the Kopf error to obey
    (None: come back after the interval, or ``follow_up`` seconds when sooner)."""

    status: dict[str, Any]
    events: list[status_mod.Event]
    retry: kopf.TemporaryError | kopf.PermanentError | None = None
    plan: plan_mod.Plan | None = None
    follow_up: float | None = None
    written: bool = False
    skipped: bool = False


async def run(body: Mapping[str, Any], deps: Deps, now: dt.datetime | None = None) -> Result:
    """Reconcile one policy (``body`` as Kopf gives it) and write its status; never raises
    for user or AWS errors. Concurrent calls for one policy are serialised."""
    meta = body.get("metadata", {})
    uid = str(meta.get("uid", ""))
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    ps = deps.state.policy(uid, f"{ns}/{name}")
    limiter = deps.limiter or asyncio.Semaphore(1)
    async with limiter, ps.lock:
        now = now or dt.datetime.now(dt.UTC)
        if meta.get("deletionTimestamp"):
            # being deleted: finalize owns it now; acting could relaunch what it removes
            return Result(dict(body.get("status") or {}), [], skipped=True)
        previous = body.get("status") or {}
        if not ps.seeded:
            _recover(deps, body, previous, now)
        ps.seed(previous, now)
        ctx = Ctx(body, deps, ps, now, ns, name, uid, meta.get("generation"), previous)
        started = time.perf_counter()
        observed, acted = await _pipeline(ctx)
        rep = status_mod.report(
            observed, acted, previous, now, deps.config.failures_before_degraded
        )
        # facts the interruption drainer recorded since the last reconcile
        rep.events[:0] = [status_mod.Event(*n) for n in ps.notices]
        ps.notices.clear()
        if observed.spec is not None:
            rebalance = observed.spec.rebalance_or_default()
            ps.on_rebalance = rebalance.on_rebalance_recommendation
            ps.max_replacements = rebalance.max_replacements_per_hour
        ps.reconciled_generation = ctx.generation
        result = Result(rep.status, rep.events, plan=acted.plan)
        if acted.failure is not None:
            result.retry = failures.retry_error(acted.failure, ps.failures, deps.config)
        elif acted.deferred or acted.launched:
            result.follow_up = FOLLOW_UP_SECONDS
        result.written = await _write(ctx, rep, result)
        _export(ctx, rep, acted, time.perf_counter() - started)
        _audit(ctx, observed, acted)
        return result


def _recover(
    deps: Deps, body: Mapping[str, Any], previous: Mapping[str, Any], now: dt.datetime
) -> None:
    """After a restart: the pools the policy's status says are avoided stay avoided."""
    region = str((body.get("spec") or {}).get("region") or "")
    if not region:
        return
    for entry in previous.get("avoidedPools") or []:
        try:
            pool = model.Pool.parse(str(entry["pool"]))
            until = dt.datetime.fromisoformat(str(entry["until"]).replace("Z", "+00:00"))
        except (KeyError, ValueError, TypeError):
            continue
        if until > now:
            deps.state.region(region).unavailable.mark(pool, now, until)


async def _pipeline(ctx: Ctx) -> tuple[status_mod.Observed, status_mod.Acted]:
    """observe -> decide -> act; failures end it early as values."""
    observed = status_mod.Observed(ctx.generation)
    try:
        parsed = api.parse_policy(ctx.body)
        if isinstance(parsed, api.InvalidSpec):
            code = "InvalidSpec:" + hashlib.sha256(parsed.message.encode()).hexdigest()[:12]
            raise Stop(failures.Failure(failures.Kind.INVALID_SPEC, parsed.message, code))
        spec = parsed.spec
        observed = status_mod.Observed(ctx.generation, spec)
        if spec.suspend:
            ctx.ps.failures = 0
            return observed, status_mod.Acted(replacements=list(ctx.ps.replacements))
        creds, where = await observe.credentials_of(ctx, spec)
        observed = dataclasses.replace(observed, credentials=where)
        provider = ctx.deps.cloud(creds, spec.region)
        if spec.dry_run:
            provider = port.DryRunGuard(provider)
        try:
            observed, acted = await _observe_decide_act(ctx, spec, creds, provider, observed)
        except errors.AwsError as e:
            if e.kind is errors.ErrorClass.AUTH:
                observe.forget_credentials(ctx, spec, creds)
            raise Stop(failures.from_aws(e)) from None
        if acted.failure is None:
            ctx.ps.failures = 0
        else:
            ctx.ps.failures += 1
            acted = dataclasses.replace(
                acted,
                consecutive_failures=ctx.ps.failures,
                retry_in=_retry_in(acted.failure, ctx),
            )
        return observed, acted
    except Stop as stop:
        ctx.ps.failures += 1
        return observed, status_mod.Acted(
            failure=stop.failure,
            consecutive_failures=ctx.ps.failures,
            retry_in=_retry_in(stop.failure, ctx),
            replacements=list(ctx.ps.replacements),
        )


def _retry_in(failure: failures.Failure, ctx: Ctx) -> float | None:
    if failure.rule.permanent:
        return None
    return ctx.deps.config.retry_delay(ctx.ps.failures)


async def _observe_decide_act(
    ctx: Ctx,
    spec: spec_model.SpotPolicySpec,
    creds: credentials.TenantCredentials,
    provider: port.CloudProvider,
    observed: status_mod.Observed,
) -> tuple[status_mod.Observed, status_mod.Acted]:
    deps, now = ctx.deps, ctx.now
    view = await observe.observe(ctx, spec, creds, provider)
    acct, rs, catalog, policy, market = (
        view.acct,
        view.region,
        view.catalog,
        view.policy,
        view.market,
    )
    audit.settle(ctx, acct.sweep.instances(ctx.uid, now))  # replacements that run now
    if deps.on_observed is not None:  # the price-ingestion job learns what is in use
        deps.on_observed(creds, spec.region, policy, catalog)
    observed = dataclasses.replace(
        observed,
        instances=acct.sweep.instances(ctx.uid, now),
        catalog=catalog,
        market=market,
        doomed=ctx.ps.doomed_now(now),
    )

    # ---- decide, act, re-plan on capacity errors ---------------------------------
    risk = deps.scored(spec.region, market, catalog)
    launched: list[tuple[model.Pool, int]] = []
    terminated: list[plan_mod.Terminate] = []
    avoided: dict[model.Pool, tuple[str, dt.datetime]] = {}
    deferred = 0
    failure: failures.Failure | None = None
    plan: plan_mod.Plan | None = None
    for attempt in range(deps.config.max_replans + 1):
        instances = acct.sweep.instances(ctx.uid, now)
        doomed = ctx.ps.doomed_now(now)
        plan = await _decide(ctx, policy, catalog, market, rs, acct, instances, doomed, risk)
        if spec.dry_run or plan.outcome == "Infeasible":
            break
        step = await act.act(ctx, spec, provider, acct, plan, instances, view.subnets)
        launched += step.launched
        terminated += step.terminated
        deferred = step.deferred
        avoided.update(step.avoided)
        failure = step.failure
        if not step.avoided or failure is not None or attempt == deps.config.max_replans:
            break
    if (
        failure is None
        and plan is not None
        and not spec.dry_run
        and not avoided
        and not deferred
        and sorted(launched) == sorted((a.pool, a.count) for a in plan.launches)
    ):
        expect_carried_out(ctx, policy, catalog, market, rs, acct, plan)
    if failure is None and not launched and plan is not None and not spec.dry_run:
        # recommended instances go once the fleet without them holds the plan
        retired = await act.retire_recommended(
            ctx, provider, acct, plan, acct.sweep.instances(ctx.uid, now)
        )
        terminated += retired
    active = rs.unavailable.active(now)
    observed = dataclasses.replace(
        observed,
        instances=acct.sweep.instances(ctx.uid, now),
        doomed=ctx.ps.doomed_now(now),
        avoided={p: u for p in active if (u := rs.unavailable.until(p)) is not None},
    )
    held = acct.quota_held(now)
    refused_now = any(
        errors.classify_code(code) is errors.ErrorClass.QUOTA for code, _ in avoided.values()
    )
    short = plan is not None and (refused_now or plan.capacity + 1e-9 < plan.target)
    if failure is None and held and short:
        # the account's quota stops the fleet short: say so, and try again when the
        # hold ends (backoff doubling per refusal), not on every reconcile
        codes = sorted({code for _, code in held.values()})
        until = min(u for u, _ in held.values())
        markets = ", ".join(sorted(m.value for m in held))
        failure = failures.Failure(
            failures.Kind.QUOTA_EXCEEDED,
            f"{'/'.join(codes)}: the account's quota refuses more {markets} instances; "
            f"holding what runs, trying again after {until.isoformat(timespec='seconds')}",
            f"CreateFleet:{'/'.join(codes)}",
        )
    return observed, status_mod.Acted(
        plan=plan,
        launched=launched,
        terminated=terminated,
        deferred=deferred,
        avoided=avoided,
        failure=failure,
        replacements=list(ctx.ps.replacements),
    )


async def _decide(
    ctx: Ctx,
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    rs: state.RegionState,
    acct: state.AccountState,
    instances: Sequence[port.OwnedInstance],
    doomed: frozenset[str],
    risk: risk_protocol.RiskModel,
) -> plan_mod.Plan:
    """planner.decide on the decision pool (the MILP never runs on the event loop).

    ``decide`` is pure: when nothing it reads changed since the policy's last decision —
    the prices, advisor entries and placement scores of the pools it may use or runs in,
    avoided pools, penalties, fleet, churn budget and spec — and that decision is younger
    than ``decision_reuse_seconds``, the same plan is the answer and it is reused
    instead of solved again. A price change in another market (thousands of pools
    change every day) does not make a policy solve again at once; it reaches the plan
    within ``decision_reuse_seconds`` through the risk model's zone and family features.
    After a launch-only plan went through in full (:func:`expect_carried_out`), a fleet
    holding exactly its targets gets ``Plan.carried_out`` without a new solve."""
    fleet = model.Fleet(
        instances=tuple(
            model.FleetInstance(o.instance_id, o.pool, o.launched_at)
            for o in instances
            if o.instance_id not in doomed
        ),
        replacements_last_hour=ctx.ps.replacements_last_hour(ctx.now),
    )
    key, unavailable, penalties = _decision_key(
        ctx, policy, catalog, market, rs, acct, fleet.count_by_pool(), fleet
    )
    last = ctx.ps.last_decision
    reuse = dt.timedelta(seconds=ctx.deps.config.decision_reuse_seconds)
    if (
        last is not None
        and last.catalog is catalog
        and ctx.now - last.at < reuse
        and last.key == key
        and (last.instances is None or last.instances == fleet.instances)
    ):
        ctx.deps.metrics.decisions_reused.inc()
        return last.plan
    snap = market.with_view(unavailable, penalties)
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    plan = await loop.run_in_executor(
        ctx.deps.decide_pool, planner.decide, policy, catalog, snap, fleet, risk, ctx.now
    )
    ctx.deps.metrics.decision_duration.observe(time.perf_counter() - t0)
    acts = plan.launches or plan.terminations
    ctx.ps.last_decision = state.Decision(
        catalog, key, fleet.instances if acts else None, plan, ctx.now
    )
    return plan


def _decision_key(
    ctx: Ctx,
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    rs: state.RegionState,
    acct: state.AccountState,
    counts: Mapping[model.Pool, int],
    fleet: model.Fleet,
) -> tuple[tuple[Any, ...], frozenset[model.Pool], dict[model.Pool, float]]:
    """What a decision for a fleet of ``counts`` (pool -> instances) reads, as a value
    to compare (see :class:`state.Decision`), with the avoided pools and the penalties
    the planner's market view needs. ``fleet`` gives only the churn budget used."""
    unavailable = rs.unavailable.active(ctx.now) | quota_pools(
        acct.quota_held(ctx.now), policy, market, catalog
    )
    # the penalty steers new capacity away from recently interrupted pools; it never
    # moves what already runs (an interruption terminates nothing else)
    penalties = {p: v for p, v in rs.penalties.at(ctx.now).items() if p not in counts}
    prices = market.inputs_for(candidates.eligible_types(policy, catalog))
    held = tuple(sorted((p.key(), market.history(p.instance_type, p.zone)) for p in counts))
    key = (
        policy,
        unavailable,
        tuple(sorted(counts.items())),
        fleet.replacements_last_hour,
        frozenset(penalties.items()),
        prices,
        held,
    )
    return key, unavailable, penalties


def expect_carried_out(
    ctx: Ctx,
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    rs: state.RegionState,
    acct: state.AccountState,
    plan: plan_mod.Plan,
) -> None:
    """Record that ``plan``, every launch of it done, was carried out: when
    ``plan.carried_out()`` knows the next decision (a plan that launches a whole fleet;
    a property test in the engine holds the planner to it), a fleet holding exactly the
    targets with nothing else changed gets it, so the reconcile that first sees the new
    instances does not solve again. Keeps the original decision's time, so the reuse
    window does not grow."""
    last = ctx.ps.last_decision
    done = plan.carried_out()
    if last is None or last.plan is not plan or done is None:
        return
    fleet = model.Fleet(replacements_last_hour=ctx.ps.replacements_last_hour(ctx.now))
    key, _, _ = _decision_key(ctx, policy, catalog, market, rs, acct, plan.targets, fleet)
    ctx.ps.last_decision = state.Decision(catalog, key, None, done, last.at)


def quota_pools(
    held: Mapping[model.Market, Any],
    policy: model.Policy,
    market: market_mod.MarketSnapshot,
    catalog: catalog_mod.Catalog,
) -> frozenset[model.Pool]:
    """Every pool ``policy`` could use in the markets an account quota holds (they keep
    what runs and do not grow, like pools out of capacity)."""
    if not held:
        return frozenset()
    spot = [p for p, _ in market.spot_pools()]
    pools: set[model.Pool] = set()
    if model.Market.SPOT in held:
        pools.update(spot)
    if model.Market.ON_DEMAND in held:
        zones: dict[str, list[str]] = {}
        for p in spot:
            zones.setdefault(p.instance_type, []).append(p.zone)
        types = candidates.eligible_types(policy, catalog)
        pools.update(candidates.on_demand_pools(policy, catalog, types, zones))
    return frozenset(pools)


def _comparable(s: Mapping[str, Any]) -> dict[str, Any]:
    """A status without the fields that change on every write, for change detection."""
    out = {k: v for k, v in s.items() if v is not None}
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in out.get("conditions") or []
    ]
    dec = dict(out.get("lastDecision") or {})
    dec.pop("time", None)
    out["lastDecision"] = dec
    err = dict(out.get("lastError") or {})
    err.pop("time", None)
    out["lastError"] = err or None
    if isinstance(out.get("capacity"), dict):
        out["capacity"] = {k: v for k, v in out["capacity"].items() if v is not None}
    return out


async def _write(ctx: Ctx, rep: status_mod.Report, result: Result) -> bool:
    """One status patch when the status changed, then the Events; under the lock."""
    new, old = rep.status, ctx.previous
    if _comparable(new) != _comparable(old):
        prev_time = (old.get("lastDecision") or {}).get("time")
        dec = new.get("lastDecision")
        if (
            dec
            and prev_time
            and (old.get("lastDecision") or {}).get("planHash") == dec.get("planHash")
        ):
            dec["time"] = prev_time  # the same decision, made again: keep when it was first made
        try:
            await ctx.deps.writer.patch_status(ctx.namespace, ctx.name, new)
        except Exception as e:
            log.warning("status of %s/%s not written: %s", ctx.namespace, ctx.name, e)
            if result.retry is None:
                result.retry = kopf.TemporaryError(
                    f"status not written: {e}", delay=ctx.deps.config.retry_delay(1)
                )
            return False
        written = True
    else:
        written = False
    ref = ref_of(ctx.body)
    for ev in rep.events:
        try:
            await ctx.deps.writer.post_event(ref, ev.type, ev.reason, ev.message)
        except Exception as exc:  # an Event is best effort
            log.warning("event %s on %s/%s not posted: %s", ev.reason, ctx.namespace, ctx.name, exc)
    return written


def _export(ctx: Ctx, rep: status_mod.Report, acted: status_mod.Acted, seconds: float) -> None:
    m = ctx.deps.metrics
    outcome = acted.plan.outcome if acted.plan is not None else "stopped"
    m.reconcile_duration.labels(outcome).observe(seconds)
    ns, nm = ctx.namespace, ctx.name
    if acted.failure is not None:
        m.reconcile_errors.labels(ns, nm, acted.failure.reason).inc()
    for pool, n in acted.launched:
        m.launches.labels(ns, nm, pool.market.value).inc(n)
    for t in acted.terminated:
        m.terminations.labels(ns, nm, t.reason).inc()
    if acted.plan is not None:
        for chosen in acted.plan.explanation.chosen:
            m.risk.labels(ctx.deps.risk.name).observe(chosen.risk)
    figs = rep.figures
    if figs is None:
        return
    m.cost.labels(ns, nm).set(figs.cost)
    m.on_demand_equivalent.labels(ns, nm).set(figs.on_demand_equivalent)
    m.savings.labels(ns, nm).set(figs.savings_ratio)
    m.capacity_target.labels(ns, nm).set(figs.target)
    for mk in (model.Market.SPOT, model.Market.ON_DEMAND):
        m.capacity_desired.labels(ns, nm, mk.value).set(figs.desired.get(mk, 0.0))
        m.capacity_fulfilled.labels(ns, nm, mk.value).set(figs.fulfilled.get(mk, 0.0))
    now_pools = {(p.market.value, p.instance_type, p.zone) for p in figs.instances}
    for gone in ctx.ps.metric_pools - now_pools:
        m.instances.remove(ns, nm, *gone)
    for p, n in figs.instances.items():
        m.instances.labels(ns, nm, p.market.value, p.instance_type, p.zone).set(n)
    ctx.ps.metric_pools = now_pools
    m.unavailable_pools.set(
        sum(len(r.unavailable.active(ctx.now)) for r in ctx.deps.state.regions.values())
    )


def _audit(ctx: Ctx, observed: status_mod.Observed, acted: status_mod.Acted) -> None:
    """Queue the decision for the audit store when it changed or acted (never blocks)."""
    deps, plan = ctx.deps, acted.plan
    if deps.audit is None or deps.record is None or plan is None:
        return
    prev_hash = (ctx.previous.get("lastDecision") or {}).get("planHash")
    n_launched = sum(n for _, n in acted.launched)
    if prev_hash == plan.plan_hash() and not n_launched and not acted.terminated:
        return
    deps.audit.submit(
        deps.record(
            at=ctx.now,
            namespace=ctx.namespace,
            policy=ctx.name,
            policy_uid=ctx.uid,
            generation=ctx.generation or 0,
            outcome=plan.outcome,
            plan_hash=plan.plan_hash(),
            summary=plan.summary()[:4000],
            cost_per_hour=figures.price(plan.cost_per_hour),
            on_demand_equivalent_per_hour=figures.price(plan.on_demand_equivalent_per_hour),
            savings_pct=figures.percent(plan.savings_pct),
            launches=n_launched,
            terminations=len(acted.terminated),
            dry_run=bool(observed.spec is not None and observed.spec.dry_run),
            **audit.decision_fields(plan),
        )
    )

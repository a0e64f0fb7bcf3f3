"""One reconcile of one SpotPolicy: observe -> decide -> act -> report.

:func:`run` never raises for anything the user or AWS can cause: every outcome
(invalid spec, bad credentials, capacity errors, throttling, outages) ends as
status conditions, ``lastError`` and Events in the returned :class:`Result`.
The handler layer writes ``Result.status`` once and posts ``Result.events``.

Level-based: the fleet is rebuilt from EC2 ownership tags every time, so a
restarted operator adopts what it launched and launches nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import model, planner
from spotfleet_engine import plan as plan_mod
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_operator import api, config, marketdata, metrics
from spotfleet_operator import store as store_mod
from spotfleet_operator.api import conditions as cond
from spotfleet_operator.api import spec as spec_model
from spotfleet_operator.aws import credentials, ec2, errors

log = logging.getLogger("spotfleet.reconcile")

#: How many times one reconcile re-plans after capacity errors before reporting.
MAX_REPLANS = 3


class SecretReader(Protocol):
    """Reads a Secret's decoded data from the POLICY'S OWN namespace (None: absent)."""

    async def read(self, namespace: str, name: str) -> dict[str, str] | None: ...


class Ec2Api(Protocol):
    """What reconcile and finalize need from EC2 (the real adapter or a fake)."""

    async def owned_instances(self, policy_uid: str | None = None) -> list[ec2.OwnedInstance]: ...

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> Sequence[ec2.PricePoint]: ...

    async def ensure_launch_template(
        self, policy_uid: str, spec: ec2.LaunchSpec, tags: dict[str, str]
    ) -> str: ...

    async def launch(
        self,
        pool: model.Pool,
        count: int,
        template: str,
        token: str,
        tags: dict[str, str],
        subnet_id: str | None = None,
        template_version: str | None = None,
    ) -> ec2.LaunchResult: ...

    async def terminate(self, instance_ids: Sequence[str]) -> list[str]: ...

    async def subnets_by_zone(
        self, subnet_ids: Sequence[str] = (), tags: dict[str, str] | None = None
    ) -> dict[str, str]: ...

    async def untag(self, instances: Sequence[ec2.OwnedInstance]) -> None: ...

    async def delete_launch_template(self, policy_uid: str) -> bool: ...


Ec2Factory = Callable[[credentials.TenantCredentials, str], Ec2Api]


@dataclass
class Deps:
    """Everything reconcile needs, wired once at start-up (kept in Kopf's memo)."""

    config: config.OperatorConfig
    ec2_factory: Ec2Factory
    secrets: SecretReader
    risk: risk_protocol.RiskModel
    metrics: metrics.Metrics
    catalog_for: Callable[[str], catalog_mod.Catalog] = catalog_mod.load_bundled
    store: store_mod.Store | None = None
    markets: dict[str, marketdata.MarketCache] = field(default_factory=dict)
    unavailable: dict[str, marketdata.UnavailablePools] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    replacements: dict[str, list[dt.datetime]] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    #: instance id -> until when it is treated as gone (interruption warning or
    #: rebalance recommendation received): replacements launch before it dies.
    doomed: dict[str, dt.datetime] = field(default_factory=dict)
    #: UIDs of every SpotPolicy that exists (None: orphan detection off).
    live_policy_uids: Callable[[], Awaitable[set[str]]] | None = None
    orphan_scan_every: dt.timedelta = dt.timedelta(minutes=5)
    #: (tenant, region) -> last orphan scan, and the orphans it found (instance id -> ref)
    orphan_scans: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    orphans: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def market(self, region: str) -> marketdata.MarketCache:
        if region not in self.markets:
            self.markets[region] = marketdata.MarketCache(
                region=region,
                lookback=dt.timedelta(hours=self.config.market_lookback_hours),
                max_age=dt.timedelta(seconds=self.config.market_cache_seconds),
            )
        return self.markets[region]

    def unavailable_pools(self, region: str) -> marketdata.UnavailablePools:
        if region not in self.unavailable:
            self.unavailable[region] = marketdata.UnavailablePools(
                ttl=dt.timedelta(seconds=self.config.unavailable_pool_ttl_seconds)
            )
        return self.unavailable[region]

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the policy (reason CamelCase)."""

    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass
class Result:
    """What one reconcile produced: the whole new status, Events, and when to retry."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    plan: plan_mod.Plan | None = None
    mutating_calls: int = 0


class _Stop(Exception):
    """Internal: end the reconcile early with the conditions already set."""


@dataclass
class _Ctx:
    body: Mapping[str, Any]
    deps: Deps
    now: dt.datetime
    namespace: str
    name: str
    uid: str
    generation: int | None
    previous: Mapping[str, Any]
    conditions: list[Any]
    events: list[Event] = field(default_factory=list)
    last_error: dict[str, Any] | None = None
    requeue_after: float | None = None
    mutating_calls: int = 0

    def set(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = cond.set_condition(
            self.conditions, type_, status, reason, message, self.generation, self.now
        )

    def error(self, reason: str, message: str) -> None:
        self.last_error = {"time": _rfc3339(self.now), "reason": reason, "message": message[:4000]}

    def warn(self, reason: str, message: str) -> None:
        self.events.append(Event("Warning", reason, message))

    def info(self, reason: str, message: str) -> None:
        self.events.append(Event("Normal", reason, message))


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _price(value: float) -> str:
    """USD amount as a CRD price string (up to 6 decimals, at least 2)."""
    return plan_mod.money(max(value, 0.0))


def _amount(value: float) -> str:
    q = Decimal(str(round(max(value, 0.0), 3))).normalize()
    text = format(q, "f")
    return text if text else "0"


def _percent(value: float) -> str:
    return f"{round(value, 1):.1f}".replace("-0.0", "0.0")


async def run(body: Mapping[str, Any], deps: Deps, now: dt.datetime) -> Result:
    """Reconcile one policy (``body`` as Kopf gives it) at ``now``; never raises for
    user or AWS errors. Concurrent calls for one policy are serialised."""
    meta = body.get("metadata", {})
    uid = str(meta.get("uid", ""))
    if meta.get("deletionTimestamp"):
        # being deleted: finalize owns it now; acting here could relaunch what it removes
        return Result(status=dict(body.get("status") or {}))
    async with deps.lock(uid):
        started = time.perf_counter()
        ctx = _Ctx(
            body=body,
            deps=deps,
            now=now,
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=uid,
            generation=meta.get("generation"),
            previous=body.get("status") or {},
            conditions=list((body.get("status") or {}).get("conditions") or []),
        )
        outcome = "error"
        plan: plan_mod.Plan | None = None
        status: dict[str, Any] = {}
        try:
            plan, status = await _reconcile(ctx)
            outcome = plan.outcome if plan is not None else "stopped"
        except _Stop:
            outcome = "stopped"
        finally:
            deps.metrics.reconcile_duration.labels(outcome).observe(time.perf_counter() - started)
        for type_ in cond.TYPES:  # every type is always present
            if cond.get_condition(ctx.conditions, type_) is None:
                ctx.set(type_, cond.UNKNOWN, "NotYetObserved", "not determined yet")
        status["observedGeneration"] = ctx.generation
        status["conditions"] = cond.to_json(ctx.conditions)
        if ctx.last_error is not None:
            status["lastError"] = ctx.last_error
        elif "lastError" in ctx.previous and outcome == "stopped":
            status["lastError"] = ctx.previous["lastError"]
        else:
            status["lastError"] = None  # a clean reconcile clears it
        return Result(status, ctx.events, ctx.requeue_after, plan, ctx.mutating_calls)


async def _reconcile(ctx: _Ctx) -> tuple[plan_mod.Plan | None, dict[str, Any]]:
    parsed = api.parse_policy(ctx.body)
    if isinstance(parsed, api.InvalidSpec):
        msg = parsed.message
        ctx.set(cond.DEGRADED, cond.TRUE, cond.INVALID_SPEC, msg)
        ctx.set(cond.READY, cond.FALSE, cond.INVALID_SPEC, "the spec is invalid: " + msg)
        ctx.set(cond.PROGRESSING, cond.FALSE, cond.INVALID_SPEC, "waiting for a valid spec")
        ctx.error(cond.INVALID_SPEC, msg)
        if not _same_error(ctx.previous, cond.INVALID_SPEC, msg):
            ctx.warn(cond.INVALID_SPEC, msg)
        ctx.deps.metrics.reconcile_errors.labels(ctx.namespace, ctx.name, cond.INVALID_SPEC).inc()
        raise _Stop
    spec = parsed.spec
    if spec.suspend:
        was = cond.get_condition(ctx.previous.get("conditions") or [], cond.READY)
        ctx.set(cond.PROGRESSING, cond.FALSE, cond.SUSPENDED, "spec.suspend is true: not acting")
        ctx.set(cond.READY, cond.FALSE, cond.SUSPENDED, "reconciliation is suspended")
        if was is None or was.reason != cond.SUSPENDED:
            ctx.info(cond.SUSPENDED, "reconciliation suspended; the fleet is left as it is")
        keep = {
            k: v for k, v in ctx.previous.items() if k not in ("conditions", "observedGeneration")
        }
        return None, keep

    creds = await _credentials(ctx, spec)
    client = ctx.deps.ec2_factory(creds, spec.region)
    counted = _CountingEc2(client, ctx)
    try:
        result = await _observe_decide_act(ctx, spec, counted)
        try:
            await _scan_orphans(ctx, creds, spec.region, counted)
        except Exception as e:  # reporting orphans must never break reconciling
            log.warning("orphan scan failed: %s", e)
        return result
    except errors.AwsError as e:
        _aws_failure(ctx, e)
        raise _Stop from None


async def _scan_orphans(
    ctx: _Ctx, creds: credentials.TenantCredentials, region: str, client: Any
) -> None:
    """Every few minutes per (tenant, region): instances carrying the tags of a policy
    that no longer exists are reported (metric + log), never terminated silently."""
    deps = ctx.deps
    if deps.live_policy_uids is None:
        return
    key = (creds.fingerprint() if creds else "operator", region)
    last = deps.orphan_scans.get(key)
    if last is not None and ctx.now - last < deps.orphan_scan_every:
        return
    deps.orphan_scans[key] = ctx.now
    everything: list[ec2.OwnedInstance] = await client.owned_instances(None)
    live = await deps.live_policy_uids()
    watched = set(deps.config.namespaces)
    found = {
        o.instance_id: o.policy_ref
        for o in everything
        if o.policy_uid not in live and (not watched or o.policy_ref.split("/", 1)[0] in watched)
    }
    for iid, ref in sorted(found.items()):
        if iid not in deps.orphans.get(key, {}):
            log.warning(
                "orphaned instance %s in %s: tagged for SpotPolicy %s, which no longer exists; "
                "not terminating it",
                iid,
                region,
                ref,
            )
    deps.orphans[key] = found
    deps.metrics.orphaned_instances.set(sum(len(v) for v in deps.orphans.values()))


def _same_error(previous: Mapping[str, Any], reason: str, message: str) -> bool:
    last = previous.get("lastError") or {}
    return bool(last.get("reason") == reason and last.get("message") == message[:4000])


async def _credentials(ctx: _Ctx, spec: spec_model.SpotPolicySpec) -> credentials.TenantCredentials:
    c = spec.credentials
    if c.assume_role_arn:
        ctx.set(
            cond.CREDENTIALS_VALID,
            cond.TRUE,
            cond.CREDENTIALS_RESOLVED,
            "assuming " + c.assume_role_arn,
        )
        return credentials.AssumeRole(c.assume_role_arn, c.external_id)
    assert c.secret_ref is not None
    where = f"{ctx.namespace}/{c.secret_ref.name}"
    data = await ctx.deps.secrets.read(ctx.namespace, c.secret_ref.name)
    if data is None:
        _creds_failure(ctx, cond.SECRET_NOT_FOUND, f"Secret {where} not found")
    try:
        keys = credentials.StaticKeys.from_secret_data(data or {}, where)
    except credentials.CredentialsError as e:
        _creds_failure(ctx, cond.SECRET_INVALID, str(e))
    ctx.set(
        cond.CREDENTIALS_VALID, cond.TRUE, cond.CREDENTIALS_RESOLVED, f"keys from Secret {where}"
    )
    return keys


def _creds_failure(ctx: _Ctx, reason: str, message: str) -> None:
    ctx.set(cond.CREDENTIALS_VALID, cond.FALSE, reason, message)
    ctx.set(cond.READY, cond.FALSE, reason, message)
    ctx.set(cond.PROGRESSING, cond.FALSE, reason, "not acting without valid credentials")
    ctx.error(reason, message)
    if not _same_error(ctx.previous, reason, message):
        ctx.warn(reason, message)
    ctx.deps.metrics.reconcile_errors.labels(ctx.namespace, ctx.name, reason).inc()
    raise _Stop


def _aws_failure(ctx: _Ctx, e: errors.AwsError) -> None:
    m = ctx.deps.metrics
    if e.kind is errors.ErrorClass.AUTH:
        _creds_failure_no_raise(ctx, cond.ACCESS_DENIED, f"AWS refused the credentials: {e}")
        return
    if e.kind is errors.ErrorClass.INVALID:
        # the request cannot succeed until the spec or the account changes: no backoff spam
        reason = cond.SECRET_NOT_FOUND if e.code == "SecretNotFound" else "InvalidLaunchRequest"
        ctx.error(reason, str(e))
        m.reconcile_errors.labels(ctx.namespace, ctx.name, reason).inc()
        ctx.set(cond.DEGRADED, cond.TRUE, reason, str(e))
        ctx.set(cond.READY, cond.FALSE, reason, str(e))
        ctx.set(
            cond.PROGRESSING, cond.FALSE, reason, "waiting for the spec or the account to change"
        )
        if not _same_error(ctx.previous, reason, str(e)):
            ctx.warn(reason, str(e))
        return
    reason = cond.THROTTLED if e.kind is errors.ErrorClass.THROTTLING else cond.AWS_ERROR
    n = ctx.deps.failures.get(ctx.uid, 0) + 1
    ctx.deps.failures[ctx.uid] = n
    ctx.error(reason, str(e))
    m.reconcile_errors.labels(ctx.namespace, ctx.name, reason).inc()
    if n >= ctx.deps.config.failures_before_degraded:
        ctx.set(cond.DEGRADED, cond.TRUE, reason, f"{n} consecutive failures; last: {e}")
        ctx.set(cond.READY, cond.FALSE, reason, str(e))
    ctx.set(cond.PROGRESSING, cond.TRUE, reason, "retrying with backoff: " + str(e))
    ctx.requeue_after = min(300.0, 5.0 * 2 ** min(n, 6))
    if not _same_error(ctx.previous, reason, str(e)):
        ctx.warn(reason, str(e))


def _creds_failure_no_raise(ctx: _Ctx, reason: str, message: str) -> None:
    with contextlib.suppress(_Stop):
        _creds_failure(ctx, reason, message)


class _CountingEc2:
    """Wraps an Ec2Api: counts mutating calls (dry-run accounting) for the result."""

    def __init__(self, inner: Ec2Api, ctx: _Ctx) -> None:
        self.inner = inner
        self.ctx = ctx

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in (
            "ensure_launch_template",
            "launch",
            "terminate",
            "untag",
            "delete_launch_template",
        ):

            def counted(*a: Any, **kw: Any) -> Awaitable[Any]:
                self.ctx.mutating_calls += 1
                result: Awaitable[Any] = attr(*a, **kw)
                return result

            return counted
        return attr


def _to_fleet(owned: Sequence[ec2.OwnedInstance], replacements: int) -> model.Fleet:
    return model.Fleet(
        instances=tuple(model.FleetInstance(o.instance_id, o.pool, o.launched_at) for o in owned),
        replacements_last_hour=replacements,
    )


async def _observe_decide_act(
    ctx: _Ctx, spec: spec_model.SpotPolicySpec, client: Any
) -> tuple[plan_mod.Plan, dict[str, Any]]:
    deps, now = ctx.deps, ctx.now
    region = spec.region
    catalog = deps.catalog_for(region)
    policy = api.to_engine_policy(spec)
    subnets: dict[str, str] = {}
    if spec.subnet_selector is not None and not spec.dry_run:
        sel = spec.subnet_selector
        subnets = await client.subnets_by_zone(tuple(sel.ids or ()), dict(sel.tags or {}))
        zones = tuple(sorted(z for z in subnets if not policy.zones or z in policy.zones))
        if not zones:
            raise errors.AwsError(
                "DescribeSubnets",
                "NoMatchingSubnets",
                "spec.subnetSelector matches no subnet in spec.availabilityZones",
                errors.ErrorClass.INVALID,
            )
        policy = dataclasses.replace(policy, zones=zones)
    unavailable = deps.unavailable_pools(region)
    history = deps.replacements.setdefault(ctx.uid, [])
    history[:] = [t for t in history if now - t < dt.timedelta(hours=1)]

    owned: list[ec2.OwnedInstance] = await client.owned_instances(ctx.uid)
    deps.failures.pop(ctx.uid, None)
    launched_total: dict[model.Market, int] = {}
    terminated_total = 0
    avoided: dict[model.Pool, str] = {}
    plan: plan_mod.Plan | None = None
    for attempt in range(MAX_REPLANS + 1):
        market = await deps.market(region).get(client, now, unavailable.active(now))
        deps.metrics.unavailable_pools.set(len(market.unavailable))
        for iid in [i for i, until in deps.doomed.items() if until <= now]:
            del deps.doomed[iid]
        fleet = _to_fleet([o for o in owned if o.instance_id not in deps.doomed], len(history))
        t0 = time.perf_counter()
        # a stand-in cloud may run its market clock ahead of ours: decide at the later
        decide_at = max(now, market.observed_at)
        plan = planner.decide(policy, catalog, market, fleet, deps.risk, decide_at)
        deps.metrics.decision_duration.observe(time.perf_counter() - t0)
        if spec.dry_run or plan.outcome == "Infeasible":
            break
        capacity_errors = await _act(
            ctx, spec, client, plan, owned, launched_total, avoided, subnets
        )
        terminated_total += len(plan.terminations)
        for t in plan.terminations:
            if t.reason == "rebalance":
                history.append(now)
        owned = await client.owned_instances(ctx.uid)
        if not capacity_errors or attempt == MAX_REPLANS:
            break
    assert plan is not None
    for chosen in plan.explanation.chosen:
        deps.metrics.risk.labels(deps.risk.name).observe(chosen.risk)
    status = _report(
        ctx, spec, plan, owned, catalog, market, launched_total, terminated_total, avoided
    )
    await _audit(ctx, spec, plan, sum(launched_total.values()), terminated_total)
    return plan, status


async def _act(
    ctx: _Ctx,
    spec: spec_model.SpotPolicySpec,
    client: Any,
    plan: plan_mod.Plan,
    owned: Sequence[ec2.OwnedInstance],
    launched_total: dict[model.Market, int],
    avoided: dict[model.Pool, str],
    subnets: Mapping[str, str],
) -> bool:
    """Terminate then launch what the plan says. Returns True when a pool ran out of
    capacity (it is marked unavailable and the caller re-plans at once)."""
    deps, now = ctx.deps, ctx.now
    m = deps.metrics
    if plan.terminations:
        ids = [t.instance_id for t in plan.terminations]
        await client.terminate(ids)
        by_reason: dict[str, int] = {}
        for t in plan.terminations:
            by_reason[t.reason] = by_reason.get(t.reason, 0) + 1
        for reason, n in sorted(by_reason.items()):
            m.terminations.labels(ctx.namespace, ctx.name, reason).inc(n)
        ctx.info(
            "Terminated",
            f"terminated {len(ids)} instance(s): "
            + ", ".join(f"{n} for {r}" for r, n in sorted(by_reason.items())),
        )
    if not plan.launches:
        return False
    tags_base = dict(spec.launch.tags or {}) if spec.launch else {}
    launch_spec = await _launch_spec(ctx, spec)
    template = await client.ensure_launch_template(
        ctx.uid,
        launch_spec,
        {ec2.TAG_POLICY_UID: ctx.uid, ec2.TAG_POLICY: f"{ctx.namespace}/{ctx.name}"},
    )
    seen_by_pool: dict[model.Pool, list[str]] = {}
    for o in owned:
        seen_by_pool.setdefault(o.pool, []).append(o.instance_id)
    capacity_error = False
    for launch in plan.launches:
        token = ec2.idempotency_token(
            ctx.uid,
            ctx.generation or 0,
            plan.plan_hash(),
            launch.pool,
            seen_by_pool.get(launch.pool, ()),
        )
        tags = {**tags_base, **ec2.ownership_tags(ctx.uid, ctx.namespace, ctx.name, launch.pool)}
        result = await client.launch(
            launch.pool,
            launch.count,
            template,
            token,
            tags,
            subnet_id=subnets.get(launch.pool.zone),
            template_version=launch_spec.launch_template_version,
        )
        got = len(result.instance_ids)
        if got:
            launched_total[launch.pool.market] = launched_total.get(launch.pool.market, 0) + got
            m.launches.labels(ctx.namespace, ctx.name, launch.pool.market.value).inc(got)
            ctx.info("Launched", f"launched {got} x {launch.pool.key()}")
        for err in result.errors:
            if err.kind is errors.ErrorClass.CAPACITY:
                until = deps.unavailable_pools(spec.region).mark(err.pool, now)
                avoided[err.pool] = err.code
                capacity_error = True
                ctx.warn(
                    cond.INSUFFICIENT_CAPACITY,
                    f"{err.pool.key()}: {err.code}: {err.message}; pool avoided until "
                    f"{_rfc3339(until)}, re-planning",
                )
            elif err.kind is errors.ErrorClass.AUTH:
                raise errors.AwsError("CreateFleet", err.code, err.message, err.kind)
            else:
                ctx.warn(cond.AWS_ERROR, f"{err.pool.key()}: {err.code}: {err.message}")
                ctx.error(
                    cond.AWS_ERROR, f"CreateFleet {err.pool.key()}: {err.code}: {err.message}"
                )
        if not got and not result.errors:
            ctx.warn(cond.AWS_ERROR, f"CreateFleet for {launch.pool.key()} returned no instances")
    return capacity_error


async def _launch_spec(ctx: _Ctx, spec: spec_model.SpotPolicySpec) -> ec2.LaunchSpec:
    launch = spec.launch
    assert launch is not None  # admission requires it unless dryRun
    if launch.launch_template is not None:
        lt = launch.launch_template
        return ec2.LaunchSpec(
            launch_template_name=lt.name or lt.id, launch_template_version=lt.version
        )
    user_data = None
    if launch.user_data_secret_ref is not None:
        ref = launch.user_data_secret_ref
        data = await ctx.deps.secrets.read(ctx.namespace, ref.name)
        if data is None or ref.key not in data:
            raise errors.AwsError(
                "UserData",
                "SecretNotFound",
                f"user data Secret {ctx.namespace}/{ref.name} key {ref.key} not found",
                errors.ErrorClass.INVALID,
            )
        user_data = data[ref.key]
    return ec2.LaunchSpec(
        image_id=launch.image_id,
        security_group_ids=tuple(launch.security_group_ids or ()),
        user_data=user_data,
        iam_instance_profile_name=launch.instance_profile_name,
    )


def _report(
    ctx: _Ctx,
    spec: spec_model.SpotPolicySpec,
    plan: plan_mod.Plan,
    owned: Sequence[ec2.OwnedInstance],
    catalog: catalog_mod.Catalog,
    market: Any,
    launched: Mapping[model.Market, int],
    terminated: int,
    avoided: Mapping[model.Pool, str],
) -> dict[str, Any]:
    unit = model.CapacityUnit(spec.capacity.unit)
    counts: dict[model.Pool, int] = {}
    for o in owned:
        counts[o.pool] = counts.get(o.pool, 0) + 1
    fulfilled = {model.Market.SPOT: 0.0, model.Market.ON_DEMAND: 0.0}
    cost = od_equiv = 0.0
    allocation = []
    m = ctx.deps.metrics
    for labels in list(m.instances._metrics):
        if labels[:2] == (ctx.namespace, ctx.name):
            m.instances.remove(*labels)
    for pool, n in sorted(counts.items()):
        it = catalog.types.get(pool.instance_type)
        od = catalog.on_demand_price(pool.instance_type) or 0.0
        price = od
        if pool.market is model.Market.SPOT:
            price = market.spot_price(pool.instance_type, pool.zone) or od
        units = it.units(unit) if it else (1.0 if unit is model.CapacityUnit.INSTANCES else 0.0)
        fulfilled[pool.market] += units * n
        cost += price * n
        od_equiv += od * n
        allocation.append(
            {
                "instanceType": pool.instance_type,
                "zone": pool.zone,
                "market": pool.market.value,
                "count": n,
                "pricePerHour": _price(price),
            }
        )
        m.instances.labels(
            ctx.namespace, ctx.name, pool.market.value, pool.instance_type, pool.zone
        ).set(n)
    total = fulfilled[model.Market.SPOT] + fulfilled[model.Market.ON_DEMAND]
    savings = 100.0 * (1 - cost / od_equiv) if od_equiv > 0 else 0.0
    desired = {
        mk: float(plan.capacity_by_market.get(mk, 0.0))
        for mk in (model.Market.SPOT, model.Market.ON_DEMAND)
    }
    target = float(spec.capacity.target)

    # --- conditions -------------------------------------------------------
    if spec.dry_run:
        ctx.set(
            cond.PROGRESSING,
            cond.FALSE,
            cond.DRY_RUN,
            "dryRun: planned, not acted: " + plan.summary(),
        )
    elif sum(launched.values()) or terminated:
        ctx.set(
            cond.PROGRESSING,
            cond.TRUE,
            cond.LAUNCHING if sum(launched.values()) else cond.TERMINATING,
            f"launched {sum(launched.values())}, terminated {terminated} this reconcile",
        )
    else:
        ctx.set(cond.PROGRESSING, cond.FALSE, cond.STABLE, "the fleet matches the plan")
    if plan.outcome in ("Infeasible", "Degraded"):
        reason = _infeasible_reason(plan)
        ctx.set(cond.DEGRADED, cond.TRUE, reason, plan.binding_constraint or plan.summary())
        if plan.binding_constraint and not _same_error(
            ctx.previous, reason, plan.binding_constraint
        ):
            ctx.warn(reason, plan.binding_constraint)
        ctx.error(reason, plan.binding_constraint or plan.summary())
    else:
        ctx.set(cond.DEGRADED, cond.FALSE, cond.AS_EXPECTED, "")
    have = total if not spec.dry_run else plan.capacity
    if have + 1e-9 >= target:
        ctx.set(
            cond.CAPACITY_FULFILLED,
            cond.TRUE,
            cond.FULFILLED,
            f"{_amount(have)}/{_amount(target)} {unit.value}",
        )
    else:
        reason = (
            cond.LAUNCHING
            if not avoided and plan.outcome not in ("Infeasible", "Degraded")
            else cond.INSUFFICIENT_CAPACITY
        )
        ctx.set(
            cond.CAPACITY_FULFILLED,
            cond.FALSE,
            reason,
            f"{_amount(have)}/{_amount(target)} {unit.value}",
        )
    degraded = cond.is_true(ctx.conditions, cond.DEGRADED)
    fulfilled_ok = cond.is_true(ctx.conditions, cond.CAPACITY_FULFILLED)
    if spec.dry_run:
        ctx.set(
            cond.READY,
            cond.TRUE if not degraded else cond.FALSE,
            cond.DRY_RUN,
            "dryRun: " + plan.summary(),
        )
    elif fulfilled_ok and not degraded:
        ctx.set(cond.READY, cond.TRUE, cond.RECONCILED, plan.summary())
    else:
        why = cond.get_condition(
            ctx.conditions, cond.DEGRADED if degraded else cond.CAPACITY_FULFILLED
        )
        ctx.set(
            cond.READY,
            cond.FALSE,
            why.reason if why else cond.LAUNCHING,
            why.message if why else "",
        )

    # --- events: only when the decision changed ---------------------------
    prev_hash = (ctx.previous.get("lastDecision") or {}).get("planHash")
    if prev_hash != plan.plan_hash():
        ctx.info(cond.DRY_RUN if spec.dry_run else "Planned", plan.summary())

    # --- metrics -----------------------------------------------------------
    ns, nm = ctx.namespace, ctx.name
    m.cost.labels(ns, nm).set(cost)
    m.on_demand_equivalent.labels(ns, nm).set(od_equiv)
    m.savings.labels(ns, nm).set(savings / 100.0)
    m.capacity_target.labels(ns, nm).set(target)
    for mk in (model.Market.SPOT, model.Market.ON_DEMAND):
        m.capacity_desired.labels(ns, nm, mk.value).set(desired[mk])
        m.capacity_fulfilled.labels(ns, nm, mk.value).set(fulfilled[mk])

    alternatives = [
        {
            "summary": r.pool.key(),
            "costPerHour": _price(r.price),
            "reason": r.reason[:1000],
        }
        for r in plan.explanation.rejected[:3]
    ]
    alternatives += [
        {"summary": p.key(), "reason": f"{code}: out of capacity, avoided"}
        for p, code in sorted(avoided.items())
    ][: max(0, 10 - len(alternatives))]
    decision: dict[str, Any] = {
        "time": _rfc3339(ctx.now),
        "summary": plan.summary()[:4000],
        "planHash": plan.plan_hash(),
    }
    if alternatives:
        decision["alternatives"] = alternatives
    return {
        "capacity": {
            "unit": spec.capacity.unit,
            "desired": {
                "spot": _amount(desired[model.Market.SPOT]),
                "onDemand": _amount(desired[model.Market.ON_DEMAND]),
                "total": _amount(sum(desired.values())),
            },
            "fulfilled": {
                "spot": _amount(fulfilled[model.Market.SPOT]),
                "onDemand": _amount(fulfilled[model.Market.ON_DEMAND]),
                "total": _amount(total),
            },
            "spotPercent": round(100 * fulfilled[model.Market.SPOT] / total) if total else 0,
        },
        "allocation": allocation,
        "cost": {
            "perHour": _price(cost),
            "onDemandEquivalentPerHour": _price(od_equiv),
            "savingsPercent": _percent(savings),
        },
        "lastDecision": decision,
    }


def _infeasible_reason(plan: plan_mod.Plan) -> str:
    text = (plan.binding_constraint or "").lower()
    if "budget" in text:
        return cond.BUDGET_EXCEEDED
    if "eligible" in text or "no pool" in text or "maxspotprice" in text:
        return cond.NO_ELIGIBLE_POOLS
    return cond.INSUFFICIENT_CAPACITY


async def _audit(
    ctx: _Ctx,
    spec: spec_model.SpotPolicySpec,
    plan: plan_mod.Plan,
    launches: int,
    terminations: int,
) -> None:
    """Append the decision to the audit store when it changed or acted."""
    store = ctx.deps.store
    prev_hash = (ctx.previous.get("lastDecision") or {}).get("planHash")
    if store is None or (prev_hash == plan.plan_hash() and not launches and not terminations):
        return
    try:
        await store.record(
            store_mod.DecisionRecord(
                at=ctx.now,
                namespace=ctx.namespace,
                policy=ctx.name,
                policy_uid=ctx.uid,
                generation=ctx.generation or 0,
                outcome=plan.outcome,
                plan_hash=plan.plan_hash(),
                summary=plan.summary()[:4000],
                cost_per_hour=_price(plan.cost_per_hour),
                on_demand_equivalent_per_hour=_price(plan.on_demand_equivalent_per_hour),
                savings_pct=_percent(plan.savings_pct),
                launches=launches,
                terminations=terminations,
                dry_run=spec.dry_run,
            )
        )
    except Exception as e:  # the audit must never break reconciling
        log.warning("audit store write failed: %s", type(e).__name__)

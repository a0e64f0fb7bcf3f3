"""One reconcile of one SpotPolicy: observe -> decide -> act -> report, then one write.

Every trigger (the policy's loop, a spec change, an interruption notice) comes here;
nothing else writes a policy's status. The policy's lock is held from the first
read to the status patch, so two triggers never interleave.

1. **observe** (reads only): the spec, the credentials (Secret cache), the subnets,
   the policy's instances from the account's shared sweep, the region's shared market.
2. **decide** (pure, on the decision thread pool, never on the event loop):
   ``planner.decide`` with the market's risk scored once per snapshot.
3. **act**: launches first; terminations only once nothing of the policy is still
   pending (so capacity never drops below the target during a move); capacity errors
   mark the pools avoided and re-plan, at most ``max_replans`` times.
4. **report**: :func:`spotfleet_operator.status_mod.report`, pure.

Failures are values (:mod:`spotfleet_operator.failures`); :func:`run` never raises for
anything a user or AWS can cause and returns how to retry. Level-based: the fleet is
rebuilt from EC2 ownership tags, so a restarted operator adopts what it launched and
launches nothing twice (idempotency tokens).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import kopf

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model, planner
from spotfleet_engine import plan as plan_mod
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_operator import api, config, failures, marketdata, metrics, state
from spotfleet_operator import status as status_mod
from spotfleet_operator.api import spec as spec_model
from spotfleet_operator.aws import credentials, errors, port

log = logging.getLogger("spotfleet.reconcile")

#: After launching, how soon the policy looks again (to terminate what was replaced).
FOLLOW_UP_SECONDS = 10.0
#: Longest wait for a replacement to run before what it replaces is terminated anyway.
REPLACEMENT_WAIT = dt.timedelta(minutes=10)


class SecretReader(Protocol):
    """Reads a Secret's decoded data from the POLICY'S OWN namespace (None: absent)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def forget_secret(self, namespace: str, name: str) -> None: ...


class StatusWriter(Protocol):
    """Writes a policy's status and posts its Events (the Kubernetes client)."""

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    async def post_event(
        self, ref: Mapping[str, str], type_: str, reason: str, message: str
    ) -> None: ...


class AuditSink(Protocol):
    """Takes audit rows without waiting (the store's writer queue)."""

    def submit(self, row: Any) -> object: ...


CloudFactory = Callable[[credentials.TenantCredentials, str], port.CloudProvider]


@dataclass
class Deps:
    """Everything reconcile needs, wired once at start-up (kept in Kopf's memo)."""

    config: config.OperatorConfig
    state: state.FleetState
    cloud: CloudFactory
    secrets: SecretReader
    writer: StatusWriter
    risk: risk_protocol.RiskModel
    metrics: metrics.Metrics
    decide_pool: concurrent.futures.Executor
    catalog_for: Callable[[str], catalog_mod.Catalog] = catalog_mod.load_bundled
    audit: AuditSink | None = None
    record: Callable[..., Any] | None = None  # builds an audit row (the store's table)
    #: UIDs of every SpotPolicy that exists, across shards (None: orphan detection off)
    live_policy_uids: Callable[[], Awaitable[set[str]]] | None = None
    limiter: asyncio.Semaphore | None = None
    _scored: dict[str, marketdata.SnapshotRisk] = field(default_factory=dict)

    def scored(
        self, region: str, snapshot: market_mod.MarketSnapshot, catalog: catalog_mod.Catalog
    ) -> marketdata.SnapshotRisk:
        """The risk of ``snapshot``'s pools, scored once for every policy of the region."""
        hit = self._scored.get(region)
        if hit is None or hit.snapshot is not snapshot:
            hit = self._scored[region] = marketdata.SnapshotRisk(self.risk, snapshot, catalog)
        return hit


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


@dataclass
class _Ctx:
    body: Mapping[str, Any]
    deps: Deps
    ps: state.PolicyState
    now: dt.datetime
    namespace: str
    name: str
    uid: str
    generation: int | None
    previous: Mapping[str, Any]


class _Stop(Exception):
    """Internal: the reconcile ends here with ``failure``."""

    def __init__(self, failure: failures.Failure) -> None:
        self.failure = failure


def ref_of(body: Mapping[str, Any]) -> dict[str, str]:
    meta = body.get("metadata", {})
    return {
        "apiVersion": str(body.get("apiVersion", api.API_VERSION)),
        "kind": str(body.get("kind", api.KIND)),
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
    }


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
        ps.seed(previous, now)
        ctx = _Ctx(body, deps, ps, now, ns, name, uid, meta.get("generation"), previous)
        started = time.perf_counter()
        observed, acted = await _pipeline(ctx)
        rep = status_mod.report(
            observed, acted, previous, now, deps.config.failures_before_degraded
        )
        # facts the interruption drainer recorded since the last reconcile
        rep.events[:0] = [status_mod.Event(*n) for n in ps.notices]
        ps.notices.clear()
        if observed.spec is not None:
            ps.on_rebalance = observed.spec.rebalance_or_default().on_rebalance_recommendation
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


async def _pipeline(ctx: _Ctx) -> tuple[status_mod.Observed, status_mod.Acted]:
    """observe -> decide -> act; failures end it early as values."""
    observed = status_mod.Observed(ctx.generation)
    try:
        parsed = api.parse_policy(ctx.body)
        if isinstance(parsed, api.InvalidSpec):
            code = "InvalidSpec:" + hashlib.sha256(parsed.message.encode()).hexdigest()[:12]
            raise _Stop(failures.Failure(failures.Kind.INVALID_SPEC, parsed.message, code))
        spec = parsed.spec
        observed = status_mod.Observed(ctx.generation, spec)
        if spec.suspend:
            ctx.ps.failures = 0
            return observed, status_mod.Acted(replacements=list(ctx.ps.replacements))
        creds, where = await _credentials(ctx, spec)
        observed = dataclasses.replace(observed, credentials=where)
        provider = ctx.deps.cloud(creds, spec.region)
        if spec.dry_run:
            provider = port.DryRunGuard(provider)
        try:
            observed, acted = await _observe_decide_act(ctx, spec, creds, provider, observed)
        except errors.AwsError as e:
            if e.kind is errors.ErrorClass.AUTH:
                _forget_credentials(ctx, spec, creds)
            raise _Stop(failures.from_aws(e)) from None
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
    except _Stop as stop:
        ctx.ps.failures += 1
        return observed, status_mod.Acted(
            failure=stop.failure,
            consecutive_failures=ctx.ps.failures,
            retry_in=_retry_in(stop.failure, ctx),
            replacements=list(ctx.ps.replacements),
        )


def _retry_in(failure: failures.Failure, ctx: _Ctx) -> float | None:
    if failure.rule.permanent:
        return None
    return ctx.deps.config.retry_delay(ctx.ps.failures)


def _forget_credentials(
    ctx: _Ctx, spec: spec_model.SpotPolicySpec, creds: credentials.TenantCredentials
) -> None:
    """AWS refused the keys: re-read the Secret next time instead of trusting the cache."""
    ref = spec.credentials.secret_ref
    if ref is not None:
        ctx.deps.secrets.forget_secret(ctx.namespace, ref.name)


async def _credentials(
    ctx: _Ctx, spec: spec_model.SpotPolicySpec
) -> tuple[credentials.TenantCredentials, str]:
    c = spec.credentials
    if c.assume_role_arn:
        return credentials.AssumeRole(
            c.assume_role_arn, c.external_id
        ), "assuming " + c.assume_role_arn
    assert c.secret_ref is not None
    where = f"{ctx.namespace}/{c.secret_ref.name}"
    try:
        data = await ctx.deps.secrets.read_secret(ctx.namespace, c.secret_ref.name)
    except Exception as e:  # the API server itself: transient
        raise _Stop(
            failures.Failure(
                failures.Kind.KUBE_ERROR, f"reading Secret {where}: {e}", "secret-read"
            )
        ) from None
    if data is None:
        raise _Stop(
            failures.Failure(failures.Kind.SECRET_NOT_FOUND, f"Secret {where} not found", where)
        )
    try:
        keys = credentials.StaticKeys.from_secret_data(data, where)
    except credentials.CredentialsError as e:
        raise _Stop(failures.Failure(failures.Kind.SECRET_INVALID, str(e), str(e))) from None
    return keys, f"keys from Secret {where}"


async def _subnets(
    ctx: _Ctx,
    spec: spec_model.SpotPolicySpec,
    provider: port.CloudProvider,
    acct: state.AccountState,
) -> dict[str, str]:
    sel = spec.subnet_selector
    if sel is None or spec.dry_run:
        return {}
    key = (tuple(sel.ids or ()), tuple(sorted((sel.tags or {}).items())))
    hit = acct.subnets.get(key)
    if hit is not None and ctx.now - hit[0] < dt.timedelta(
        seconds=ctx.deps.config.orphan_scan_seconds
    ):
        return hit[1]
    found = await provider.subnets_by_zone(tuple(sel.ids or ()), dict(sel.tags or {}))
    acct.subnets[key] = (ctx.now, found)
    return found


async def _observe_decide_act(
    ctx: _Ctx,
    spec: spec_model.SpotPolicySpec,
    creds: credentials.TenantCredentials,
    provider: port.CloudProvider,
    observed: status_mod.Observed,
) -> tuple[status_mod.Observed, status_mod.Acted]:
    deps, now = ctx.deps, ctx.now
    region = spec.region
    account_id = await deps.state.account_of(credentials.fingerprint(creds), provider)
    acct = deps.state.account(account_id, region)
    rs = deps.state.region(region)
    catalog = deps.catalog_for(region)
    policy = api.to_engine_policy(spec)

    # ---- observe ---------------------------------------------------------------
    subnets = await _subnets(ctx, spec, provider, acct)
    if spec.subnet_selector is not None and not spec.dry_run:
        zones = tuple(sorted(z for z in subnets if not policy.zones or z in policy.zones))
        if not zones:
            raise _Stop(
                failures.Failure(
                    failures.Kind.NO_MATCHING_SUBNETS,
                    "spec.subnetSelector matches no subnet in spec.availabilityZones",
                    "NoMatchingSubnets",
                )
            )
        policy = dataclasses.replace(policy, zones=zones)
    await acct.sweep.refresh(provider, now)
    market = await rs.market.get(provider, now)
    observed = dataclasses.replace(
        observed,
        instances=acct.sweep.instances(ctx.uid, now),
        catalog=catalog,
        market=market,
        doomed=ctx.ps.doomed_now(now),
    )
    await _scan_orphans(ctx, acct)

    # ---- decide, act, re-plan on capacity errors ---------------------------------
    risk = deps.scored(region, market, catalog)
    launched: list[tuple[model.Pool, int]] = []
    terminated: list[plan_mod.Terminate] = []
    avoided: dict[model.Pool, tuple[str, dt.datetime]] = {}
    deferred = 0
    failure: failures.Failure | None = None
    plan: plan_mod.Plan | None = None
    for attempt in range(deps.config.max_replans + 1):
        instances = acct.sweep.instances(ctx.uid, now)
        doomed = ctx.ps.doomed_now(now)
        plan = await _decide(ctx, policy, catalog, market, rs, instances, doomed, risk)
        if spec.dry_run or plan.outcome == "Infeasible":
            break
        step = await _act(ctx, spec, provider, acct, plan, instances, subnets)
        launched += step.launched
        terminated += step.terminated
        deferred = step.deferred
        avoided.update(step.avoided)
        failure = step.failure
        if not step.avoided or failure is not None or attempt == deps.config.max_replans:
            break
    observed = dataclasses.replace(
        observed,
        instances=acct.sweep.instances(ctx.uid, now),
        doomed=ctx.ps.doomed_now(now),
    )
    if failure is None and avoided and not launched and plan is not None:
        # every pool tried was out: say so, and retry with backoff rather than hammer
        quota = [
            p
            for p, (code, _) in avoided.items()
            if errors.classify_code(code) is errors.ErrorClass.QUOTA
        ]
        if quota:
            code = avoided[quota[0]][0]
            failure = failures.Failure(
                failures.Kind.QUOTA_EXCEEDED,
                f"{code}: the account's quota refuses more instances in {len(quota)} pool(s)",
                f"CreateFleet:{code}",
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
    ctx: _Ctx,
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    rs: state.RegionState,
    instances: Sequence[port.OwnedInstance],
    doomed: frozenset[str],
    risk: risk_protocol.RiskModel,
) -> plan_mod.Plan:
    """planner.decide on the decision pool (the MILP never runs on the event loop)."""
    snap = dataclasses.replace(market, unavailable=rs.unavailable.active(ctx.now))
    fleet = model.Fleet(
        instances=tuple(
            model.FleetInstance(o.instance_id, o.pool, o.launched_at)
            for o in instances
            if o.instance_id not in doomed
        ),
        replacements_last_hour=ctx.ps.replacements_last_hour(ctx.now),
    )
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    plan = await loop.run_in_executor(
        ctx.deps.decide_pool, planner.decide, policy, catalog, snap, fleet, risk, ctx.now
    )
    ctx.deps.metrics.decision_duration.observe(time.perf_counter() - t0)
    return plan


@dataclass
class _Step:
    launched: list[tuple[model.Pool, int]] = field(default_factory=list)
    terminated: list[plan_mod.Terminate] = field(default_factory=list)
    deferred: int = 0
    avoided: dict[model.Pool, tuple[str, dt.datetime]] = field(default_factory=dict)
    failure: failures.Failure | None = None


async def _act(
    ctx: _Ctx,
    spec: spec_model.SpotPolicySpec,
    provider: port.CloudProvider,
    acct: state.AccountState,
    plan: plan_mod.Plan,
    instances: Sequence[port.OwnedInstance],
    subnets: Mapping[str, str],
) -> _Step:
    """Launch what the plan adds; terminate what it removes only when nothing is pending."""
    step = _Step()
    now = ctx.now
    if plan.launches:
        template, version = await _template(ctx, spec, provider, acct)
        seen: dict[model.Pool, list[str]] = {}
        for o in instances:
            seen.setdefault(o.pool, []).append(o.instance_id)
        tags_base = dict(spec.launch.tags or {}) if spec.launch else {}
        rebalanced = sum(1 for t in plan.terminations if t.reason == "rebalance")
        new_ids: list[str] = []
        for launch in plan.launches:
            token = port.idempotency_token(
                ctx.uid,
                ctx.generation or 0,
                plan.plan_hash(),
                launch.pool,
                seen.get(launch.pool, ()),
            )
            tags = {
                **tags_base,
                **port.ownership_tags(ctx.uid, ctx.namespace, ctx.name, launch.pool),
            }
            result = await provider.launch(
                launch.pool,
                launch.count,
                template,
                token,
                tags,
                subnet_id=subnets.get(launch.pool.zone),
                template_version=version,
            )
            if result.instance_ids:
                new_ids.extend(result.instance_ids)
                step.launched.append((launch.pool, len(result.instance_ids)))
                acct.sweep.launched(
                    [
                        port.OwnedInstance(
                            iid, launch.pool, "pending", now, ctx.uid, f"{ctx.namespace}/{ctx.name}"
                        )
                        for iid in result.instance_ids
                    ],
                    now,
                )
            capacity = [
                e
                for e in result.errors
                if e.kind in (errors.ErrorClass.CAPACITY, errors.ErrorClass.QUOTA)
            ]
            if capacity:
                marked = ctx.deps.state.mark_unavailable(
                    spec.region, [e.pool for e in capacity], now
                )
                for e in capacity:
                    step.avoided[e.pool] = (e.code, marked[e.pool])
            for e in result.errors:
                if e.kind is errors.ErrorClass.AUTH:
                    raise errors.AwsError("CreateFleet", e.code, e.message, e.kind)
                if e.kind in (errors.ErrorClass.CAPACITY, errors.ErrorClass.QUOTA):
                    continue
                kind = (
                    failures.Kind.INVALID_LAUNCH
                    if e.kind is errors.ErrorClass.INVALID
                    else failures.Kind.AWS_ERROR
                )
                step.failure = failures.Failure(
                    kind,
                    f"CreateFleet {e.pool.key()}: {e.code}: {e.message}",
                    f"CreateFleet:{e.code}",
                )
            if step.failure is not None:
                break
        if rebalanced and step.launched:
            ctx.ps.note_replacements(rebalanced, now)
        if plan.terminations:  # these launches replace instances: remember them
            for iid in new_ids:
                ctx.ps.replacing[iid] = now
    if plan.terminations:
        view = acct.sweep.instances(ctx.uid, now)
        live = {o.instance_id: o.state for o in view}
        for iid, t in list(ctx.ps.replacing.items()):
            if live.get(iid) != "pending" or now - t > REPLACEMENT_WAIT:
                del ctx.ps.replacing[iid]  # running now, gone, or waited for long enough
        if plan.launches or ctx.ps.replacing:
            # a move: the replacements launch first; what they replace goes once they run
            step.deferred = len(plan.terminations)
        else:
            ids = [t.instance_id for t in plan.terminations]
            await provider.terminate(ids)
            acct.sweep.terminated(ids, now)
            step.terminated = list(plan.terminations)
    return step


async def _template(
    ctx: _Ctx,
    spec: spec_model.SpotPolicySpec,
    provider: port.CloudProvider,
    acct: state.AccountState,
) -> tuple[str, str | None]:
    """(name, version) of the template to launch from: the user's own, or the policy's,
    created or updated when its spec changed. The account's templates are listed once."""
    launch = spec.launch
    assert launch is not None  # admission requires it unless dryRun
    if launch.launch_template is not None:
        lt = launch.launch_template
        return str(lt.name or lt.id), lt.version
    launch_spec = await _launch_spec(ctx, spec)
    if acct.templates is None:
        async with acct.templates_lock:
            if acct.templates is None:
                acct.templates = await provider.launch_templates()
    name = port.launch_template_name(ctx.uid)
    current = acct.templates.get(name)
    digest = launch_spec.content_hash()
    if current is None:
        try:
            acct.templates[name] = await provider.create_launch_template(
                ctx.uid,
                launch_spec,
                {port.TAG_POLICY_UID: ctx.uid, port.TAG_POLICY: f"{ctx.namespace}/{ctx.name}"},
            )
            return name, None
        except errors.AwsError as e:
            if "AlreadyExists" not in e.code:
                raise
            # made since the account's templates were listed (another shard or process):
            # list them again and carry on with the one that exists
            acct.templates = await provider.launch_templates()
            current = acct.templates.get(name)
            if current is None:
                raise
    if current.spec_hash != digest:
        acct.templates[name] = await provider.update_launch_template(current, launch_spec)
    return name, None


async def _launch_spec(ctx: _Ctx, spec: spec_model.SpotPolicySpec) -> port.LaunchSpec:
    launch = spec.launch
    assert launch is not None
    user_data = None
    if launch.user_data_secret_ref is not None:
        ref = launch.user_data_secret_ref
        data = await ctx.deps.secrets.read_secret(ctx.namespace, ref.name)
        if data is None or ref.key not in data:
            raise _Stop(
                failures.Failure(
                    failures.Kind.SECRET_NOT_FOUND,
                    f"user data Secret {ctx.namespace}/{ref.name} key {ref.key} not found",
                    f"userdata:{ref.name}/{ref.key}",
                )
            )
        user_data = data[ref.key]
    return port.LaunchSpec(
        image_id=launch.image_id,
        security_group_ids=tuple(launch.security_group_ids or ()),
        user_data=user_data,
        iam_instance_profile_name=launch.instance_profile_name,
    )


async def _scan_orphans(ctx: _Ctx, acct: state.AccountState) -> None:
    """Every ``orphan_scan_seconds`` per account: instances tagged for a policy that no
    longer exists are reported (metric + log), never terminated silently."""
    deps = ctx.deps
    if deps.live_policy_uids is None:
        return
    every = dt.timedelta(seconds=deps.config.orphan_scan_seconds)
    if acct.orphan_scan_at is not None and ctx.now - acct.orphan_scan_at < every:
        return
    acct.orphan_scan_at = ctx.now
    try:
        live = await deps.live_policy_uids()
    except Exception as e:  # reporting orphans must never break reconciling
        log.warning("orphan scan skipped: %s", e)
        return
    watched = set(deps.config.namespaces)
    found = {
        o.instance_id: o.policy_ref
        for uid, insts in acct.sweep.policies().items()
        if uid not in live
        for o in insts
        if not watched or o.policy_ref.split("/", 1)[0] in watched
    }
    for iid, ref in sorted(found.items()):
        if iid not in acct.orphans:
            log.warning(
                "orphaned instance %s: tagged for SpotPolicy %s, which no longer exists; "
                "not terminating it",
                iid,
                ref,
            )
    acct.orphans = found
    deps.metrics.orphaned_instances.set(sum(len(a.orphans) for a in deps.state.accounts.values()))


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


async def _write(ctx: _Ctx, rep: status_mod.Report, result: Result) -> bool:
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


def _export(ctx: _Ctx, rep: status_mod.Report, acted: status_mod.Acted, seconds: float) -> None:
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


def _audit(ctx: _Ctx, observed: status_mod.Observed, acted: status_mod.Acted) -> None:
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
            cost_per_hour=status_mod.price(plan.cost_per_hour),
            on_demand_equivalent_per_hour=status_mod.price(plan.on_demand_equivalent_per_hour),
            savings_pct=status_mod.percent(plan.savings_pct),
            launches=n_launched,
            terminations=len(acted.terminated),
            dry_run=bool(observed.spec is not None and observed.spec.dry_run),
        )
    )

"""The act step: launch what a plan adds (first), terminate what it removes once nothing
the move launched is still pending, and keep the policy's launch template; capacity and
quota answers mark the pools avoided for the next plan."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from spotfleet_engine import model
from spotfleet_engine import plan as plan_mod
from spotfleet_operator import audit, failures, state
from spotfleet_operator.api import spec as spec_model
from spotfleet_operator.aws import errors, port
from spotfleet_operator.pipeline import Ctx, Stop

#: Longest wait for a replacement to run before what it replaces is terminated anyway.
REPLACEMENT_WAIT = dt.timedelta(minutes=10)


def _since(t0: float) -> float:
    return time.perf_counter() - t0


@dataclass
class Step:
    launched: list[tuple[model.Pool, int]] = field(default_factory=list)
    terminated: list[plan_mod.Terminate] = field(default_factory=list)
    deferred: int = 0
    avoided: dict[model.Pool, tuple[str, dt.datetime]] = field(default_factory=dict)
    failure: failures.Failure | None = None


async def act(
    ctx: Ctx,
    spec: spec_model.SpotPolicySpec,
    provider: port.CloudProvider,
    acct: state.AccountState,
    plan: plan_mod.Plan,
    instances: Sequence[port.OwnedInstance],
    subnets: Mapping[str, str],
) -> Step:
    """Launch what the plan adds; terminate what it removes only when nothing is pending."""
    step = Step()
    now = ctx.now
    if plan.launches:
        template, version, digest = await ensure_template(ctx, spec, provider, acct)
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
            if digest:
                tags[port.TAG_SPEC_HASH] = digest
            t0 = time.perf_counter()
            try:
                result = await provider.launch(
                    launch.pool,
                    launch.count,
                    template,
                    token,
                    tags,
                    subnet_id=subnets.get(launch.pool.zone),
                    template_version=version,
                )
            except errors.AwsError as gone:
                if not (digest and template_gone(gone)):
                    audit.launch(ctx, launch.pool, launch.count, token, None, gone.code, _since(t0))
                    raise
                # the shared template was collected since it was listed: make it again
                async with acct.templates_lock:
                    acct.templates = None
                template, version, digest = await ensure_template(ctx, spec, provider, acct)
                try:
                    result = await provider.launch(
                        launch.pool,
                        launch.count,
                        template,
                        token,
                        tags,
                        subnet_id=subnets.get(launch.pool.zone),
                        template_version=version,
                    )
                except errors.AwsError as exc:
                    audit.launch(ctx, launch.pool, launch.count, token, None, exc.code, _since(t0))
                    raise
            audit.launch(ctx, launch.pool, launch.count, token, result, None, _since(t0))
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
            capacity = [e for e in result.errors if e.kind is errors.ErrorClass.CAPACITY]
            if capacity:
                marked = ctx.deps.state.mark_unavailable(
                    spec.region, [e.pool for e in capacity], now
                )
                for e in capacity:
                    step.avoided[e.pool] = (e.code, marked[e.pool])
            quota = [e for e in result.errors if e.kind is errors.ErrorClass.QUOTA]
            for e in quota:  # the account's, not the pool's: hold the whole market
                step.avoided[e.pool] = (e.code, acct.quota_refused(e.pool.market, e.code, now))
            if result.instance_ids and not quota:
                acct.quota_cleared(launch.pool.market)
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
        audit.replacements_launched(ctx, new_ids)
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
            await terminate(ctx, provider, acct, plan.terminations)
            step.terminated = list(plan.terminations)
    return step


async def terminate(
    ctx: Ctx,
    provider: port.CloudProvider,
    acct: state.AccountState,
    terminations: Sequence[plan_mod.Terminate],
) -> None:
    """Terminate ``terminations`` (one port call), audited, and tell the account's sweep;
    while the call runs the instances are ours to stop (their state changes are no
    interruption)."""
    ids = [t.instance_id for t in terminations]
    t0 = time.perf_counter()
    ctx.ps.terminating.update(ids)
    try:
        done = await provider.terminate(ids)
    except errors.AwsError as exc:
        audit.terminate(ctx, terminations, None, exc.code, _since(t0), exc.request_id)
        raise
    finally:
        ctx.ps.terminating.difference_update(ids)
    audit.terminate(
        ctx, terminations, done.instance_ids, None, _since(t0), ",".join(done.request_ids)
    )
    acct.sweep.terminated(ids, ctx.now)


async def retire_recommended(
    ctx: Ctx,
    provider: port.CloudProvider,
    acct: state.AccountState,
    plan: plan_mod.Plan,
    instances: Sequence[port.OwnedInstance],
) -> list[plan_mod.Terminate]:
    """Terminate the instances under a rebalance recommendation once their replacements
    run: the plan (made without them) launches nothing and holds the target, and no
    instance of the policy is pending. Each counts as one replacement (churn)."""
    ps = ctx.ps
    live = {o.instance_id: o for o in instances}
    ps.recommended.intersection_update(live)
    if not ps.recommended or plan.launches or plan.capacity + 1e-9 < plan.target:
        return []
    if any(o.state == "pending" for o in instances):
        return []
    gone = [plan_mod.Terminate(iid, live[iid].pool, "rebalance") for iid in sorted(ps.recommended)]
    await terminate(ctx, provider, acct, gone)
    ps.note_replacements(len(gone), ctx.now)
    for t in gone:
        ps.recommended.discard(t.instance_id)
        ps.doomed.pop(t.instance_id, None)
    return gone


async def ensure_template(
    ctx: Ctx,
    spec: spec_model.SpotPolicySpec,
    provider: port.CloudProvider,
    acct: state.AccountState,
) -> tuple[str, str | None, str]:
    """(name, version, spec hash) of the template to launch from: the user's own, or the
    account's shared template of the policy's launch spec, created once for every policy
    that launches with it. The account's templates are listed once."""
    launch = spec.launch
    assert launch is not None  # admission requires it unless dryRun
    if launch.launch_template is not None:
        lt = launch.launch_template
        return str(lt.name or lt.id), lt.version, ""
    launch_spec = await read_launch_spec(ctx, spec)
    digest = launch_spec.content_hash()
    ctx.ps.spec_hash = digest
    name = port.shared_template_name(digest)
    async with acct.templates_lock:
        if acct.templates is None:
            acct.templates = await provider.launch_templates()
        if name in acct.templates:
            return name, None, digest
        try:
            acct.templates[name] = await provider.create_launch_template(
                launch_spec, {port.TAG_MANAGED: "spotfleet"}
            )
        except errors.AwsError as e:
            if "AlreadyExists" not in e.code:
                raise
            # made since the account's templates were listed (another shard or process)
            acct.templates = await provider.launch_templates()
            if name not in acct.templates:
                raise
    return name, None, digest


def template_gone(e: errors.AwsError) -> bool:
    """A launch refused because its template no longer exists (collected elsewhere)."""
    return "LaunchTemplate" in e.code and (
        "NotFound" in e.code or e.kind is errors.ErrorClass.NOT_FOUND
    )


async def read_launch_spec(ctx: Ctx, spec: spec_model.SpotPolicySpec) -> port.LaunchSpec:
    launch = spec.launch
    assert launch is not None
    user_data = None
    if launch.user_data_secret_ref is not None:
        ref = launch.user_data_secret_ref
        data = await ctx.deps.secrets.read_secret(ctx.namespace, ref.name)
        if data is None or ref.key not in data:
            raise Stop(
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

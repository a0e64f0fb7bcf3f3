"""The observe step: everything a reconcile reads before it decides — the credentials
(through the Secret cache), the tenant's AWS account, the subnets, the policy's
instances from the account's shared sweep, the region's shared market — and the
periodic orphan scan. Reads only."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_operator import api, failures, state
from spotfleet_operator.api import spec as spec_model
from spotfleet_operator.aws import credentials, errors, port
from spotfleet_operator.pipeline import Ctx, Stop

log = logging.getLogger("spotfleet.observe")


def forget_credentials(
    ctx: Ctx, spec: spec_model.SpotPolicySpec, creds: credentials.TenantCredentials
) -> None:
    """AWS refused the keys: re-read the Secret next time instead of trusting the cache."""
    ref = spec.credentials.secret_ref
    if ref is not None:
        ctx.deps.secrets.forget_secret(ctx.namespace, ref.name)


async def credentials_of(
    ctx: Ctx, spec: spec_model.SpotPolicySpec
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
        raise Stop(
            failures.Failure(
                failures.Kind.KUBE_ERROR, f"reading Secret {where}: {e}", "secret-read"
            )
        ) from None
    if data is None:
        raise Stop(
            failures.Failure(failures.Kind.SECRET_NOT_FOUND, f"Secret {where} not found", where)
        )
    try:
        keys = credentials.StaticKeys.from_secret_data(data, where)
    except credentials.CredentialsError as e:
        raise Stop(failures.Failure(failures.Kind.SECRET_INVALID, str(e), str(e))) from None
    return keys, f"keys from Secret {where}"


async def subnets(
    ctx: Ctx,
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


@dataclass(frozen=True)
class View:
    """What one observation found: the engine policy (zones narrowed to the selected
    subnets), the account's and region's shared state, the subnets per zone, the market."""

    policy: model.Policy
    acct: state.AccountState
    region: state.RegionState
    catalog: catalog_mod.Catalog
    subnets: Mapping[str, str]
    market: market_mod.MarketSnapshot


async def observe(
    ctx: Ctx,
    spec: spec_model.SpotPolicySpec,
    creds: credentials.TenantCredentials,
    provider: port.CloudProvider,
) -> View:
    """Read what the decision needs (AwsError and Stop end the reconcile)."""
    deps, now = ctx.deps, ctx.now
    account_id = await deps.state.account_of(credentials.fingerprint(creds), provider)
    acct = deps.state.account(account_id, spec.region)
    policy = api.to_engine_policy(spec)
    found = await subnets(ctx, spec, provider, acct)
    if spec.subnet_selector is not None and not spec.dry_run:
        zones = tuple(sorted(z for z in found if not policy.zones or z in policy.zones))
        if not zones:
            raise Stop(
                failures.Failure(
                    failures.Kind.NO_MATCHING_SUBNETS,
                    "spec.subnetSelector matches no subnet in spec.availabilityZones",
                    "NoMatchingSubnets",
                )
            )
        policy = dataclasses.replace(policy, zones=zones)
    acct.provider = provider  # the account's shared jobs (template collection) act as it
    await acct.sweep.refresh(provider, now)
    rs = deps.state.region(spec.region)
    market = await rs.market.get(provider, now)
    await scan_orphans(ctx, acct)
    return View(policy, acct, rs, deps.catalog_for(spec.region), found, market)


async def scan_orphans(ctx: Ctx, acct: state.AccountState) -> None:
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
    await collect_templates(ctx, acct)


#: A shared template nothing uses is collected once it is this old.
TEMPLATE_MIN_AGE = dt.timedelta(hours=1)


async def collect_templates(ctx: Ctx, acct: state.AccountState) -> None:
    """Delete the account's shared launch templates nothing uses: no instance of the
    account's sweep was launched from their spec, no policy this operator reconciles
    launches with it, and they are older than :data:`TEMPLATE_MIN_AGE`. A policy of another
    shard that still wants one makes it again (act.py)."""
    if not acct.templates:
        return
    in_use = {o.spec_hash for insts in acct.sweep.policies().values() for o in insts}
    in_use |= {ps.spec_hash for ps in ctx.deps.state.policies.values()}
    provider = acct.provider
    if provider is None:
        return
    for name, info in list(acct.templates.items()):
        if not name.startswith(port.SHARED_TEMPLATE_PREFIX) or info.spec_hash in in_use:
            continue
        if info.created is None or ctx.now - info.created < TEMPLATE_MIN_AGE:
            continue
        try:
            await provider.delete_launch_template(name)
        except errors.AwsError as e:
            log.warning("unused launch template %s not deleted: %s", name, e)
            continue
        acct.templates.pop(name, None)
        log.info("deleted launch template %s: no policy or instance uses its spec", name)

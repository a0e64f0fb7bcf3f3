"""FleetState: the one owner of the operator's runtime state.

- per region (:class:`RegionState`): the market cache and the pools avoided after a
  capacity error or an interruption;
- per account and region (:class:`AccountState`, keyed by the AWS account id, which
  each tenant's credentials fingerprint resolves to once): the shared sweep of owned
  instances, the launch templates, subnets;
- per policy (:class:`PolicyState`): the lock every write for the policy holds, the
  wake-up event of its reconcile loop, the rebalance replacements of the past hour,
  the instances known doomed, and the consecutive failure count.

Written only through these methods. A policy's state is released when the policy is
deleted (:meth:`FleetState.release`). What must survive a restart is recovered, not
kept here alone: the fleet from EC2 tags (every sweep), replacement history and
avoided pools from the policy's status (:meth:`PolicyState.seed`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import model
from spotfleet_engine import plan as plan_mod
from spotfleet_operator import marketdata
from spotfleet_operator.aws import port

HOUR = dt.timedelta(hours=1)
#: How long our own launches/terminations override a sweep that does not show them yet
#: (DescribeInstances is eventually consistent).
SETTLE = dt.timedelta(minutes=3)
#: How long an instance that left the sweeps is still known by id, so that a notice
#: about it that arrives late (its warning after a sweep already missed it, a stopped
#: event queued while the operator was down) is still its policy's.
GONE_KEEP = HOUR


def _parse_time(text: str) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


class FleetSweep:
    """Every owned instance of one account and region, from ONE paginated
    DescribeInstances shared by all its policies and reused for ``max_age``; a policy's
    own launches and terminations are applied at once and kept for :data:`SETTLE` while
    sweeps do not reflect them yet (DescribeInstances is eventually consistent); a launch
    a sweep has shown is confirmed and left to the sweeps."""

    def __init__(self, max_age: dt.timedelta) -> None:
        self.max_age = max_age
        self.sweeps = 0
        self._by_policy: dict[str, dict[str, port.OwnedInstance]] = {}
        self._at: dt.datetime | None = None
        self._lock = asyncio.Lock()
        #: policy uid -> instance id -> (instance, when we launched it)
        self._launched: dict[str, dict[str, tuple[port.OwnedInstance, dt.datetime]]] = {}
        self._terminated: dict[str, dt.datetime] = {}
        #: instance id -> (instance, when a sweep first missed it)
        self._gone: dict[str, tuple[port.OwnedInstance, dt.datetime]] = {}

    def fresh(self, now: dt.datetime) -> bool:
        return self._at is not None and now - self._at <= self.max_age

    async def refresh(self, provider: port.CloudProvider, now: dt.datetime) -> None:
        """Sweep now unless a sweep younger than ``max_age`` exists (one at a time)."""
        if self.fresh(now):
            return
        async with self._lock:
            if self.fresh(now):
                return
            found = await provider.owned_instances(None)
            by: dict[str, dict[str, port.OwnedInstance]] = {}
            for o in found:
                by.setdefault(o.policy_uid, {})[o.instance_id] = o
            for uid, was in self._by_policy.items():
                still = by.get(uid, {})
                for iid, o in was.items():
                    if iid not in still:
                        self._gone.setdefault(iid, (o, now))
            self._by_policy, self._at = by, now
            self.sweeps += 1
            self._expire(now)
            # launches a sweep has shown are confirmed: from now on the sweeps speak for them
            # (so one that disappears later is gone, not kept alive by our own record)
            for uid in list(self._launched):
                seen = by.get(uid, {})
                mine = self._launched[uid]
                for iid in [i for i in mine if i in seen]:
                    del mine[iid]
                if not mine:
                    del self._launched[uid]

    def _expire(self, now: dt.datetime) -> None:
        for uid in list(self._launched):
            mine = self._launched[uid]
            for iid in [i for i, (_, t) in mine.items() if now - t > SETTLE]:
                del mine[iid]
            if not mine:
                del self._launched[uid]
        for iid in [i for i, t in self._terminated.items() if now - t > SETTLE]:
            del self._terminated[iid]
        for iid in [i for i, (_, t) in self._gone.items() if now - t > GONE_KEEP]:
            del self._gone[iid]

    def instances(self, policy_uid: str, now: dt.datetime) -> list[port.OwnedInstance]:
        """The policy's pending and running instances: the last sweep, plus what it
        launched and minus what it terminated within :data:`SETTLE`. Sorted by id."""
        mine = dict(self._by_policy.get(policy_uid, {}))
        for iid, (o, t) in self._launched.get(policy_uid, {}).items():
            if now - t <= SETTLE:
                mine.setdefault(iid, o)
        for iid in [i for i in mine if i in self._terminated]:
            if now - self._terminated[iid] <= SETTLE:
                del mine[iid]
        return sorted(mine.values(), key=lambda o: o.instance_id)

    def policies(self) -> dict[str, list[port.OwnedInstance]]:
        """Every policy uid the last sweep saw, with its instances (orphan detection)."""
        return {uid: list(v.values()) for uid, v in self._by_policy.items()}

    def owner(self, instance_id: str) -> port.OwnedInstance | None:
        """The instance ``instance_id`` as last known: running, just launched, or gone
        from the sweeps within :data:`GONE_KEEP`; None when it was never ours."""
        for by in self._by_policy.values():
            o = by.get(instance_id)
            if o is not None:
                return o
        for mine in self._launched.values():
            hit = mine.get(instance_id)
            if hit is not None:
                return hit[0]
        gone = self._gone.get(instance_id)
        return gone[0] if gone is not None else None

    def launched(self, instances: Iterable[port.OwnedInstance], now: dt.datetime) -> None:
        for o in instances:
            self._launched.setdefault(o.policy_uid, {})[o.instance_id] = (o, now)

    def terminated(self, instance_ids: Iterable[str], now: dt.datetime) -> None:
        for iid in instance_ids:
            self._terminated[iid] = now

    def terminated_by_us(self, instance_id: str) -> bool:
        """The operator itself terminated ``instance_id`` (within :data:`SETTLE`)."""
        return instance_id in self._terminated

    def forget_policy(self, policy_uid: str) -> None:
        self._by_policy.pop(policy_uid, None)
        self._launched.pop(policy_uid, None)
        for iid in [i for i, (o, _) in self._gone.items() if o.policy_uid == policy_uid]:
            del self._gone[iid]


#: First hold of a market after a quota refusal; doubles per refusal in a row.
QUOTA_BACKOFF = dt.timedelta(seconds=60)
QUOTA_BACKOFF_MAX = dt.timedelta(minutes=15)


@dataclass
class AccountState:
    """What one tenant account in one region shares across its policies."""

    sweep: FleetSweep
    templates: dict[str, port.TemplateInfo] | None = None
    templates_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subnets: dict[tuple[Any, ...], tuple[dt.datetime, dict[str, str]]] = field(default_factory=dict)
    orphan_scan_at: dt.datetime | None = None
    #: a provider of the account (the last reconcile's) for its shared jobs
    provider: port.CloudProvider | None = None
    orphans: dict[str, str] = field(default_factory=dict)
    #: markets whose account quota refused launches -> (retry after, refusals in a row)
    quota: dict[model.Market, tuple[dt.datetime, int, str]] = field(default_factory=dict)

    def quota_refused(self, market: model.Market, code: str, now: dt.datetime) -> dt.datetime:
        """The account's quota refused a launch in ``market``: hold that market at what
        runs until the returned time (QUOTA_BACKOFF doubling per refusal in a row, at
        most QUOTA_BACKOFF_MAX); a quota is the account's, so every policy of the
        account holds, and the other market can still grow."""
        held = self.quota.get(market)
        if held is not None and held[0] > now:
            return held[0]  # one refusal per hold (a re-plan can meet it again)
        hits = held[1] if held is not None else 0
        until: dt.datetime = now + min(QUOTA_BACKOFF_MAX, QUOTA_BACKOFF * 2**hits)
        self.quota[market] = (until, hits + 1, code)
        return until

    def quota_held(self, now: dt.datetime) -> dict[model.Market, tuple[dt.datetime, str]]:
        """Markets held for a quota at ``now`` -> (until when, the refusal's error code);
        expired holds are tried again, their refusal count stays until a launch in that
        market succeeds."""
        return {m: (until, code) for m, (until, _, code) in self.quota.items() if until > now}

    def quota_cleared(self, market: model.Market) -> None:
        """A launch in ``market`` succeeded without a quota refusal."""
        self.quota.pop(market, None)


@dataclass
class RegionState:
    """What every policy of one region shares."""

    market: marketdata.MarketCache
    unavailable: marketdata.UnavailablePools
    penalties: marketdata.InterruptionPenalties = field(
        default_factory=marketdata.InterruptionPenalties
    )


@dataclass(frozen=True)
class Decision:
    """A policy's last decision and what it was made from (reused while nothing changed)."""

    catalog: catalog_mod.Catalog  # compared by identity
    #: (engine policy, avoided pools, the fleet's instances per pool, its churn budget
    #: used, penalties, the market's prices and advisor for the pools the policy may use
    #: or runs in): compared by value
    key: tuple[Any, ...]
    #: the fleet's instances the plan was made for (its terminations name them); None
    #: for a plan without actions, which holds for any instances matching ``key``
    instances: tuple[model.FleetInstance, ...] | None
    plan: plan_mod.Plan
    at: dt.datetime


@dataclass
class PolicyState:
    """Runtime state of one policy (see the module docstring)."""

    uid: str
    ref: str  # "namespace/name"
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    replacements: list[dt.datetime] = field(default_factory=list)
    doomed: dict[str, dt.datetime] = field(default_factory=dict)
    failures: int = 0
    seeded: bool = False
    #: the generation the last reconcile acted on (a newer one wakes the loop)
    reconciled_generation: int | None = None
    #: spec.rebalance.onRebalanceRecommendation as last reconciled ("ignore"/"replace")
    on_rebalance: str = "ignore"
    #: spec.rebalance.maxReplacementsPerHour as last reconciled
    max_replacements: int = 10
    #: instances under a rebalance recommendation (also doomed): terminated by us once
    #: their replacements run
    recommended: set[str] = field(default_factory=set)
    #: instances launched to replace others (a move): the replaced ones are terminated
    #: only once these run -> when they were launched
    replacing: dict[str, dt.datetime] = field(default_factory=dict)
    last_decision: Decision | None = None
    #: the launch spec hash the policy last launched with (its shared template is in use)
    spec_hash: str = ""
    #: facts recorded by the interruption drainer for the next reconcile to report
    notices: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    #: label sets of this policy's per-pool metric series (removed when they go away)
    metric_pools: set[tuple[str, str, str]] = field(default_factory=set)
    #: interruption notices waiting for their replacement to run (instance id -> the
    #: store's row; :mod:`spotfleet_operator.audit`)
    interruptions: dict[str, Any] = field(default_factory=dict)
    #: instances a terminate call of ours is under way for (their state-change events
    #: can arrive before the call returns: they are no interruption)
    terminating: set[str] = field(default_factory=set)

    def seed(self, status: Mapping[str, Any] | None, now: dt.datetime) -> None:
        """Recover what survives a restart from the policy's last status (once)."""
        if self.seeded:
            return
        self.seeded = True
        for text in (status or {}).get("replacements") or []:
            t = _parse_time(str(text))
            if t is not None and now - t < HOUR:
                self.replacements.append(t)

    def replacements_last_hour(self, now: dt.datetime) -> int:
        self.replacements[:] = [t for t in self.replacements if now - t < HOUR]
        return len(self.replacements)

    def note_replacements(self, n: int, now: dt.datetime) -> None:
        self.replacements.extend([now] * n)

    def doom(self, instance_id: str, until: dt.datetime) -> None:
        self.doomed[instance_id] = max(until, self.doomed.get(instance_id, until))

    def doomed_now(self, now: dt.datetime) -> frozenset[str]:
        for iid in [i for i, t in self.doomed.items() if t <= now]:
            del self.doomed[iid]
        return frozenset(self.doomed)

    def poke(self) -> None:
        """Wake the policy's reconcile loop now."""
        self.wake.set()


class FleetState:
    """The owner (see the module docstring). ``market_lookback``, ``market_max_age``,
    ``sweep_max_age`` and ``unavailable_ttl`` come from the configuration."""

    def __init__(
        self,
        market_lookback: dt.timedelta,
        market_max_age: dt.timedelta,
        sweep_max_age: dt.timedelta,
        unavailable_ttl: dt.timedelta,
    ) -> None:
        self.market_lookback = market_lookback
        self.market_max_age = market_max_age
        self.sweep_max_age = sweep_max_age
        self.unavailable_ttl = unavailable_ttl
        self.regions: dict[str, RegionState] = {}
        self.accounts: dict[tuple[str, str], AccountState] = {}
        self.policies: dict[str, PolicyState] = {}
        #: credentials fingerprint -> AWS account id (one lookup per tenant, shared)
        self.tenants: dict[str, str] = {}
        self._tenant_lookups: dict[str, asyncio.Future[str]] = {}

    def region(self, region: str) -> RegionState:
        rs = self.regions.get(region)
        if rs is None:
            rs = self.regions[region] = RegionState(
                marketdata.MarketCache(region, self.market_lookback, self.market_max_age),
                marketdata.UnavailablePools(self.unavailable_ttl),
            )
        return rs

    def account(self, account_id: str, region: str) -> AccountState:
        key = (account_id, region)
        acct = self.accounts.get(key)
        if acct is None:
            acct = self.accounts[key] = AccountState(FleetSweep(self.sweep_max_age))
        return acct

    async def account_of(self, tenant: str, provider: port.CloudProvider) -> str:
        """The AWS account of the credentials ``tenant`` (their fingerprint), asked once
        (concurrent askers share the one call)."""
        known = self.tenants.get(tenant)
        if known is not None:
            return known
        pending = self._tenant_lookups.get(tenant)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tenant_lookups[tenant] = fut
        try:
            account = await provider.account_id()
            self.tenants[tenant] = account
            fut.set_result(account)
            return account
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._tenant_lookups[tenant]

    def policy(self, uid: str, ref: str) -> PolicyState:
        ps = self.policies.get(uid)
        if ps is None:
            ps = self.policies[uid] = PolicyState(uid, ref)
        return ps

    def release(self, uid: str) -> None:
        """Forget a deleted policy everywhere it was known."""
        self.policies.pop(uid, None)
        for acct in self.accounts.values():
            acct.sweep.forget_policy(uid)

    def owner_of(self, instance_id: str) -> tuple[port.OwnedInstance, str, AccountState] | None:
        """(instance, region, account) of ``instance_id`` as the sweeps know it."""
        for (_, region), acct in self.accounts.items():
            o = acct.sweep.owner(instance_id)
            if o is not None:
                return o, region, acct
        return None

    def mark_unavailable(
        self, region: str, pools: Sequence[model.Pool], now: dt.datetime
    ) -> dict[model.Pool, dt.datetime]:
        """Avoid ``pools`` in ``region``; returns until when, per pool."""
        book = self.region(region).unavailable
        return {p: book.mark(p, now) for p in pools}

"""An in-memory :class:`~spotfleet_operator.aws.port.CloudProvider` for fast component
tests of reconcile/finalize (in addition to the integration tests against the stand-in
cloud, not instead of them). Prices come from the bundled real 2021 history.

It keeps the port's contract (idempotent launches by token, capacity errors in the
answer, not-found tolerated) and counts calls by port method; "mutating" is the port's
own definition (:data:`spotfleet_operator.aws.port.MUTATING_METHODS`).
"""

from __future__ import annotations

import datetime as dt
import inspect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_operator.aws import errors, port


@dataclass
class FakeInstance:
    instance_id: str
    pool: model.Pool
    tags: dict[str, str]
    state: str = "running"
    launched_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass
class FakeEc2:
    """Implements port.CloudProvider in memory, at ``market_time`` of the bundled history."""

    market_time: dt.datetime
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    unavailable: set[model.Pool] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    tokens: dict[str, port.LaunchResult] = field(default_factory=dict)
    templates: dict[str, tuple[port.LaunchSpec, port.TemplateInfo]] = field(default_factory=dict)
    auth_error: bool = False
    fail_next: list[errors.AwsError] = field(default_factory=list)
    #: every launch answers this quota error (VcpuLimitExceeded...) instead of launching
    quota_error: str | None = None
    #: new instances start in this state ("running", or "pending" to test launch-before-terminate)
    launch_state: str = "running"
    #: (type, zone) -> factor: a price move of that pool from ``price_moved_at`` on
    price_factor: dict[tuple[str, str], float] = field(default_factory=dict)
    price_moved_at: dt.datetime | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        """Back to an empty account (keeps the market time and launch state)."""
        self.instances.clear()
        self.unavailable.clear()
        self.calls.clear()
        self.tokens.clear()
        self.templates.clear()
        self.auth_error = False
        self.fail_next.clear()

    def _enter(self, op: str) -> None:
        self.calls.append(op)
        if self.auth_error:
            raise errors.AwsError(
                op,
                "AuthFailure",
                "AWS was not able to validate the credentials",
                errors.ErrorClass.AUTH,
            )
        if self.fail_next:
            raise self.fail_next.pop(0)

    def mutating_calls(self) -> int:
        return sum(1 for c in self.calls if c in port.MUTATING_METHODS)

    def running(self, uid: str | None = None) -> list[FakeInstance]:
        return [
            i
            for i in self.instances.values()
            if i.state in ("pending", "running")
            and (uid is None or i.tags.get(port.TAG_POLICY_UID) == uid)
        ]

    def start_all(self) -> None:
        """Every pending instance is running now."""
        for i in self.instances.values():
            if i.state == "pending":
                i.state = "running"

    async def account_id(self) -> str:
        self._enter("account_id")
        return "123456789012"

    async def owned_instances(self, policy_uid: str | None = None) -> list[port.OwnedInstance]:
        self._enter("owned_instances")
        return sorted(
            (
                port.OwnedInstance(
                    i.instance_id,
                    i.pool,
                    i.state,
                    i.launched_at,
                    i.tags[port.TAG_POLICY_UID],
                    i.tags.get(port.TAG_POLICY, ""),
                    i.tags.get(port.TAG_SPEC_HASH, ""),
                )
                for i in self.running()
                if port.TAG_POLICY_UID in i.tags
                and (policy_uid is None or i.tags[port.TAG_POLICY_UID] == policy_uid)
            ),
            key=lambda o: o.instance_id,
        )

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> list[port.PricePoint]:
        self._enter("spot_price_history")
        snap = market_mod.snapshot_at(
            market_mod.load_bundled_history(), self.market_time, lookback=dt.timedelta(hours=24)
        )
        out = [
            port.PricePoint(t, z, p.at, p.price)
            for (t, z), pts in snap.spot_history.items()
            for p in pts
            if not instance_types or t in instance_types
        ]
        if self.price_moved_at is not None:
            for (t, z), f in self.price_factor.items():
                base = snap.spot_price(t, z)
                if base is not None:
                    out.append(port.PricePoint(t, z, self.price_moved_at, base * f))
        return out

    async def subnets_by_zone(
        self, subnet_ids: Sequence[str] = (), tags: dict[str, str] | None = None
    ) -> dict[str, str]:
        self._enter("subnets_by_zone")
        return {f"us-east-1{c}": f"subnet-{c}" for c in "abcdef"}

    async def launch_templates(self) -> dict[str, port.TemplateInfo]:
        self._enter("launch_templates")
        return {name: info for name, (_, info) in self.templates.items()}

    async def create_launch_template(
        self, spec: port.LaunchSpec, tags: dict[str, str]
    ) -> port.TemplateInfo:
        self._enter("create_launch_template")
        name = port.shared_template_name(spec.content_hash())
        if name in self.templates:
            raise errors.AwsError(
                "CreateLaunchTemplate",
                "InvalidLaunchTemplateName.AlreadyExistsException",
                "Launch template name already in use.",
                errors.ErrorClass.INVALID,
            )
        info = port.TemplateInfo(
            name, f"lt-{len(self.templates) + 1:017x}", spec.content_hash(), self.market_time
        )
        self.templates[name] = (spec, info)
        return info

    async def launch(
        self,
        pool: model.Pool,
        count: int,
        template: str,
        token: str,
        tags: dict[str, str],
        subnet_id: str | None = None,
        template_version: str | None = None,
    ) -> port.LaunchResult:
        self._enter("launch")
        if token in self.tokens:
            return self.tokens[token]
        if self.quota_error is not None:
            result = port.LaunchResult(
                (), (port.LaunchError(pool, self.quota_error, "account quota reached"),)
            )
        elif pool in self.unavailable:
            result = port.LaunchResult(
                (), (port.LaunchError(pool, "InsufficientInstanceCapacity", "no capacity"),)
            )
        else:
            ids = []
            for _ in range(count):
                iid = f"i-{next(self._ids):017x}"
                self.instances[iid] = FakeInstance(iid, pool, dict(tags), self.launch_state)
                ids.append(iid)
            result = port.LaunchResult(tuple(ids), ())
        self.tokens[token] = result
        return result

    async def terminate(self, instance_ids: Sequence[str]) -> port.TerminateResult:
        self._enter("terminate")
        done = []
        for iid in instance_ids:
            inst = self.instances.get(iid)
            if inst and inst.state in ("pending", "running"):
                inst.state = "terminated"
                done.append(iid)
        return port.TerminateResult(tuple(done), (f"fake-{len(self.calls)}",))

    async def untag(self, instances: Sequence[port.OwnedInstance]) -> None:
        self._enter("untag")
        for o in instances:
            for k in (*port.OWNERSHIP_KEYS, port.TAG_SPEC_HASH):
                self.instances[o.instance_id].tags.pop(k, None)

    async def delete_launch_template(self, name: str) -> bool:
        self._enter("delete_launch_template")
        return self.templates.pop(name, None) is not None


def conformance_problems(impl: type) -> list[str]:
    """Where ``impl`` does not match the CloudProvider protocol: a missing method, or one
    whose parameter names differ (checked for the fake and the real adapter alike)."""
    out = []
    for name, member in inspect.getmembers(port.CloudProvider, inspect.isfunction):
        if name.startswith("_"):
            continue
        mine = getattr(impl, name, None)
        if mine is None:
            out.append(f"{impl.__name__} lacks {name}")
            continue
        want = list(inspect.signature(member).parameters)
        got = list(inspect.signature(mine).parameters)
        if want != got:
            out.append(f"{impl.__name__}.{name}{got} != CloudProvider.{name}{want}")
        if not inspect.iscoroutinefunction(mine):
            out.append(f"{impl.__name__}.{name} is not a coroutine function")
    return out

"""An in-memory EC2 for fast component tests of reconcile/finalize (in addition to
the integration tests against the stand-in cloud, not instead of them)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_operator.aws import ec2, errors


@dataclass
class FakeInstance:
    instance_id: str
    pool: model.Pool
    tags: dict[str, str]
    state: str = "running"
    launched_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass
class FakeEc2:
    """Implements reconcile.Ec2Api. Prices come from the bundled real history at ``market_time``."""

    market_time: dt.datetime
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    unavailable: set[model.Pool] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    tokens: dict[str, ec2.LaunchResult] = field(default_factory=dict)
    templates: dict[str, ec2.LaunchSpec] = field(default_factory=dict)
    auth_error: bool = False
    fail_next: list[errors.AwsError] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    MUTATING = frozenset(
        {"ensure_launch_template", "launch", "terminate", "untag", "delete_launch_template"}
    )

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
        return sum(1 for c in self.calls if c in self.MUTATING)

    def running(self, uid: str | None = None) -> list[FakeInstance]:
        return [
            i
            for i in self.instances.values()
            if i.state == "running" and (uid is None or i.tags.get(ec2.TAG_POLICY_UID) == uid)
        ]

    async def owned_instances(self, policy_uid: str | None = None) -> list[ec2.OwnedInstance]:
        self._enter("owned_instances")
        return [
            ec2.OwnedInstance(
                i.instance_id,
                i.pool,
                i.state,
                i.launched_at,
                i.tags[ec2.TAG_POLICY_UID],
                i.tags.get(ec2.TAG_POLICY, ""),
            )
            for i in self.running()
            if ec2.TAG_POLICY_UID in i.tags
            and (policy_uid is None or i.tags[ec2.TAG_POLICY_UID] == policy_uid)
        ]

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> list[ec2.PricePoint]:
        self._enter("spot_price_history")
        snap = market_mod.snapshot_at(
            market_mod.load_bundled_history(), self.market_time, lookback=dt.timedelta(hours=24)
        )
        return [
            ec2.PricePoint(t, z, p.at, p.price)
            for (t, z), pts in snap.spot_history.items()
            for p in pts
            if not instance_types or t in instance_types
        ]

    async def subnets_by_zone(
        self, subnet_ids: Sequence[str] = (), tags: dict[str, str] | None = None
    ) -> dict[str, str]:
        self._enter("subnets_by_zone")
        return {f"us-east-1{c}": f"subnet-{c}" for c in "abcdef"}

    async def ensure_launch_template(
        self, policy_uid: str, spec: ec2.LaunchSpec, tags: dict[str, str]
    ) -> str:
        self._enter("ensure_launch_template")
        name = spec.launch_template_name or ec2.launch_template_name(policy_uid)
        self.templates[name] = spec
        return name

    async def launch(
        self,
        pool: model.Pool,
        count: int,
        template: str,
        token: str,
        tags: dict[str, str],
        subnet_id: str | None = None,
        template_version: str | None = None,
    ) -> ec2.LaunchResult:
        self._enter("launch")
        if token in self.tokens:
            return self.tokens[token]
        if pool in self.unavailable:
            result = ec2.LaunchResult(
                (), (ec2.LaunchError(pool, "InsufficientInstanceCapacity", "no capacity"),)
            )
        else:
            ids = []
            for _ in range(count):
                iid = f"i-{next(self._ids):017x}"
                self.instances[iid] = FakeInstance(iid, pool, dict(tags))
                ids.append(iid)
            result = ec2.LaunchResult(tuple(ids), (), "fleet-1")
        self.tokens[token] = result
        return result

    async def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        self._enter("terminate")
        done = []
        for iid in instance_ids:
            inst = self.instances.get(iid)
            if inst and inst.state == "running":
                inst.state = "terminated"
                done.append(iid)
        return done

    async def untag(self, instances: Sequence[ec2.OwnedInstance]) -> None:
        self._enter("untag")
        for o in instances:
            for k in ec2.OWNERSHIP_KEYS:
                self.instances[o.instance_id].tags.pop(k, None)

    async def delete_launch_template(self, policy_uid: str) -> bool:
        self._enter("delete_launch_template")
        return self.templates.pop(ec2.launch_template_name(policy_uid), None) is not None

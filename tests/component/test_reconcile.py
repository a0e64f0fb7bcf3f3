"""Component tests: reconcile against an in-memory EC2 on real bundled prices."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_engine import model
from spotfleet_engine.risk import advisor
from spotfleet_operator import config, metrics, reconcile
from spotfleet_operator.aws import ec2, errors
from tests.component.fake_ec2 import FakeEc2
from tests.fixtures.operator import base_spec

REPO = Path(__file__).resolve().parents[2]
MARKET_TIME = dt.datetime(2021, 5, 20, 12, tzinfo=dt.UTC)
NOW = MARKET_TIME


class Secrets:
    def __init__(self, data: dict[tuple[str, str], dict[str, str]]) -> None:
        self.data = data
        self.reads: list[tuple[str, str]] = []

    async def read(self, namespace: str, name: str) -> dict[str, str] | None:
        self.reads.append((namespace, name))
        return self.data.get((namespace, name))


KEYS = {
    "aws_access_key_id": "AKIAFAKEFAKEFAKE0001",
    "aws_secret_access_key": "fake/secret/never/logged",
}


def policy(spec_overrides: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    spec = base_spec()
    for k, v in (spec_overrides or {}).items():
        spec[k] = v
    return {
        "apiVersion": "spotfleet.dev/v1alpha1",
        "kind": "SpotPolicy",
        "metadata": {
            "name": "web",
            "namespace": "team-a",
            "uid": "uid-web-1",
            "generation": generation,
        },
        "spec": spec,
    }


def make_deps(fake: FakeEc2, secrets: Secrets | None = None) -> reconcile.Deps:
    return reconcile.Deps(
        config=config.OperatorConfig(unavailable_pool_ttl_seconds=300, market_cache_seconds=0),
        ec2_factory=lambda creds, region: fake,
        secrets=secrets or Secrets({("team-a", "aws"): KEYS}),
        risk=advisor.AdvisorBandRisk(),
        metrics=metrics.Metrics(),
    )


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def units(fake: FakeEc2, uid: str = "uid-web-1") -> dict[model.Market, float]:
    from spotfleet_engine import catalog

    cat = catalog.load_bundled("us-east-1")
    out = {model.Market.SPOT: 0.0, model.Market.ON_DEMAND: 0.0}
    for i in fake.running(uid):
        out[i.pool.market] += cat.types[i.pool.instance_type].vcpus
    return out


async def test_first_reconcile_launches_the_plan_and_reports_ready() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    res = await reconcile.run(policy(), deps, NOW)
    assert res.plan is not None and res.plan.outcome in ("Optimal", "Feasible")
    # EC2 holds exactly the planned mix
    held: dict[model.Pool, int] = {}
    for i in fake.running():
        held[i.pool] = held.get(i.pool, 0) + 1
    assert held == dict(res.plan.targets)
    u = units(fake)
    assert u[model.Market.SPOT] + u[model.Market.ON_DEMAND] >= 32
    assert u[model.Market.ON_DEMAND] >= 4
    assert len(held) >= 2  # minPools counts every pool, on-demand included (spec.strategy docs)
    st = res.status
    assert cond(st, "Ready")["status"] == "True"
    assert cond(st, "CapacityFulfilled")["status"] == "True"
    assert cond(st, "CredentialsValid")["status"] == "True"
    assert st["observedGeneration"] == 1
    assert float(st["cost"]["perHour"]) > 0
    assert float(st["cost"]["savingsPercent"]) > 0
    assert sum(a["count"] for a in st["allocation"]) == len(fake.running())
    # every instance carries the ownership tags
    for i in fake.running():
        assert i.tags[ec2.TAG_POLICY_UID] == "uid-web-1"
        assert i.tags[ec2.TAG_POLICY] == "team-a/web"
        assert model.Pool.parse(i.tags[ec2.TAG_POOL]) == i.pool
    assert any(e.reason == "Launched" for e in res.events)
    text = repr(res) + repr(deps.metrics.exposition())
    assert KEYS["aws_secret_access_key"] not in text and KEYS["aws_access_key_id"] not in text


async def test_second_reconcile_is_a_no_op_without_events() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy()
    first = await reconcile.run(body, deps, NOW)
    body["status"] = first.status
    n = len(fake.running())
    second = await reconcile.run(body, deps, NOW + dt.timedelta(minutes=1))
    assert len(fake.running()) == n
    assert second.events == []
    assert (
        cond(second.status, "Ready")["lastTransitionTime"]
        == cond(first.status, "Ready")["lastTransitionTime"]
    )


async def test_restarted_operator_adopts_and_launches_nothing_twice() -> None:
    fake = FakeEc2(MARKET_TIME)
    await reconcile.run(policy(), make_deps(fake), NOW)
    ids = {i.instance_id for i in fake.running()}
    before = len(fake.calls)
    # a new process: fresh Deps, no status (e.g. the status write was lost)
    res = await reconcile.run(policy(), make_deps(fake), NOW + dt.timedelta(seconds=5))
    assert {i.instance_id for i in fake.running()} == ids
    assert "launch" not in fake.calls[before:]
    assert cond(res.status, "Ready")["status"] == "True"


async def test_scale_up_and_down_keeps_on_demand_base() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    await reconcile.run(policy(), deps, NOW)
    up = policy({"capacity": {"target": 64, "unit": "vcpu"}}, generation=2)
    await reconcile.run(up, deps, NOW + dt.timedelta(minutes=1))
    u = units(fake)
    assert u[model.Market.SPOT] + u[model.Market.ON_DEMAND] >= 64
    down = policy({"capacity": {"target": 16, "unit": "vcpu"}}, generation=3)
    res = await reconcile.run(down, deps, NOW + dt.timedelta(minutes=2))
    u = units(fake)
    assert 16 <= u[model.Market.SPOT] + u[model.Market.ON_DEMAND] < 64
    assert u[model.Market.ON_DEMAND] >= 4
    assert any(e.reason == "Terminated" for e in res.events)


async def test_capacity_error_marks_pool_and_lands_elsewhere() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    # find the pools the plan would use, then take them all away
    probe = FakeEc2(MARKET_TIME)
    first = await reconcile.run(policy(), make_deps(probe), NOW)
    assert first.plan is not None
    spot_pools = {p for p in first.plan.targets if p.market is model.Market.SPOT}
    fake.unavailable |= spot_pools
    res = await reconcile.run(policy(), deps, NOW)
    assert not any(i.pool in spot_pools for i in fake.running())
    u = units(fake)
    assert u[model.Market.SPOT] + u[model.Market.ON_DEMAND] >= 32
    warnings = [e for e in res.events if e.reason == "InsufficientCapacity"]
    assert {w.message.split(":")[0] for w in warnings} <= {p.key() for p in spot_pools}
    assert warnings
    avoided = [
        a for a in res.status["lastDecision"].get("alternatives", []) if "avoided" in a["reason"]
    ]
    assert avoided
    # after the TTL the pool is tried again
    active = deps.unavailable_pools("us-east-1").active(NOW + dt.timedelta(seconds=301))
    assert active == frozenset()


async def test_dry_run_makes_no_mutating_call() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    res = await reconcile.run(policy({"dryRun": True}), deps, NOW)
    assert fake.mutating_calls() == 0 and res.mutating_calls == 0
    assert fake.running() == []
    assert res.plan is not None and res.plan.launches
    assert cond(res.status, "Progressing")["reason"] == "DryRun"
    assert any(e.reason == "DryRun" for e in res.events)


async def test_invalid_spec_is_a_condition_not_a_crash() -> None:
    fake = FakeEc2(MARKET_TIME)
    body = policy({"capacity": {"target": "lots", "unit": "vcpu"}})
    res = await reconcile.run(body, make_deps(fake), NOW)
    d = cond(res.status, "Degraded")
    assert d["status"] == "True" and d["reason"] == "InvalidSpec"
    assert "spec.capacity.target" in d["message"]
    assert fake.calls == []


async def test_missing_secret_sets_credentials_invalid_and_calls_nothing() -> None:
    fake = FakeEc2(MARKET_TIME)
    secrets = Secrets({})
    res = await reconcile.run(policy(), make_deps(fake, secrets), NOW)
    c = cond(res.status, "CredentialsValid")
    assert c["status"] == "False" and c["reason"] == "SecretNotFound"
    assert "team-a/aws" in c["message"]
    assert fake.calls == []
    # the secret is looked up only in the policy's own namespace
    assert secrets.reads == [("team-a", "aws")]


async def test_rejected_credentials_stop_acting() -> None:
    fake = FakeEc2(MARKET_TIME, auth_error=True)
    res = await reconcile.run(policy(), make_deps(fake), NOW)
    c = cond(res.status, "CredentialsValid")
    assert c["status"] == "False" and c["reason"] == "AccessDenied"
    assert fake.mutating_calls() == 0
    assert cond(res.status, "Ready")["status"] == "False"


async def test_transient_failures_degrade_after_n_and_recover() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy()
    for i in range(3):
        fake.fail_next.append(
            errors.AwsError(
                "DescribeInstances", "InternalError", "boom", errors.ErrorClass.TRANSIENT
            )
        )
        res = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=i))
        body = copy.deepcopy(body) | {"status": res.status}
        assert res.requeue_after is not None and res.requeue_after > 0
        assert res.status["lastError"]["reason"] == "AWSError"
    assert cond(res.status, "Degraded")["status"] == "True"
    ok = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=10))
    assert cond(ok.status, "Degraded")["status"] == "False"
    assert ok.status["lastError"] is None


async def test_suspend_stops_acting() -> None:
    fake = FakeEc2(MARKET_TIME)
    res = await reconcile.run(policy({"suspend": True}), make_deps(fake), NOW)
    assert fake.calls == []
    assert cond(res.status, "Progressing")["reason"] == "Suspended"


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.yaml")))
async def test_every_example_reconciles_without_error(example: str) -> None:
    body = yaml.safe_load((REPO / "examples" / example).read_text())
    body["metadata"].update(namespace="team-a", uid=f"uid-{example}", generation=1)
    secret = body["spec"]["credentials"].get("secretRef", {}).get("name", "")
    data = {("team-a", secret): KEYS}
    ud = (body["spec"].get("launch") or {}).get("userDataSecretRef")
    if ud:
        data[("team-a", ud["name"])] = {ud["key"]: "#!/bin/sh\necho hello\n"}
    fake = FakeEc2(MARKET_TIME)
    res = await reconcile.run(body, make_deps(fake, Secrets(data)), NOW)
    assert {c["type"] for c in res.status["conditions"]} == {
        "Ready",
        "CapacityFulfilled",
        "CredentialsValid",
        "Degraded",
        "Progressing",
    }
    assert cond(res.status, "Degraded")["reason"] != "InvalidSpec"
    assert res.status["lastError"] is None or res.status["lastError"]["reason"] in (
        "BudgetExceeded",
        "NoEligiblePools",
        "InsufficientCapacity",
    ), res.status["lastError"]
    assert res.plan is not None


async def test_instances_of_a_deleted_policy_are_reported_not_terminated() -> None:
    fake = FakeEc2(MARKET_TIME)
    gone = policy()
    gone["metadata"]["uid"] = "uid-gone"
    gone["metadata"]["name"] = "old"
    await reconcile.run(gone, make_deps(fake), NOW)  # its instances stay tagged for uid-gone
    orphan_ids = {i.instance_id for i in fake.running("uid-gone")}
    assert orphan_ids

    async def live() -> set[str]:
        return {"uid-web-1"}

    deps = make_deps(fake)
    deps.live_policy_uids = live
    await reconcile.run(policy(), deps, NOW)
    assert set(deps.orphans[("keys:" + _fingerprint(), "us-east-1")]) == orphan_ids
    assert (
        f"spotfleet_orphaned_instances {float(len(orphan_ids))}"
        in deps.metrics.exposition().decode()
    )
    assert {i.instance_id for i in fake.running("uid-gone")} == orphan_ids  # never terminated
    # rate-limited: a second reconcile right away does not scan again
    key = ("keys:" + _fingerprint(), "us-east-1")
    await reconcile.run(policy(), deps, NOW + dt.timedelta(seconds=30))
    assert deps.orphan_scans[key] == NOW
    await reconcile.run(policy(), deps, NOW + dt.timedelta(minutes=6))
    assert deps.orphan_scans[key] == NOW + dt.timedelta(minutes=6)


def _fingerprint() -> str:
    from spotfleet_operator.aws import credentials

    return credentials.StaticKeys.from_secret_data(KEYS, "x").fingerprint()[len("keys:") :]

"""Component tests: reconcile against an in-memory EC2 on real bundled prices."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import kopf
import pytest
import yaml

from spotfleet_engine import candidates, catalog, model
from spotfleet_engine import market as market_mod
from spotfleet_operator import api, finalize, reconcile
from spotfleet_operator.aws import ec2, errors, port
from tests.component.fake_ec2 import FakeEc2, conformance_problems
from tests.component.harness import (
    KEYS,
    MARKET_TIME,
    NOW,
    Secrets,
    cond,
    make_config,
    make_deps,
    policy,
    total,
    units,
    with_status,
    writer,
)

REPO = Path(__file__).resolve().parents[2]


def test_fake_and_adapter_both_meet_the_port() -> None:
    assert conformance_problems(FakeEc2) == []
    assert conformance_problems(ec2.Ec2) == []


async def test_first_reconcile_launches_the_plan_and_reports_ready() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    res = await reconcile.run(policy(), deps, NOW)
    assert res.plan is not None and res.plan.outcome in ("Optimal", "Feasible")
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
    assert all(c["observedGeneration"] == 1 for c in st["conditions"])
    assert float(st["cost"]["perHour"]) > 0
    assert float(st["cost"]["savingsPercent"]) > 0
    assert sum(a["count"] for a in st["allocation"]) == len(fake.running())
    for i in fake.running():
        assert i.tags[port.TAG_POLICY_UID] == "uid-web-1"
        assert i.tags[port.TAG_POLICY] == "team-a/web"
        assert model.Pool.parse(i.tags[port.TAG_POOL]) == i.pool
    assert any(e.reason == "Launched" for e in res.events)
    assert writer(deps).patches and writer(deps).patches[-1][2] == res.status
    text = repr(res) + repr(deps.metrics.exposition()) + repr(writer(deps).events)
    assert KEYS["aws_secret_access_key"] not in text and KEYS["aws_access_key_id"] not in text


async def test_second_reconcile_is_a_no_op_without_events_or_writes() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy()
    first = await reconcile.run(body, deps, NOW)
    body = with_status(body, first)
    second = await reconcile.run(body, deps, NOW + dt.timedelta(minutes=1))
    body = with_status(body, second)
    n = len(fake.running())
    third = await reconcile.run(body, deps, NOW + dt.timedelta(minutes=2))
    assert len(fake.running()) == n
    assert second.events == [] and third.events == []
    assert not third.written  # nothing changed: no status patch at all
    assert (
        cond(third.status, "Ready")["lastTransitionTime"]
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


async def test_steady_reconciles_share_one_sweep_per_account() -> None:
    """Policies of one account and region share the DescribeInstances sweep and the
    market: per steady reconcile far below one AWS call each."""
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake, cfg=make_config(fleet_sweep_seconds=30, market_cache_seconds=30))
    bodies = []
    for i in range(10):
        b = policy({"capacity": {"target": 8, "unit": "vcpu"}, "onDemand": {"base": 0}})
        b["metadata"].update(name=f"p{i}", uid=f"uid-{i}")
        bodies.append(b)
    for b in bodies:
        await reconcile.run(b, deps, NOW)
    shared = ("account_id", "owned_instances", "spot_price_history", "launch_templates")
    assert [fake.calls.count(c) for c in shared] == [1, 1, 1, 1]  # once for the whole account
    own = [c for c in fake.calls if c not in shared]
    assert len(own) <= 3 * len(bodies), own  # <= 3 AWS calls per policy to converge
    steady_from = len(fake.calls)
    for b in bodies:
        await reconcile.run(b, deps, NOW + dt.timedelta(minutes=1))
    steady = fake.calls[steady_from:]
    assert steady.count("owned_instances") == 1 and steady.count("spot_price_history") == 1
    assert len(steady) / len(bodies) <= 0.2


async def test_a_template_made_elsewhere_since_the_listing_is_adopted() -> None:
    """Another shard (or process) made the policy's template after this operator listed
    the account's templates: the create is refused, the list is read again, no failure."""
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    other = policy({"launch": {"imageId": "ami-0fedcba9876543210"}})  # another launch spec
    other["metadata"].update(name="other", uid="uid-other")
    await reconcile.run(other, deps, NOW)  # the account's templates are listed now
    elsewhere = FakeEc2(MARKET_TIME)
    await reconcile.run(policy(), make_deps(elsewhere), NOW)
    fake.templates.update(elsewhere.templates)  # the same account: made by someone else
    res = await reconcile.run(policy(), deps, NOW + dt.timedelta(seconds=1))
    assert res.retry is None, res.status.get("lastError")
    assert fake.calls.count("launch_templates") == 2
    assert cond(res.status, "Ready")["status"] == "True"


def _reused(deps: reconcile.Deps) -> float:
    return deps.metrics.decisions_reused._value.get()  # type: ignore[attr-defined,no-any-return]


async def test_an_unchanged_decision_is_reused_and_a_change_is_solved() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake, cfg=make_config(market_cache_seconds=600, fleet_sweep_seconds=0))
    body = policy()
    first = await reconcile.run(body, deps, NOW)
    body = with_status(body, first)
    assert first.plan is not None and first.plan.launches and _reused(deps) == 0
    # the fleet grew by exactly the plan's launches: the plan carried out, not a new solve
    r = await reconcile.run(body, deps, NOW + dt.timedelta(minutes=1))
    body = with_status(body, r)
    assert _reused(deps) == 1 and r.plan is not None
    assert r.plan == first.plan.carried_out() and r.plan.outcome == "NoChange"
    assert cond(r.status, "Ready")["status"] == "True"
    again = await reconcile.run(body, deps, NOW + dt.timedelta(minutes=2))
    assert _reused(deps) == 2 and again.plan is r.plan  # nothing changed: the same plan
    gone = next(iter(fake.running()))
    gone.state = "terminated"  # the fleet changed behind our back
    after = await reconcile.run(with_status(body, again), deps, NOW + dt.timedelta(minutes=3))
    assert _reused(deps) == 2 and after.plan is not None and after.plan.launches
    late = await reconcile.run(with_status(body, after), deps, NOW + dt.timedelta(minutes=30))
    assert late.plan is not None and late.plan is not after.plan  # too old to reuse


async def test_a_launch_that_went_elsewhere_is_decided_again() -> None:
    """Only a launch-only plan carried out in full skips the next solve: when a pool was
    out of capacity and the reconcile re-planned around it, the next reconcile solves."""
    probe = FakeEc2(MARKET_TIME)
    planned = await reconcile.run(policy(), make_deps(probe), NOW)
    assert planned.plan is not None
    dry = next(p for p in planned.plan.targets if p.market is model.Market.SPOT)
    fake = FakeEc2(MARKET_TIME)
    fake.unavailable.add(dry)
    deps = make_deps(fake, cfg=make_config(market_cache_seconds=600, fleet_sweep_seconds=0))
    body = policy()
    r = await reconcile.run(body, deps, NOW)
    assert r.plan is not None and dry not in r.plan.targets  # re-planned in the reconcile
    assert r.plan.capacity >= r.plan.target
    fake.unavailable.clear()
    nxt = await reconcile.run(with_status(body, r), deps, NOW + dt.timedelta(minutes=1))
    assert _reused(deps) == 0 and nxt.plan is not None and not nxt.plan.launches


async def test_a_price_move_elsewhere_reuses_the_decision_and_one_it_may_use_solves() -> None:
    # a fresh market snapshot on every reconcile (as in a region where some pool's price
    # changes every few seconds): only the pools the policy may use decide
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake, cfg=make_config(market_cache_seconds=0, fleet_sweep_seconds=0))
    body = policy()
    for k in range(2):  # launch, then see the fleet
        body = with_status(body, await reconcile.run(body, deps, NOW + dt.timedelta(seconds=k)))
    settled = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=2))
    body = with_status(body, settled)
    assert settled.plan is not None
    spec = api.parse_spec(body["spec"])
    assert not isinstance(spec, api.InvalidSpec)
    engine_policy = api.to_engine_policy(spec)
    cat = catalog.load_bundled("us-east-1")
    usable = candidates.eligible_types(engine_policy, cat)
    snap = market_mod.snapshot_at(
        market_mod.load_bundled_history(), MARKET_TIME, lookback=dt.timedelta(hours=24)
    )
    pools = sorted(snap.spot_history)
    elsewhere = next(k for k in pools if k[0] not in usable)
    inside = next(k for k in pools if k[0] in usable)
    fake.price_moved_at = NOW + dt.timedelta(seconds=3)
    fake.price_factor = {elsewhere: 1.5}
    before = _reused(deps)
    moved = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=4))
    assert _reused(deps) == before + 1 and moved.plan is settled.plan
    fake.price_factor = {elsewhere: 1.5, inside: 0.2}
    cheaper = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=5))
    assert _reused(deps) == before + 1 and cheaper.plan is not settled.plan


async def test_policies_with_one_launch_spec_share_one_template_and_unused_ones_go() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)

    async def live() -> set[str]:
        return {"uid-a", "uid-b"}

    deps.live_policy_uids = live
    bodies = []
    for name in ("a", "b"):
        b = policy()
        b["metadata"].update(name=name, uid=f"uid-{name}")
        bodies.append(with_status(b, await reconcile.run(b, deps, NOW)))
    assert fake.calls.count("create_launch_template") == 1  # one spec, one template
    (name,) = fake.templates
    assert all(i.tags[port.TAG_SPEC_HASH] in name for i in fake.running())
    for b in bodies:
        await finalize.run(b, deps, NOW, attempt=0)  # both policies deleted
    assert name in fake.templates  # shared: a policy's deletion does not delete it
    deps.state.policies.clear()
    other = policy({"launch": {"imageId": "ami-0fedcba9876543210"}})
    other["metadata"].update(name="c", uid="uid-c")
    later = NOW + dt.timedelta(hours=2)

    async def live_c() -> set[str]:
        return {"uid-c"}

    deps.live_policy_uids = live_c
    await reconcile.run(other, deps, later)  # its orphan scan collects what nobody uses
    assert name not in fake.templates
    assert len(fake.templates) == 1  # c's own


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


async def test_a_move_launches_before_it_terminates() -> None:
    """A spec change that makes the running pools ineligible: the replacements launch
    first, the old instances go only once the replacements run, and capacity never drops
    below the target on the way."""
    fake = FakeEc2(MARKET_TIME, launch_state="pending")
    deps = make_deps(fake)
    body = policy()
    first = await reconcile.run(body, deps, NOW)
    fake.start_all()
    old = {i.instance_id for i in fake.running()}
    families = sorted({i.pool.instance_type.split(".")[0] for i in fake.running()})
    req = dict(body["spec"]["instanceRequirements"], excludedFamilies=families)
    moved = policy({"instanceRequirements": req}, generation=2)
    moved = with_status(moved, first)
    calls_before = len(fake.calls)
    r1 = await reconcile.run(moved, deps, NOW + dt.timedelta(minutes=1))
    assert r1.plan is not None and r1.plan.terminations and r1.plan.launches
    assert "launch" in fake.calls[calls_before:] and "terminate" not in fake.calls[calls_before:]
    assert old <= {i.instance_id for i in fake.running()}  # nothing terminated yet
    assert cond(r1.status, "Progressing")["reason"] == "Launching"
    assert "once their replacements run" in cond(r1.status, "Progressing")["message"]
    assert r1.follow_up is not None
    # replacements still pending: still nothing terminated
    r2 = await reconcile.run(
        with_status(moved, r1), deps, NOW + dt.timedelta(minutes=1, seconds=10)
    )
    assert old <= {i.instance_id for i in fake.running()}
    assert total(fake) >= 32
    fake.start_all()
    r3 = await reconcile.run(with_status(moved, r2), deps, NOW + dt.timedelta(minutes=2))
    assert not old & {i.instance_id for i in fake.running()}
    assert total(fake) >= 32
    assert any(e.reason == "Terminated" for e in r3.events)


async def test_capacity_error_marks_pool_and_lands_elsewhere() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    probe = FakeEc2(MARKET_TIME)
    first = await reconcile.run(policy(), make_deps(probe), NOW)
    assert first.plan is not None
    spot_pools = {p for p in first.plan.targets if p.market is model.Market.SPOT}
    fake.unavailable |= spot_pools
    res = await reconcile.run(policy(), deps, NOW)
    assert not any(i.pool in spot_pools for i in fake.running())
    assert total(fake) >= 32
    warnings = [e for e in res.events if e.reason == "InsufficientCapacity"]
    assert len(warnings) == 1  # one aggregated Event per reconcile, not one per pool
    for p in spot_pools:
        assert p.key() in warnings[0].message
    avoided = [
        a for a in res.status["lastDecision"].get("alternatives", []) if "avoided" in a["reason"]
    ]
    assert avoided
    # the status records them: a restarted operator keeps avoiding them until the TTL ends
    recorded = {a["pool"] for a in res.status["avoidedPools"]}
    assert {p.key() for p in spot_pools} <= recorded
    restarted = make_deps(fake)
    await reconcile.run(with_status(policy(), res), restarted, NOW + dt.timedelta(seconds=5))
    book = restarted.state.region("us-east-1").unavailable
    assert spot_pools <= book.active(NOW + dt.timedelta(seconds=10))
    # after the TTL the pool is tried again
    active = deps.state.region("us-east-1").unavailable.active(NOW + dt.timedelta(seconds=301))
    assert active == frozenset()


async def test_dry_run_makes_no_mutating_call() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    res = await reconcile.run(policy({"dryRun": True}), deps, NOW)
    assert fake.mutating_calls() == 0
    assert fake.running() == []
    assert res.plan is not None and res.plan.launches
    assert cond(res.status, "Progressing")["reason"] == "DryRun"
    assert cond(res.status, "Ready")["reason"] == "DryRun"
    assert any(e.reason == "DryRun" for e in res.events)


async def test_dry_run_guard_refuses_every_mutating_method() -> None:
    guard = port.DryRunGuard(FakeEc2(MARKET_TIME))
    for name in sorted(port.MUTATING_METHODS):
        with pytest.raises(port.DryRunViolation):
            await getattr(guard, name)()


async def test_invalid_spec_is_a_condition_not_a_crash() -> None:
    fake = FakeEc2(MARKET_TIME)
    body = policy({"capacity": {"target": "lots", "unit": "vcpu"}})
    res = await reconcile.run(body, make_deps(fake), NOW)
    d = cond(res.status, "Degraded")
    assert d["status"] == "True" and d["reason"] == "InvalidSpec"
    assert "spec.capacity.target" in d["message"]
    assert cond(res.status, "CapacityFulfilled")["status"] == "Unknown"
    assert fake.calls == []
    assert isinstance(res.retry, kopf.PermanentError)


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


async def test_rejected_credentials_stop_acting_and_are_reread() -> None:
    fake = FakeEc2(MARKET_TIME, auth_error=True)
    secrets = Secrets({("team-a", "aws"): KEYS})
    res = await reconcile.run(policy(), make_deps(fake, secrets), NOW)
    c = cond(res.status, "CredentialsValid")
    assert c["status"] == "False" and c["reason"] == "AccessDenied"
    assert fake.mutating_calls() == 0
    assert cond(res.status, "Ready")["status"] == "False"
    assert secrets.forgotten == [("team-a", "aws")]  # the cached Secret is read again next time


async def test_throttling_raises_temporary_error_with_the_computed_delay() -> None:
    fake = FakeEc2(MARKET_TIME)
    cfg = make_config()
    deps = make_deps(fake, cfg=cfg)
    body = policy()
    delays = []
    for i in range(3):
        fake.fail_next.append(
            errors.AwsError(
                "DescribeInstances",
                "RequestLimitExceeded",
                "slow down",
                errors.ErrorClass.THROTTLING,
            )
        )
        res = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=i))
        assert isinstance(res.retry, kopf.TemporaryError)
        delays.append(res.retry.delay)
        assert cond(res.status, "Progressing")["reason"] == "Throttled"
        assert (
            f"retrying in {cfg.retry_delay(i + 1):g} s"
            in cond(res.status, "Progressing")["message"]
        )
        body = with_status(body, res)
    assert delays == [cfg.retry_delay(1), cfg.retry_delay(2), cfg.retry_delay(3)]
    assert delays[0] < delays[1] < delays[2]


async def test_transient_failures_degrade_after_n_and_recover() -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy()
    warnings = 0
    for i in range(3):
        fake.fail_next.append(
            errors.AwsError(
                "DescribeInstances", "InternalError", "boom", errors.ErrorClass.TRANSIENT
            )
        )
        res = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=i))
        warnings += sum(1 for e in res.events if e.type == "Warning")
        body = with_status(body, res)
        assert isinstance(res.retry, kopf.TemporaryError) and res.retry.delay
        assert res.status["lastError"]["reason"] == "AWSError"
    assert warnings == 1  # the same error (by its code) is reported once, not every retry
    assert cond(res.status, "Degraded")["status"] == "True"
    ok = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=10))
    assert cond(ok.status, "Degraded")["status"] == "False"
    assert ok.status["lastError"] is None and ok.retry is None


def _throttled() -> errors.AwsError:
    return errors.AwsError(
        "DescribeInstances", "RequestLimitExceeded", "slow", errors.ErrorClass.THROTTLING
    )


def _down() -> errors.AwsError:
    return errors.AwsError("DescribeInstances", "Timeout", "no answer", errors.ErrorClass.TRANSIENT)


def _refused() -> errors.AwsError:
    return errors.AwsError("DescribeInstances", "AuthFailure", "not valid", errors.ErrorClass.AUTH)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("throttling", "Throttled"),
        ("aws-down", "AWSError"),
        ("access-denied", "AccessDenied"),
        ("quota", "QuotaExceeded"),
    ],
)
async def test_a_spec_change_under_a_fault_claims_nothing_for_the_new_generation(
    fault: str, reason: str
) -> None:
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake, cfg=make_config(fleet_sweep_seconds=0))
    body = policy()
    first = await reconcile.run(body, deps, NOW)
    assert cond(first.status, "Ready")["status"] == "True"
    bigger = with_status(policy({"capacity": {"target": 64, "unit": "vcpu"}}, generation=2), first)
    if fault == "throttling":
        fake.fail_next.append(_throttled())
    elif fault == "aws-down":
        fake.fail_next.append(_down())
    elif fault == "access-denied":
        fake.fail_next.append(_refused())
    else:
        fake.quota_error = "VcpuLimitExceeded"
    res = await reconcile.run(bigger, deps, NOW + dt.timedelta(minutes=1))
    st = res.status
    assert st["observedGeneration"] == 2
    for c in st["conditions"]:
        assert c["observedGeneration"] == 2, c
    assert cond(st, "Ready")["status"] != "True"
    assert st["lastError"]["reason"] == reason
    cf = cond(st, "CapacityFulfilled")
    if fault == "quota":  # the fleet was observed: 32 of 64, and why
        assert cf["status"] == "False" and cf["reason"] == "QuotaExceeded"
        assert cf["message"].startswith("32/64")
        assert st["capacity"]["desired"] is not None  # the plan for generation 2
    else:  # not observed for generation 2: nothing claimed, the old plan's figures dropped
        assert cf["status"] == "Unknown" and cf["reason"] == "NotObserved"
        assert st["capacity"]["desired"] is None
        assert reason in cf["message"]


async def test_an_interrupted_instance_is_reported_consistently() -> None:
    """While a doomed instance still runs beside its replacement, CapacityFulfilled and
    Ready say the same thing (the issue: Ready "NoChange: 32/32" beside "40/32")."""
    fake = FakeEc2(MARKET_TIME)
    deps = make_deps(fake)
    body = policy()
    first = await reconcile.run(body, deps, NOW)
    body = with_status(body, first)
    victim = next(i for i in fake.running() if i.pool.market is model.Market.SPOT)
    deps.state.policies["uid-web-1"].doom(victim.instance_id, NOW + dt.timedelta(minutes=10))
    res = await reconcile.run(body, deps, NOW + dt.timedelta(seconds=10))
    assert res.plan is not None and res.plan.launches  # the replacement
    cf, ready = cond(res.status, "CapacityFulfilled"), cond(res.status, "Ready")
    assert cf["status"] == "True"
    assert float(cf["message"].split("/")[0]) >= 32  # capacity without the doomed instance
    assert "under interruption notice" in cf["message"]
    assert ready["message"] == cf["message"]
    held = float(res.status["capacity"]["fulfilled"]["total"])
    assert held > 32  # the doomed one still runs and is shown as running


async def test_suspend_stops_acting() -> None:
    fake = FakeEc2(MARKET_TIME)
    res = await reconcile.run(policy({"suspend": True}), make_deps(fake), NOW)
    assert fake.calls == []
    assert cond(res.status, "Progressing")["reason"] == "Suspended"
    assert cond(res.status, "Ready")["reason"] == "Suspended"


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

    lists = []

    async def live() -> set[str]:
        lists.append(1)
        return {"uid-web-1"}

    deps = make_deps(fake)
    deps.live_policy_uids = live
    await reconcile.run(policy(), deps, NOW)
    acct = deps.state.account("123456789012", "us-east-1")
    assert set(acct.orphans) == orphan_ids
    assert (
        f"spotfleet_orphaned_instances {float(len(orphan_ids))}"
        in deps.metrics.exposition().decode()
    )
    assert {i.instance_id for i in fake.running("uid-gone")} == orphan_ids  # never terminated
    # rate-limited: a second reconcile right away does not scan again
    await reconcile.run(policy(), deps, NOW + dt.timedelta(seconds=30))
    assert acct.orphan_scan_at == NOW and len(lists) == 1
    await reconcile.run(policy(), deps, NOW + dt.timedelta(minutes=6))
    assert acct.orphan_scan_at == NOW + dt.timedelta(minutes=6) and len(lists) == 2

"""The life of a spot fleet after its first launch, end to end on real parts: the real
kube-apiserver + etcd, ``spotfleet run`` as its own process draining an SQS queue fed
by EventBridge, the stand-in cloud; every count is read back through boto3 or the
stand-in cloud's per-tenant call counters.

- an interruption warning: the replacement runs before the interrupted instance goes;
- a rebalance recommendation: ``replace`` moves the instance, ``ignore`` leaves it;
- every spot pool out of capacity: on-demand in the same reconcile, spot again after;
- scale-in 200 -> 32 vCPU under minPools 4 and a 30 % pool-share cap;
- a budget below the target's cost, and a quota below the target;
- 500 queue messages, malformed and foreign among them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from spotfleet_cli import localcluster
from spotfleet_engine import catalog as catalog_mod
from spotfleet_sim.client import Pool
from tests.fixtures import cloud as cloud_fx
from tests.fixtures.operator import (
    OperatorProcess,
    base_spec,
    ec2_instances,
    get_json,
    start_operator,
    wait_for,
    wait_for_events,
)
from tests.fixtures.operator import condition as cond
from tests.integration.test_faults import Tenant, ever_launched

pytestmark = pytest.mark.integration
CATALOG = catalog_mod.load_bundled("us-east-1")
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
#: the few types the fallback and budget policies may use (4 vCPU each)
TYPES = ("m5.xlarge", "c5.xlarge", "m5a.xlarge")
#: the label of policies reconciled by a test's own operator, not the module's
OWN = "test.spotfleet.dev/own-operator"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    with cloud_fx.own_cloud(tmp_path_factory.mktemp("lifecloud")) as c:
        yield c


@pytest.fixture(scope="module")
def queue_url(stand_in: cloud_fx.Cloud) -> str:
    return cloud_fx.interruption_queue(stand_in)


@pytest.fixture(scope="module")
def op(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    queue_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    p = start_operator(
        tmp_path_factory.mktemp("lifeop"),
        crds_installed.kubeconfig,
        stand_in.endpoint_url,
        "--interruption-queue-url", queue_url,
        "--interruption-poll-seconds", "0.5",
        # a pool out of capacity is tried again after 20 s (600 by default)
        "--unavailable-pool-ttl-seconds", "20",
        # the tests with a cloud of their own run their own operator on their policies
        "--shard-label-selector", f"!{OWN}",
    )  # fmt: skip
    try:
        yield p
    finally:
        p.stop()


# ---------------------------------------------------------------------------- helpers


def apply(
    k: localcluster.LocalCluster, ns: str, name: str = "web", own: bool = False, **spec: Any
) -> str:
    """Apply a SpotPolicy; ``own``: labelled for a test's own operator (and cloud)."""
    body = base_spec()
    body.update(spec)
    labels = {OWN: "yes"} if own else {}
    obj = {"apiVersion": "spotfleet.dev/v1alpha1", "kind": "SpotPolicy",
           "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": body}  # fmt: skip
    k.kubectl("apply", "-f", "-", input=json.dumps(obj))
    return str(get_json(k, "spotpolicy", name, "-n", ns)["metadata"]["uid"])


def ready(
    k: localcluster.LocalCluster, ns: str, name: str, op: OperatorProcess, generation: int = 1
) -> dict[str, Any]:
    def check() -> Any:
        obj = get_json(k, "spotpolicy", name, "-n", ns)
        st = obj.get("status") or {}
        ok = st.get("observedGeneration") == generation and cond(obj, "Ready")["status"] == "True"
        return obj if ok else None

    out: dict[str, Any] = wait_for(check, f"{name} Ready at generation {generation}", 90, op=op)
    return out


def vcpus(instances: list[dict[str, Any]]) -> int:
    return sum(CATALOG.types[i["InstanceType"]].vcpus for i in instances)


def is_spot(i: dict[str, Any]) -> bool:
    return i.get("InstanceLifecycle") == "spot"


def state_of(cloud: cloud_fx.Cloud, iid: str) -> str:
    r = cloud.boto3_client("ec2").describe_instances(InstanceIds=[iid])["Reservations"]
    return str(r[0]["Instances"][0]["State"]["Name"])


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def reconciles(op: OperatorProcess) -> float:
    return metric_sum(op.metrics(), "spotfleet_reconcile_duration_seconds_count")


def let_it_reconcile(
    op: OperatorProcess, more: int = 6, check: Callable[[], None] = lambda: None
) -> None:
    """Wait until the operator has run ``more`` further reconciles, calling ``check``
    between polls (the interval is 2 s, so this spans a few rounds of every policy)."""
    start = reconciles(op)

    def done() -> bool:
        check()
        return reconciles(op) >= start + more

    wait_for(done, f"{more} more reconciles", 60, op=op)


# ------------------------------------------------------------------------------ tests


def test_interruption_warning_replacement_runs_before_the_interrupted_one_goes(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    op: OperatorProcess,
    namespace: str,
) -> None:
    k, cloud = crds_installed, stand_in
    Tenant(k, namespace)
    uid = apply(k, namespace)
    ready(k, namespace, "web", op)
    before = {i["InstanceId"]: i for i in ec2_instances(cloud, uid)}
    victim = next(i for i in before.values() if is_spot(i))
    vid = victim["InstanceId"]
    floor = 32 - CATALOG.types[victim["InstanceType"]].vcpus
    lowest = [vcpus(list(before.values()))]

    def sample() -> set[str]:
        now = ec2_instances(cloud, uid)
        lowest.append(vcpus([i for i in now if i["InstanceId"] != vid]) + (
            CATALOG.types[victim["InstanceType"]].vcpus
            if any(i["InstanceId"] == vid for i in now) else 0
        ))  # fmt: skip
        return {i["InstanceId"] for i in now}

    cloud.client.set_clock(speed=0)  # the notice (two sim minutes) holds until advanced
    try:
        cloud.client.interrupt(vid, kind="interruption")

        def replaced() -> set[str] | None:
            ids = sample()
            assert vid in ids, "the interrupted instance went before its notice ran out"
            new = ids - set(before)
            return new or None

        new = wait_for(replaced, "a replacement running", 60, op=op)
        assert all(state_of(cloud, i) == "running" for i in new)
        assert state_of(cloud, vid) == "running"  # the replacement runs first
        let_it_reconcile(op, 6, lambda: sample() and None)
        launched = {i["InstanceId"] for i in ever_launched(cloud, uid)} - set(before)
        assert launched == new and len(new) == 1, launched  # exactly one replacement
        assert set(before) <= sample()  # nothing else terminated
        cloud.client.advance(121)
        wait_for(lambda: state_of(cloud, vid) == "terminated", "the interrupted one to go", 30)
    finally:
        cloud.client.set_clock(speed=1)
    ready(k, namespace, "web", op)
    let_it_reconcile(op, 4)
    running = ec2_instances(cloud, uid)
    assert vcpus(running) >= 32
    assert {i["InstanceId"] for i in ever_launched(cloud, uid)} - set(before) == new
    assert min(lowest) >= floor, lowest
    wait_for_events(k, namespace, {"SpotInterruption"}, "web", op)
    assert metric_sum(op.metrics(), "spotfleet_interruptions_total", namespace=namespace) == 1


def test_rebalance_recommendation_replace_moves_it_and_ignore_leaves_it(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    op: OperatorProcess,
    namespace: str,
) -> None:
    k, cloud = crds_installed, stand_in
    Tenant(k, namespace)
    rep = apply(k, namespace, "rep", rebalance={"onRebalanceRecommendation": "replace"})
    ign = apply(k, namespace, "ign", rebalance={"onRebalanceRecommendation": "ignore"})
    ready(k, namespace, "rep", op)
    ready(k, namespace, "ign", op)
    before = {u: {i["InstanceId"] for i in ec2_instances(cloud, u)} for u in (rep, ign)}
    victims = {
        u: next(i["InstanceId"] for i in ec2_instances(cloud, u) if is_spot(i)) for u in (rep, ign)
    }
    lowest: list[int] = []

    def sample() -> None:
        lowest.append(vcpus(ec2_instances(cloud, rep)))

    for u in (rep, ign):
        cloud.client.interrupt(victims[u], kind="rebalance", notice_seconds=0)

    def moved() -> bool:
        sample()
        return state_of(cloud, victims[rep]) == "terminated"

    wait_for(moved, "the recommended instance replaced and terminated", 90, op=op)
    let_it_reconcile(op, 6, sample)
    new = {i["InstanceId"] for i in ever_launched(cloud, rep)} - before[rep]
    assert len(new) >= 1 and all(state_of(cloud, i) == "running" for i in new)
    gone = before[rep] - {i["InstanceId"] for i in ec2_instances(cloud, rep)}
    assert gone == {victims[rep]}  # only the recommended one moved
    assert min(lowest) >= 32, lowest  # never below the target while it moved
    # ignore: the signal is counted, nothing moves
    assert {i["InstanceId"] for i in ever_launched(cloud, ign)} == before[ign]
    assert state_of(cloud, victims[ign]) == "running"
    text = op.metrics()
    assert metric_sum(text, "spotfleet_rebalance_recommendations_total", policy="ign") == 1
    assert metric_sum(text, "spotfleet_rebalance_recommendations_total", policy="rep") == 1
    wait_for_events(k, namespace, {"RebalanceRecommendation"}, "rep", op)


def test_no_spot_capacity_falls_back_to_on_demand_then_returns_within_churn(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    op: OperatorProcess,
    namespace: str,
) -> None:
    k, cloud = crds_installed, stand_in
    t = Tenant(k, namespace)
    types, zones = TYPES[:2], ZONES[:2]  # four spot pools
    spot_pools = [Pool(ty, z, "spot") for ty in types for z in zones]
    cloud.client.mark_unavailable(*spot_pools)
    try:
        uid = apply(
            k,
            namespace,
            availabilityZones=list(zones),
            onDemand={"base": 0, "percentageAboveBase": 0},
            instanceRequirements={"allowedTypes": list(types)},
            rebalance={"maxReplacementsPerHour": 3, "minSavingsPercent": 5},
        )
        seen: list[tuple[str, str]] = []

        def first_status() -> Any:
            obj = get_json(k, "spotpolicy", "web", "-n", namespace)
            c = cond(obj, "CapacityFulfilled")
            if c:
                seen.append((c["status"], c["reason"]))
            return obj if cond(obj, "Ready").get("status") == "True" else None

        try:
            obj = wait_for(first_status, "web Ready", 90, interval=0.2, op=op)
        finally:
            print(json.dumps(get_json(k, "spotpolicy", "web", "-n", namespace).get("status")))
            print(
                [
                    (e["reason"], e["message"])
                    for e in get_json(k, "events", "-n", namespace)["items"]
                ]
            )
        running = ec2_instances(cloud, uid)
        assert vcpus(running) >= 32 and not any(is_spot(i) for i in running)
        # within one reconcile: no status before this one said anything else
        assert set(seen) == {("True", "OnDemandFallback")}, seen
        assert "spot" in cond(obj, "CapacityFulfilled")["message"]
    finally:
        cloud.client.mark_available(*spot_pools)
    od = {i["InstanceId"] for i in running}
    # spot again, at most maxReplacementsPerHour of the on-demand instances moved
    wait_for(
        lambda: any(is_spot(i) for i in ec2_instances(cloud, uid)),
        "spot capacity back",
        150,
        op=op,
    )
    let_it_reconcile(op, 10)
    now = ec2_instances(cloud, uid)
    moved = od - {i["InstanceId"] for i in now}
    assert 1 <= len(moved) <= 3, moved
    assert vcpus(now) >= 32
    assert t.key  # the tenant's own keys made the calls


def test_scale_in_from_200_to_32_with_min_pools_and_a_share_cap(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    op: OperatorProcess,
    namespace: str,
) -> None:
    k, cloud = crds_installed, stand_in
    Tenant(k, namespace)
    div = {"minPools": 4, "maxPoolSharePercent": 30}
    spec: dict[str, Any] = {"objective": "balanced", "diversification": div}
    uid = apply(k, namespace, capacity={"target": 200, "unit": "vcpu"}, strategy=spec)
    ready(k, namespace, "web", op)
    assert vcpus(ec2_instances(cloud, uid)) >= 200
    patch = json.dumps({"spec": {"capacity": {"target": 32}}})
    k.kubectl("patch", "spol", "web", "-n", namespace, "--type=merge", "-p", patch)
    obj = ready(k, namespace, "web", op, generation=2)
    running = ec2_instances(cloud, uid)
    biggest = max(CATALOG.types[i["InstanceType"]].vcpus for i in running)
    held = vcpus(running)
    pools: dict[str, int] = {}
    for i in running:
        key = f"{i['InstanceType']}/{i['Placement']['AvailabilityZone']}/{is_spot(i)}"
        pools[key] = pools.get(key, 0) + CATALOG.types[i["InstanceType"]].vcpus
    c = cond(obj, "CapacityFulfilled")
    assert len(pools) >= 4
    if held < 32 + biggest:
        assert c["status"] == "True"
    else:  # the rules need more than the target: the status says which
        assert c["reason"] == "AboveTarget" and "minPools" in c["message"], c
    assert held >= 32, held
    assert held <= 64, (held, c)  # 200 -> 32 really scaled in (it stopped at 174 before)


def test_budget_below_the_targets_cost_holds_what_the_budget_allows(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    op: OperatorProcess,
    namespace: str,
) -> None:
    k, cloud = crds_installed, stand_in
    Tenant(k, namespace)
    uid = apply(
        k,
        namespace,
        capacity={"target": 64, "unit": "vcpu"},
        onDemand={"base": 0, "percentageAboveBase": 0},
        strategy={"objective": "lowestCost", "budgetPerHour": "0.25"},
    )

    def held() -> Any:
        obj = get_json(k, "spotpolicy", "web", "-n", namespace)
        c = cond(obj, "CapacityFulfilled")
        return obj if c.get("reason") == "BudgetExceeded" and ec2_instances(cloud, uid) else None

    obj = wait_for(held, "CapacityFulfilled BudgetExceeded", 90, op=op)
    let_it_reconcile(op, 4)
    obj = get_json(k, "spotpolicy", "web", "-n", namespace)
    c = cond(obj, "CapacityFulfilled")
    assert c["status"] == "False" and c["reason"] == "BudgetExceeded", c
    assert "budget" in c["message"].lower()
    assert cond(obj, "Ready")["status"] in ("True", "False")
    cost = float(obj["status"]["cost"]["perHour"])
    assert 0 < cost <= 0.25, cost
    running = ec2_instances(cloud, uid)
    assert 0 < vcpus(running) < 64
    # the most the budget allows: a quarter of the budget left would buy another instance
    assert cost >= 0.25 * 0.75, cost


def test_a_target_above_the_quota_is_quota_exceeded_without_a_retry_storm(
    crds_installed: localcluster.LocalCluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    """A stand-in cloud and operator of its own: a quota is the account's, and every
    tenant of the shared cloud is the same moto account."""
    k = crds_installed
    cloud = cloud_fx.start_cloud(tmp_path)
    op = start_operator(tmp_path, k.kubeconfig, cloud.endpoint_url, "--shard-label-selector", OWN)
    try:
        t = Tenant(k, namespace)
        account = boto3.client(
            "sts",
            endpoint_url=cloud.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=t.key,
            aws_secret_access_key=t.secret,
        ).get_caller_identity()["Account"]
        cloud.client.set_quota(on_demand_vcpus=8, spot_instances=4, account=account)
        apply(k, namespace, own=True, capacity={"target": 128, "unit": "vcpu"})

        def quota() -> Any:
            obj = get_json(k, "spotpolicy", "web", "-n", namespace)
            return obj if cond(obj, "CapacityFulfilled").get("reason") == "QuotaExceeded" else None

        try:
            obj = wait_for(quota, "CapacityFulfilled QuotaExceeded", 90, op=op)
        finally:
            print(json.dumps(get_json(k, "spotpolicy", "web", "-n", namespace).get("status")))
        assert cond(obj, "Ready")["status"] == "False"
        held = ec2_instances(cloud, str(obj["metadata"]["uid"]))
        assert len(held) > 0 and sum(1 for i in held if is_spot(i)) <= 4
        first = cloud.client.call_counts().of("CreateFleet", t.key)
        time.sleep(30)  # a window to count the calls in (not asserted on as a duration)
        obj = get_json(k, "spotpolicy", "web", "-n", namespace)
        assert cond(obj, "CapacityFulfilled")["reason"] == "QuotaExceeded"
        assert cond(obj, "Ready")["status"] == "False"
        later = cloud.client.call_counts().of("CreateFleet", t.key)
        print(f"CreateFleet calls: {first} until QuotaExceeded, {later - first} in the next 30 s")
        assert later - first <= 2, (first, later)  # held with a backoff, not a storm
        text = op.metrics()
        errors = metric_sum(
            text, "spotfleet_reconcile_errors_total", namespace=namespace, reason="QuotaExceeded"
        )
        assert errors >= 1
    finally:
        op.stop()
        cloud_fx._stop(cloud.process)


def test_500_queue_messages_malformed_and_foreign_among_them(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    op: OperatorProcess,
    namespace: str,
    queue_url: str,
) -> None:
    k, cloud = crds_installed, stand_in
    Tenant(k, namespace)
    uid = apply(k, namespace)
    ready(k, namespace, "web", op)
    before = {i["InstanceId"] for i in ec2_instances(cloud, uid)}
    warned = sorted(i["InstanceId"] for i in ec2_instances(cloud, uid) if is_spot(i))[:2]
    sqs = boto3.client(
        "sqs",
        endpoint_url=cloud.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",  # the operator's own identity owns the queue
        aws_secret_access_key="testing",
    )

    def event(kind: str, iid: str, **detail: str) -> str:
        return json.dumps({
            "version": "0", "id": str(uuid.uuid4()), "detail-type": kind, "source": "aws.ec2",
            "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
            "resources": [], "detail": {"instance-id": iid, **detail},
        })  # fmt: skip

    bodies: list[str] = []
    for iid in warned:  # 20 copies of each warning: handled, one replacement each
        bodies += [
            event("EC2 Spot Instance Interruption Warning", iid, **{"instance-action": "terminate"})
        ] * 20
    bodies += ["not json {", "", "[]", "null", json.dumps({"source": "aws.ec2"})] * 40  # 200
    bodies += [
        event("EC2 Spot Instance Interruption Warning", f"i-{n:017x}") for n in range(150)
    ]  # foreign: no policy owns them
    bodies += [json.dumps({"source": "aws.s3", "detail-type": "Object Created"})] * 50
    bodies += (
        [event("EC2 Instance State-change Notification", i, state="running") for i in before] * 4
    )[:60]
    bodies += ["x" * 300] * (500 - len(bodies))
    assert len(bodies) == 500
    metrics_before = op.metrics()
    start = time.monotonic()
    for n in range(0, 500, 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(j), "MessageBody": b or " "} for j, b in enumerate(bodies[n : n + 10])
            ],
        )

    def empty() -> bool:
        a = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        return (
            int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
            == 0
        )

    wait_for(empty, "the queue drained", 180, op=op)
    seconds = time.monotonic() - start
    print(f"drained 500 messages in {seconds:.1f} s ({500 / seconds:.1f} messages/s)")
    let_it_reconcile(op, 6)
    launched = {i["InstanceId"]: i for i in ever_launched(cloud, uid)}
    new = set(launched) - before
    # one replacement per warned instance, not 20: the warned capacity launched once
    # (as the same type or, when the market prefers them, as smaller ones: 2 x 4 vCPU
    # were once replaced by 4 c5d.large in two decisions)
    vcpus = CATALOG.types
    warned_vcpu = sum(vcpus[launched[i]["InstanceType"]].vcpus for i in warned)
    new_vcpu = sum(vcpus[launched[i]["InstanceType"]].vcpus for i in new)
    assert new and new_vcpu == warned_vcpu, (new_vcpu, warned_vcpu, new)
    text = op.metrics()

    def grew(outcome: str) -> float:
        name = "spotfleet_interruption_queue_messages_total"
        return metric_sum(text, name, outcome=outcome) - metric_sum(
            metrics_before, name, outcome=outcome
        )

    # the stand-in cloud's own state-change events for earlier tests' instances are in
    # the queue too (foreign: their policies are gone), so these are lower bounds
    assert grew("foreign") >= 150
    assert grew("malformed") >= 200 + 50
    assert grew("handled") >= 40
    assert grew("handled") + grew("ignored") + grew("malformed") + grew("foreign") >= 500


# ------------------------------------------------- a price move in a replayed market

MOVE_TYPES = ("m5.xlarge", "c5.xlarge")
MOVE_ZONES = ("us-east-1a", "us-east-1b")
HISTORY_START = "2021-04-01T00:00:00+00:00"
SMALL_MOVE = "2021-04-10T00:00:00+00:00"  # c5.xlarge/us-east-1b 3 % cheaper
BIG_MOVE = "2021-04-20T00:00:00+00:00"  # m5.xlarge/us-east-1b 57 % cheaper


def write_moving_market(path: Path) -> Path:
    """Hourly prices of four pools over March-April 2021: flat, then a 3 % drop in one
    pool on April 10 (below minSavingsPercent) and a 57 % drop in another on April 20."""
    base = {
        ("m5.xlarge", "us-east-1a"): 0.0700,
        ("m5.xlarge", "us-east-1b"): 0.0720,
        ("c5.xlarge", "us-east-1a"): 0.0680,
        ("c5.xlarge", "us-east-1b"): 0.0690,
    }
    small, big = dt.datetime.fromisoformat(SMALL_MOVE), dt.datetime.fromisoformat(BIG_MOVE)
    rows = ["timestamp,region,availability_zone,instance_type,product_description,spot_price"]
    t = dt.datetime(2021, 3, 1, tzinfo=dt.UTC)
    while t < dt.datetime(2021, 5, 1, tzinfo=dt.UTC):
        for (ty, z), p in base.items():
            if (ty, z) == ("c5.xlarge", "us-east-1b") and t >= small:
                p *= 0.97
            if (ty, z) == ("m5.xlarge", "us-east-1b") and t >= big:
                p = 0.0310
            rows.append(f"{t.isoformat()},us-east-1,{z},{ty},Linux/UNIX,{p:.6f}")
        t += dt.timedelta(hours=1)
    path.write_text("\n".join(rows) + "\n")
    return path


def pool_of(i: dict[str, Any]) -> tuple[str, str]:
    return (i["InstanceType"], i["Placement"]["AvailabilityZone"])


def test_a_price_move_replaces_gradually_within_churn_across_a_restart(
    crds_installed: localcluster.LocalCluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    k = crds_installed
    prices = write_moving_market(tmp_path / "moving.csv")
    cloud = cloud_fx.start_cloud(
        tmp_path, "--prices", str(prices), "--history-start", HISTORY_START
    )
    extra = ("--market-cache-seconds", "2", "--shard-label-selector", OWN)
    try:
        Tenant(k, namespace)
        op1 = start_operator(tmp_path, k.kubeconfig, cloud.endpoint_url, *extra)
        try:
            uid = apply(
                k,
                namespace,
                own=True,
                availabilityZones=list(MOVE_ZONES),
                onDemand={"base": 0, "percentageAboveBase": 0},
                instanceRequirements={"allowedTypes": list(MOVE_TYPES)},
                strategy={"objective": "lowestCost", "diversification": {"minPools": 2}},
                rebalance={"maxReplacementsPerHour": 2, "minSavingsPercent": 10},
            )
            ready(k, namespace, "web", op1)
            first = {i["InstanceId"] for i in ever_launched(cloud, uid)}
            cheap = ("m5.xlarge", "us-east-1b")
            pools = [pool_of(i) for i in ec2_instances(cloud, uid)]
            assert cheap not in pools, pools
            # below the threshold: nothing moves
            cloud.client.set_clock(
                history_time=dt.datetime.fromisoformat(SMALL_MOVE) + dt.timedelta(hours=2)
            )
            let_it_reconcile(op1, 10)
            launched = [i for i in ever_launched(cloud, uid) if i["InstanceId"] not in first]
            told = [
                (e["reason"], e["message"][:300])
                for e in get_json(k, "events", "-n", namespace)["items"]
                if e["reason"] in ("Planned", "Launched", "Terminated")
            ]
            assert not launched, ([pool_of(i) for i in launched], pools, told)
            # above it: launch first, then terminate, two per hour
            cloud.client.set_clock(
                history_time=dt.datetime.fromisoformat(BIG_MOVE) + dt.timedelta(hours=2)
            )
            lowest: list[int] = []

            def moved_two() -> bool:
                now = ec2_instances(cloud, uid)
                lowest.append(vcpus(now))
                return len(first - {i["InstanceId"] for i in now}) >= 2

            wait_for(moved_two, "two instances moved to the cheaper pool", 120, op=op1)
            let_it_reconcile(
                op1, 6, lambda: lowest.append(vcpus(ec2_instances(cloud, uid))) and None
            )
        finally:
            op1.stop()
        after_first = {i["InstanceId"] for i in ever_launched(cloud, uid)}
        assert len(after_first - first) == 2, after_first - first
        op2 = start_operator(tmp_path, k.kubeconfig, cloud.endpoint_url, *extra)
        try:
            let_it_reconcile(
                op2, 10, lambda: lowest.append(vcpus(ec2_instances(cloud, uid))) and None
            )
            # the churn of the past hour survived the restart: nothing more moved
            assert {i["InstanceId"] for i in ever_launched(cloud, uid)} == after_first
            obj = get_json(k, "spotpolicy", "web", "-n", namespace)
            assert len(obj["status"].get("replacements") or []) == 2
        finally:
            op2.stop()
        new = [i for i in ec2_instances(cloud, uid) if i["InstanceId"] in after_first - first]
        assert all(
            (i["InstanceType"], i["Placement"]["AvailabilityZone"]) == ("m5.xlarge", "us-east-1b")
            for i in new
        )
        assert min(lowest) >= 32, lowest  # launch before terminate: never below the target
    finally:
        cloud_fx._stop(cloud.process)

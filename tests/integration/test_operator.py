"""The operator end to end on real parts: kube-apiserver + etcd, the real kubectl, the
stand-in cloud (moto + market layer on real 2021 prices), ``spotfleet run`` as its own
process. Every assertion reads what the API server or EC2 (through boto3) says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotfleet_cli import localcluster
from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import model
from spotfleet_operator.aws import port
from tests.fixtures import cloud as cloud_fx
from tests.fixtures.operator import (
    OperatorProcess,
    base_spec,
    ec2_instances,
    get_json,
    start_operator,
    wait_for,
    wait_for_condition,
    wait_for_events,
)
from tests.fixtures.operator import condition as cond

pytestmark = pytest.mark.integration
CATALOG = catalog_mod.load_bundled("us-east-1")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    """A stand-in cloud of this module's own (other tests reset theirs)."""
    with cloud_fx.own_cloud(tmp_path_factory.mktemp("opcloud"), "--notice-seconds", "2") as c:
        yield c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="module")
def running_operator(
    crds_installed: localcluster.LocalCluster, stand_in: cloud_fx.Cloud, workdir: Path
) -> Iterator[OperatorProcess]:
    op = start_operator(workdir, crds_installed.kubeconfig, stand_in.endpoint_url)
    try:
        yield op
    finally:
        op.stop()
        assert "Traceback" not in op.log() or "TemporaryError" in op.log(), op.log()[-4000:]


def secret(ns: str, name: str = "aws", data: dict[str, str] | None = None) -> str:
    d = (
        data
        if data is not None
        else {
            "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        }
    )
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": d,
        }
    )


def policy(ns: str, name: str = "web", **spec: Any) -> dict[str, Any]:
    base = base_spec()
    base.update(spec)
    return {
        "apiVersion": "spotfleet.dev/v1alpha1",
        "kind": "SpotPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": base,
    }


def set_target(cluster: localcluster.LocalCluster, ns: str, target: int) -> None:
    """kubectl patch the policy ``web``'s capacity target (a new generation)."""
    patch = json.dumps({"spec": {"capacity": {"target": target}}})
    cluster.kubectl("patch", "spol", "web", "-n", ns, "--type=merge", "-p", patch)


def apply(cluster: localcluster.LocalCluster, obj: dict[str, Any] | str) -> None:
    cluster.kubectl("apply", "-f", "-", input=obj if isinstance(obj, str) else json.dumps(obj))


def by_pool(instances: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in instances:
        key = {t["Key"]: t["Value"] for t in i["Tags"]}[port.TAG_POOL]
        counts[key] = counts.get(key, 0) + 1
    return counts


def vcpus(instances: list[dict[str, Any]], market: str | None = None) -> int:
    total = 0
    for i in instances:
        pool = model.Pool.parse({t["Key"]: t["Value"] for t in i["Tags"]}[port.TAG_POOL])
        if market is None or pool.market.value == market:
            total += CATALOG.types[pool.instance_type].vcpus
    return total


def ready(cluster: localcluster.LocalCluster, ns: str, name: str, generation: int = 1) -> Any:
    def check() -> Any:
        obj = get_json(cluster, "spotpolicy", name, "-n", ns)
        st = obj.get("status") or {}
        if (
            st.get("observedGeneration") == generation
            and cond(obj, "Ready").get("status") == "True"
        ):
            return obj
        return None

    return check


def events(cluster: localcluster.LocalCluster, ns: str) -> list[dict[str, Any]]:
    return list(get_json(cluster, "events", "-n", ns)["items"])


def test_apply_launches_the_planned_mix_and_reports_it(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    running_operator: OperatorProcess,
    namespace: str,
) -> None:
    k = crds_installed
    apply(k, secret(namespace))
    apply(k, policy(namespace))
    obj = wait_for(ready(k, namespace, "web"), "Ready=True", op=running_operator)
    uid = obj["metadata"]["uid"]
    st = obj["status"]
    inst = ec2_instances(stand_in, uid)
    # EC2 holds exactly what status reports, and it meets the policy
    assert by_pool(inst) == {
        f"{a['instanceType']}/{a['zone']}/{a['market']}": a["count"] for a in st["allocation"]
    }
    assert vcpus(inst) >= 32 and vcpus(inst, "on-demand") >= 4
    assert st["capacity"]["desired"]["total"] == st["capacity"]["fulfilled"]["total"]
    assert float(st["cost"]["perHour"]) > 0 and float(st["cost"]["savingsPercent"]) > 0
    for i in inst:
        tags = {t["Key"]: t["Value"] for t in i["Tags"]}
        assert tags[port.TAG_POLICY] == f"{namespace}/web"
        pool = model.Pool.parse(tags[port.TAG_POOL])
        assert i["InstanceType"] == pool.instance_type
        assert i["Placement"]["AvailabilityZone"] == pool.zone
        assert (i.get("InstanceLifecycle") == "spot") == (pool.market is model.Market.SPOT)
    # the printer columns are filled
    row = k.kubectl("get", "spol", "web", "-n", namespace, "--no-headers").stdout.split()
    assert row[0] == "web" and row[1] == "32" and "True" in row
    assert any(c.startswith("$") or c.replace(".", "").isdigit() for c in row[2:])
    wait_for_events(k, namespace, {"Planned", "Launched"}, "web", running_operator)
    metrics = running_operator.metrics()
    assert f'spotfleet_cost_usd_per_hour{{namespace="{namespace}",policy="web"}}' in metrics


def test_scale_up_and_down_follows_and_keeps_base(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    running_operator: OperatorProcess,
    namespace: str,
) -> None:
    k = crds_installed
    apply(k, secret(namespace))
    apply(k, policy(namespace))
    uid = wait_for(ready(k, namespace, "web"), "Ready", op=running_operator)["metadata"]["uid"]
    set_target(k, namespace, 64)
    wait_for(ready(k, namespace, "web", 2), "Ready at generation 2", op=running_operator)
    inst = ec2_instances(stand_in, uid)
    assert vcpus(inst) >= 64 and vcpus(inst, "on-demand") >= 4
    before = {i["InstanceId"]: i for i in inst}
    set_target(k, namespace, 16)
    wait_for(ready(k, namespace, "web", 3), "Ready at generation 3", op=running_operator)
    inst = ec2_instances(stand_in, uid)
    assert 16 <= vcpus(inst) < 64 and vcpus(inst, "on-demand") >= 4
    gone = set(before) - {i["InstanceId"] for i in inst}
    assert gone, "scale-in terminated nothing"
    # scale-in never removed the on-demand base
    kept_od = [i for i in inst if i.get("InstanceLifecycle") != "spot"]
    assert kept_od


def test_unavailable_pool_is_routed_around_and_retried_later(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    running_operator: OperatorProcess,
    namespace: str,
) -> None:
    k = crds_installed
    apply(k, secret(namespace))
    apply(k, policy(namespace))
    obj = wait_for(ready(k, namespace, "web"), "Ready", op=running_operator)
    uid = obj["metadata"]["uid"]
    before = {
        f"{a['instanceType']}/{a['zone']}/{a['market']}": int(a["count"])
        for a in obj["status"]["allocation"]
    }
    dry_before = set(stand_in.client.unavailable())
    # the shortage hits the spot pool the next launch asks for, whichever the planner
    # picks (the busiest pool is not always the one a scale-up grows)
    stand_in.client.run_dry_on_next_spot_launch(1)
    try:
        set_target(k, namespace, 96)
        wait_for(
            ready(k, namespace, "web", 2),
            "Ready after routing around",
            timeout=90,
            op=running_operator,
        )
        dry = [q for q in stand_in.client.unavailable() if q not in dry_before]
        assert len(dry) == 1, dry
        inst = ec2_instances(stand_in, uid)
        assert vcpus(inst) >= 96
        key = f"{dry[0].instance_type}/{dry[0].zone}/spot"
        assert by_pool(inst).get(key, 0) <= before.get(key, 0), "launched into the dry pool"
        warn = [e for e in events(k, namespace) if e["reason"] == "InsufficientCapacity"]
        assert warn and key in warn[0]["message"]
    finally:
        for pool in set(stand_in.client.unavailable()) - dry_before:
            stand_in.client.mark_available(pool)


def test_restart_launches_nothing_twice(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    workdir: Path,
    namespace: str,
) -> None:
    k = crds_installed
    op = start_operator(workdir, k.kubeconfig, stand_in.endpoint_url, "--namespace", namespace)
    try:
        apply(k, secret(namespace))
        apply(k, policy(namespace))
        uid = wait_for(ready(k, namespace, "web"), "Ready", op=op)["metadata"]["uid"]
        ids = sorted(i["InstanceId"] for i in ec2_instances(stand_in, uid))
    finally:
        op.stop()
    assert op.proc.returncode is not None
    since = len(stand_in.client.calls())
    op2 = start_operator(workdir, k.kubeconfig, stand_in.endpoint_url, "--namespace", namespace)
    try:
        # wait for at least two reconciles of the new process (resume + a timer tick)
        wait_for(
            lambda: (
                sum(1 for c in stand_in.client.calls(since) if c.operation == "DescribeInstances")
                >= 2
            ),
            "the restarted operator to observe the fleet",
            op=op2,
        )
        assert sorted(i["InstanceId"] for i in ec2_instances(stand_in, uid)) == ids
        launched = [
            c
            for c in stand_in.client.calls(since)
            if c.operation in ("CreateFleet", "RunInstances")
        ]
        assert launched == []
        obj = get_json(k, "spotpolicy", "web", "-n", namespace)
        assert cond(obj, "Ready")["status"] == "True"
    finally:
        op2.stop()


@pytest.mark.parametrize("deletion_policy", ["Delete", "Orphan"])
def test_deletion_policy(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    running_operator: OperatorProcess,
    namespace: str,
    deletion_policy: str,
) -> None:
    k = crds_installed
    apply(k, secret(namespace))
    apply(k, policy(namespace, deletionPolicy=deletion_policy))
    uid = wait_for(ready(k, namespace, "web"), "Ready", op=running_operator)["metadata"]["uid"]
    ids = {i["InstanceId"] for i in ec2_instances(stand_in, uid)}
    assert ids
    k.kubectl("delete", "spol", "web", "-n", namespace, "--timeout=60s")
    gone = k.kubectl("get", "spol", "web", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert ec2_instances(stand_in, uid) == []
    desc = stand_in.boto3_client("ec2").describe_instances(InstanceIds=sorted(ids))
    states = {i["InstanceId"]: i for r in desc["Reservations"] for i in r["Instances"]}
    if deletion_policy == "Delete":
        assert {i["State"]["Name"] for i in states.values()} <= {"shutting-down", "terminated"}
    else:
        assert {i["State"]["Name"] for i in states.values()} == {"running"}
        for i in states.values():
            left = [t for t in i.get("Tags", []) if t["Key"].startswith("spotfleet.dev/")]
            assert not left, left


def test_bad_credentials_stop_acting(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    running_operator: OperatorProcess,
    namespace: str,
) -> None:
    k = crds_installed
    # a Secret of that name exists, but in another namespace: it must not be used
    other = f"{namespace}-other"
    k.kubectl("create", "namespace", other)
    try:
        apply(k, secret(other))
        since = len(stand_in.client.calls())
        apply(k, policy(namespace))
        obj = wait_for_condition(
            k, namespace, "web", "CredentialsValid", running_operator, status="False"
        )
        c = cond(obj, "CredentialsValid")
        assert c["reason"] == "SecretNotFound" and f"{namespace}/aws" in c["message"]
        # a malformed Secret is named, its values never shown
        apply(k, secret(namespace, data={"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}))
        obj = wait_for_condition(
            k, namespace, "web", "CredentialsValid", running_operator, reason="SecretInvalid"
        )
        assert "aws_secret_access_key" in cond(obj, "CredentialsValid")["message"]
        assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps(obj)
        mutating = [c for c in stand_in.client.calls(since) if c.mutating]
        assert mutating == []
        assert "AKIAIOSFODNN7EXAMPLE" not in running_operator.log()
    finally:
        k.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_aws_refusing_the_credentials_sets_access_denied(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    running_operator: OperatorProcess,
    namespace: str,
) -> None:
    k = crds_installed
    # a tenant of its own (AWS refuses every call signed with its key), so nothing the
    # other tests' tenants share (account lookup, sweep) hides the refusal
    key = "AKIAREFUSEDREFUSED01"
    apply(k, secret(namespace, data={"aws_access_key_id": key, "aws_secret_access_key": "x" * 40}))
    stand_in.client.inject_fault("*", "UnauthorizedOperation", probability=1.0, access_key_id=key)
    try:
        since = len(stand_in.client.calls())
        apply(k, policy(namespace))
        obj = wait_for_condition(
            k, namespace, "web", "CredentialsValid", running_operator, reason="AccessDenied"
        )
        assert cond(obj, "CredentialsValid")["status"] == "False"
        assert [c for c in stand_in.client.calls(since) if c.mutating] == []
    finally:
        stand_in.client.clear_faults()


def test_dry_run_makes_zero_mutating_calls(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    running_operator: OperatorProcess,
    namespace: str,
) -> None:
    k = crds_installed
    apply(k, secret(namespace))
    since = len(stand_in.client.calls())
    body = policy(namespace, dryRun=True)
    apply(k, body)
    obj = wait_for_condition(k, namespace, "web", "Progressing", running_operator, reason="DryRun")
    assert obj["status"]["lastDecision"]["summary"]
    assert float(obj["status"]["capacity"]["desired"]["total"]) >= 32
    own = stand_in.client.calls(since)
    # it did observe: the fleet (nothing) is reported from the account's shared sweep,
    # which may predate the policy by up to fleet_sweep_seconds
    assert obj["status"]["capacity"]["fulfilled"]["total"] == "0"
    assert any(c.operation == "DescribeInstances" for c in stand_in.client.calls())
    assert [c.operation for c in own if c.mutating] == []
    assert ec2_instances(stand_in, obj["metadata"]["uid"]) == []
    assert any(e["reason"] == "DryRun" for e in events(k, namespace))

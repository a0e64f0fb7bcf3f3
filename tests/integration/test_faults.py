"""Fault tests, each named after its fault: the real control plane, the operator as its
own process, the stand-in cloud; afterwards the instance counts are read back through
boto3 — nothing launched twice, nothing left behind, the target held.

Every test has a tenant (access key) of its own, so the stand-in cloud's faults and
hangs can hit exactly that tenant's calls."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotfleet_cli import localcluster
from spotfleet_engine import catalog as catalog_mod
from tests.fixtures import cloud as cloud_fx
from tests.fixtures.operator import (
    OperatorProcess,
    base_spec,
    condition,
    ec2_instances,
    get_json,
    start_operator,
    wait_for,
    wait_for_condition,
)

pytestmark = pytest.mark.integration
CATALOG = catalog_mod.load_bundled("us-east-1")
TAG_UID = "spotfleet.dev/policy-uid"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    c = cloud_fx.start_cloud(tmp_path_factory.mktemp("faultcloud"), "--notice-seconds", "2")
    try:
        yield c
    finally:
        cloud_fx._stop(c.process)


@pytest.fixture
def cloud(stand_in: cloud_fx.Cloud) -> Iterator[cloud_fx.Cloud]:
    stand_in.client.clear_faults()
    stand_in.client.clear_hangs()
    yield stand_in
    stand_in.client.clear_faults()
    stand_in.client.clear_hangs()
    stand_in.fail_on_problems()


class Tenant:
    """A credentials Secret of its own in the test's namespace."""

    def __init__(self, cluster: localcluster.LocalCluster, namespace: str) -> None:
        self.key = "AKIAF" + uuid.uuid4().hex[:15].upper()
        self.secret = secrets.token_urlsafe(30)
        self.cluster, self.namespace = cluster, namespace
        self.write(self.key, self.secret)

    def write(self, key: str, secret: str) -> None:
        doc = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws", "namespace": self.namespace},
            "stringData": {"aws_access_key_id": key, "aws_secret_access_key": secret},
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def apply_policy(k: localcluster.LocalCluster, ns: str, name: str = "web", **spec: Any) -> str:
    body = base_spec()
    body.update(spec)
    obj = {"apiVersion": "spotfleet.dev/v1alpha1", "kind": "SpotPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": body}  # fmt: skip
    k.kubectl("apply", "-f", "-", input=json.dumps(obj))
    return str(get_json(k, "spotpolicy", name, "-n", ns)["metadata"]["uid"])


def vcpus(instances: list[dict[str, Any]]) -> float:
    return sum(CATALOG.types[i["InstanceType"]].vcpus for i in instances)


def ever_launched(cloud: cloud_fx.Cloud, uid: str) -> list[dict[str, Any]]:
    """Every instance ever launched for the policy, whatever its state now."""
    out: list[dict[str, Any]] = []
    pages = (
        cloud.boto3_client("ec2")
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": f"tag:{TAG_UID}", "Values": [uid]}])
    )
    for page in pages:
        for r in page["Reservations"]:
            out.extend(r["Instances"])
    return out


def calls(cloud: cloud_fx.Cloud, op: str, since: int = 0) -> list[Any]:
    return [c for c in cloud.client.calls(since) if c.operation == op]


def ok_calls(cloud: cloud_fx.Cloud, op: str, since: int = 0) -> int:
    return sum(1 for c in calls(cloud, op, since) if c.status == 200 and not c.error_code)


def wait_calls(cloud: cloud_fx.Cloud, op: str, n: int, since: int, timeout: float = 60) -> None:
    wait_for(lambda: ok_calls(cloud, op, since) >= n, f"{n} x {op}", timeout, interval=0.05)


def run(
    tmp: Path, k: localcluster.LocalCluster, cloud: cloud_fx.Cloud, *extra: str
) -> OperatorProcess:
    return start_operator(tmp, k.kubeconfig, cloud.endpoint_url, *extra, interval=2.0)


def settled(
    k: localcluster.LocalCluster, ns: str, name: str, op: OperatorProcess
) -> dict[str, Any]:
    obj: dict[str, Any] = wait_for_condition(k, ns, name, "Ready", op, status="True")
    return obj


def assert_exact(cloud: cloud_fx.Cloud, obj: dict[str, Any], target: float = 32) -> None:
    """EC2 holds exactly what the status reports, at the target (within one instance),
    and no instance was ever launched beyond those running (nothing twice)."""
    uid = obj["metadata"]["uid"]
    running = ec2_instances(cloud, uid)
    by_pool: dict[str, int] = {}
    for i in running:
        pool = {t["Key"]: t["Value"] for t in i["Tags"]}["spotfleet.dev/pool"]
        by_pool[pool] = by_pool.get(pool, 0) + 1
    reported = {
        f"{a['instanceType']}/{a['zone']}/{a['market']}": a["count"]
        for a in obj["status"]["allocation"]
    }
    assert by_pool == reported
    biggest = max(CATALOG.types[i["InstanceType"]].vcpus for i in running)
    assert target <= vcpus(running) < target + biggest


def test_kill_9_before_create_fleet(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    t = Tenant(k, namespace)
    cloud.client.inject_hang(60, "CreateLaunchTemplate", access_key_id=t.key)
    since = len(cloud.client.calls())
    op = run(tmp_path, k, cloud)
    uid = apply_policy(k, namespace)
    wait_for(lambda: any(h["holding"] for h in cloud.client.hangs()), "the template call held")
    op.proc.kill()  # kill -9: the step before CreateFleet never completed
    op.proc.wait(10)
    cloud.client.clear_hangs()
    assert ok_calls(cloud, "CreateFleet", since) == 0
    op2 = run(tmp_path, k, cloud)
    try:
        obj = settled(k, namespace, "web", op2)
        assert_exact(cloud, obj)
        assert len(ever_launched(cloud, uid)) == len(ec2_instances(cloud, uid))
    finally:
        op2.stop()


@pytest.mark.parametrize("after", ["first", "last"])
def test_kill_9_after_create_fleet_returned(
    crds_installed: localcluster.LocalCluster,
    cloud: cloud_fx.Cloud,
    namespace: str,
    tmp_path: Path,
    after: str,
) -> None:
    """Killed right after the first pool's CreateFleet answered (mid multi-pool launch)
    or after the last (before the status write): the restarted operator adopts what
    runs (the ClientToken repeats) and launches nothing twice."""
    k = crds_installed
    Tenant(k, namespace)
    since = len(cloud.client.calls())
    op = run(tmp_path, k, cloud)
    uid = apply_policy(k, namespace)
    n = 1 if after == "first" else 2  # the base spec launches into at least two pools
    wait_calls(cloud, "CreateFleet", n, since)
    op.proc.kill()
    op.proc.wait(10)
    op2 = run(tmp_path, k, cloud)
    try:
        obj = settled(k, namespace, "web", op2)
        assert_exact(cloud, obj)
        assert len(ever_launched(cloud, uid)) == len(ec2_instances(cloud, uid))
    finally:
        op2.stop()


def test_kill_9_mid_scale_down(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    Tenant(k, namespace)
    op = run(tmp_path, k, cloud)
    apply_policy(k, namespace, capacity={"target": 64, "unit": "vcpu"})
    settled(k, namespace, "web", op)
    since = len(cloud.client.calls())
    k.kubectl("patch", "spotpolicy", "web", "-n", namespace, "--type=merge",
              "-p", json.dumps({"spec": {"capacity": {"target": 32}}}))  # fmt: skip
    wait_calls(cloud, "TerminateInstances", 1, since)
    op.proc.kill()
    op.proc.wait(10)
    op2 = run(tmp_path, k, cloud)
    try:

        def at_gen2() -> Any:
            o = get_json(k, "spotpolicy", "web", "-n", namespace)
            c = condition(o, "Ready")
            return o if c.get("status") == "True" and c.get("observedGeneration") == 2 else None

        obj = wait_for(at_gen2, "Ready at generation 2", op=op2)
        assert_exact(cloud, obj, target=32)
    finally:
        op2.stop()


def test_kill_9_mid_delete(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    Tenant(k, namespace)
    op = run(tmp_path, k, cloud)
    uid = apply_policy(k, namespace)
    settled(k, namespace, "web", op)
    since = len(cloud.client.calls())
    k.kubectl("delete", "spotpolicy", "web", "-n", namespace, "--wait=false")
    wait_calls(cloud, "TerminateInstances", 1, since)
    op.proc.kill()
    op.proc.wait(10)
    op2 = run(tmp_path, k, cloud)
    try:
        wait_for(
            lambda: (
                k.kubectl("get", "spotpolicy", "web", "-n", namespace, check=False).returncode != 0
            ),
            "the policy deleted",
            op=op2,
        )
        assert ec2_instances(cloud, uid) == []
    finally:
        op2.stop()


def test_kube_apiserver_restart_mid_reconcile(cloud: cloud_fx.Cloud, tmp_path: Path) -> None:
    """A control plane of its own (the session's must not go down): kube-apiserver stops
    between the launches and the status write, and comes back 5 s later."""
    k = localcluster.LocalCluster(workdir=tmp_path / "cluster")
    k.start()
    op: OperatorProcess | None = None
    try:
        k.kubectl("apply", "--server-side", "-f", str(localcluster_crds()))
        k.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        ns = "restart"
        k.kubectl("create", "namespace", ns)
        t = Tenant(k, ns)
        cloud.client.inject_hang(4, "CreateFleet", count=1, access_key_id=t.key)
        since = len(cloud.client.calls())
        op = run(tmp_path, k, cloud)
        uid = apply_policy(k, ns)
        wait_for(lambda: any(h["holding"] for h in cloud.client.hangs()), "a launch under way")
        k.restart_apiserver(down_seconds=5)
        obj = settled(k, ns, "web", op)
        assert_exact(cloud, obj)
        assert len(ever_launched(cloud, uid)) == len(ec2_instances(cloud, uid))
        assert ok_calls(cloud, "CreateFleet", since) >= 2
    finally:
        if op is not None:
            op.stop()
        k.stop()


def localcluster_crds() -> Path:
    return Path(__file__).resolve().parents[2] / "crds" / "spotpolicies.spotfleet.dev.yaml"


def test_sustained_throttling_bounds_the_call_rate(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    t = Tenant(k, namespace)
    cloud.client.inject_fault("*", "RequestLimitExceeded", probability=1.0, access_key_id=t.key)
    cloud.client.reset_call_counts()
    op = run(tmp_path, k, cloud)
    try:
        apply_policy(k, namespace)
        wait_for_condition(k, namespace, "web", "Progressing", op, reason="Throttled")
        time.sleep(30)
        made = sum(cloud.client.call_counts().by_access_key.get(t.key, {}).values())
        # backoff 5, 10, 20 s between reconciles, 3 attempts each: a handful, not a storm
        assert 0 < made <= 20, made
        obj = get_json(k, "spotpolicy", "web", "-n", namespace)
        assert condition(obj, "Ready").get("status") != "True"
        cloud.client.clear_faults()
        obj = settled(k, namespace, "web", op)  # and it recovers once AWS answers
        assert_exact(cloud, obj)
    finally:
        op.stop()


def test_5xx_bursts_are_retried_without_duplicates(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    t = Tenant(k, namespace)
    cloud.client.inject_5xx_burst(8, access_key_id=t.key)
    op = run(tmp_path, k, cloud)
    try:
        uid = apply_policy(k, namespace)
        obj = settled(k, namespace, "web", op)
        assert_exact(cloud, obj)
        assert len(ever_launched(cloud, uid)) == len(ec2_instances(cloud, uid))
    finally:
        op.stop()


def test_credentials_made_invalid_mid_run_then_fixed(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    t = Tenant(k, namespace)
    # a rewritten Secret is read again within secret_cache_seconds (60 by default)
    op = run(tmp_path, k, cloud, "--secret-cache-seconds", "5")
    try:
        uid = apply_policy(k, namespace)
        settled(k, namespace, "web", op)
        before = {i["InstanceId"] for i in ec2_instances(cloud, uid)}
        bad = "AKIAB" + uuid.uuid4().hex[:15].upper()
        cloud.client.inject_fault("*", "AuthFailure", probability=1.0, access_key_id=bad)
        t.write(bad, "wrong-secret-wrong-secret-wrong-secret")
        obj = wait_for_condition(k, namespace, "web", "CredentialsValid", op, reason="AccessDenied")
        assert condition(obj, "Ready")["status"] == "False"
        assert {i["InstanceId"] for i in ec2_instances(cloud, uid)} == before  # left running
        t.write(t.key, t.secret)
        obj = settled(k, namespace, "web", op)
        assert {i["InstanceId"] for i in ec2_instances(cloud, uid)} == before  # nothing new
        assert_exact(cloud, obj)
    finally:
        op.stop()


def test_aws_unreachable_during_deletion(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    t = Tenant(k, namespace)
    op = run(tmp_path, k, cloud, "--aws-call-timeout-seconds", "3")
    try:
        uid = apply_policy(k, namespace)
        settled(k, namespace, "web", op)
        cloud.client.inject_fault("*", "ServiceUnavailable", probability=1.0, access_key_id=t.key)
        k.kubectl("delete", "spotpolicy", "web", "-n", namespace, "--wait=false")
        events = lambda: {  # noqa: E731
            e["reason"]
            for e in get_json(k, "events", "-n", namespace)["items"]
            if e["involvedObject"].get("name") == "web"
        }
        wait_for(lambda: "CleanupFailed" in events(), "a CleanupFailed Event", op=op)
        assert ec2_instances(cloud, uid)  # nothing lost while AWS is away
        cloud.client.clear_faults()
        wait_for(
            lambda: (
                k.kubectl("get", "spotpolicy", "web", "-n", namespace, check=False).returncode != 0
            ),
            "the deletion to complete",
            timeout=120,
            op=op,
        )
        assert ec2_instances(cloud, uid) == []
    finally:
        op.stop()


def test_a_hung_endpoint_does_not_starve_another_tenant(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    k = crds_installed
    other = f"{namespace}-b"
    k.kubectl("create", "namespace", other)
    try:
        hung = Tenant(k, namespace)
        Tenant(k, other)
        cloud.client.inject_hang(120, "*", access_key_id=hung.key)
        op = run(tmp_path, k, cloud)
        try:
            for i in range(6):  # six hung policies hold their tenant's share of the pool
                apply_policy(k, namespace, name=f"hung{i}")
            start = time.monotonic()
            apply_policy(k, other, name="healthy")
            settled(k, other, "healthy", op)
            assert time.monotonic() - start < 60
            hung0 = get_json(k, "spotpolicy", "hung0", "-n", namespace)
            assert condition(hung0, "Ready").get("status") != "True"
            cloud.client.clear_hangs()
            k.kubectl("delete", "spotpolicy", "--all", "-n", other, "--timeout=60s")
        finally:
            cloud.client.clear_hangs()
            op.stop()
    finally:
        k.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_deleting_a_policy_whose_secret_never_existed_completes(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    """Nothing was ever launched (the credentials never resolved): deletion does not hang."""
    k = crds_installed
    op = run(tmp_path, k, cloud)
    try:
        apply_policy(k, namespace, name="nosecret")
        wait_for_condition(
            k, namespace, "nosecret", "CredentialsValid", op, reason="SecretNotFound"
        )
        start = time.monotonic()
        k.kubectl("delete", "spotpolicy", "nosecret", "-n", namespace, "--timeout=60s")
        assert time.monotonic() - start < 30
    finally:
        op.stop()


def test_credentials_revoked_after_launch_then_forced(
    crds_installed: localcluster.LocalCluster, cloud: cloud_fx.Cloud, namespace: str, tmp_path: Path
) -> None:
    """The credentials are revoked after instances were launched: deletion waits (an Event
    says how to force it), and the force annotation releases it, leaving the instances."""
    k = crds_installed
    t = Tenant(k, namespace)
    op = run(tmp_path, k, cloud)
    try:
        uid = apply_policy(k, namespace)
        settled(k, namespace, "web", op)
        # revoked: AWS refuses the keys, and the Secret is gone too
        cloud.client.inject_fault("*", "AuthFailure", probability=1.0, access_key_id=t.key)
        k.kubectl("delete", "secret", "aws", "-n", namespace)
        k.kubectl("delete", "spotpolicy", "web", "-n", namespace, "--wait=false")

        def cleanup_failed() -> list[dict[str, Any]]:
            return [
                e
                for e in get_json(k, "events", "-n", namespace)["items"]
                if e["involvedObject"].get("name") == "web" and e["reason"] == "CleanupFailed"
            ]

        failed = wait_for(cleanup_failed, "a CleanupFailed Event", op=op)
        assert "spotfleet.dev/force-delete" in failed[0]["message"]
        assert ec2_instances(cloud, uid)  # still there: nothing was terminated blindly
        k.kubectl(
            "annotate", "spotpolicy", "web", "-n", namespace, "spotfleet.dev/force-delete=true"
        )
        wait_for(
            lambda: (
                k.kubectl("get", "spotpolicy", "web", "-n", namespace, check=False).returncode != 0
            ),
            "the forced deletion",
            timeout=90,
            op=op,
        )
        forced = [
            e
            for e in get_json(k, "events", "-n", namespace)["items"]
            if e["reason"] == "CleanupForced"
        ]
        assert forced and f"spotfleet.dev/policy-uid={uid}" in forced[0]["message"]
        left = ec2_instances(cloud, uid)
        assert left  # left running, as the Event says
        cloud.client.clear_faults()
        cloud.boto3_client("ec2").terminate_instances(InstanceIds=[i["InstanceId"] for i in left])
    finally:
        op.stop()

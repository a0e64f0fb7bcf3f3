"""Sharding and peering on one real control plane: two operator processes, each with
its own label selector, reconcile only their own policies; a policy relabelled to the
other shard is adopted by it; two replicas of one shard with Kopf peering act as one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotfleet_cli import localcluster
from tests.fixtures import cloud as cloud_fx
from tests.fixtures.operator import (
    OperatorProcess,
    base_spec,
    ec2_instances,
    get_json,
    start_operator,
    wait_for,
    wait_for_condition,
)

pytestmark = pytest.mark.integration
SHARD = "spotfleet.dev/shard"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    c = cloud_fx.start_cloud(tmp_path_factory.mktemp("shardcloud"), "--notice-seconds", "2")
    try:
        yield c
        c.fail_on_problems()
    finally:
        cloud_fx._stop(c.process)


def _apply(cluster: localcluster.LocalCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def _secret(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "aws", "namespace": ns},
        "stringData": {
            "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        },
    }


def _policy(ns: str, name: str, shard: str | None) -> dict[str, Any]:
    spec = base_spec()
    spec["capacity"] = {"target": 8, "unit": "vcpu"}
    spec["onDemand"] = {"base": 0}
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if shard is not None:
        meta["labels"] = {SHARD: shard}
    return {
        "apiVersion": "spotfleet.dev/v1alpha1",
        "kind": "SpotPolicy",
        "metadata": meta,
        "spec": spec,
    }


def _reconciled_by(op: OperatorProcess, namespace: str) -> set[str]:
    """Policies of ``namespace`` this operator exports figures for (it reconciled them)."""
    found = re.findall(
        r'spotfleet_capacity_target_units\{namespace="'
        + re.escape(namespace)
        + r'",policy="([^"]+)"\}',
        op.metrics(),
    )
    return set(found)


def test_two_shards_each_reconcile_only_their_own(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    namespace: str,
    tmp_path: Path,
) -> None:
    k = crds_installed
    shard_a = start_operator(
        tmp_path, k.kubeconfig, stand_in.endpoint_url, "--shard-label-selector", f"{SHARD}=a"
    )
    shard_b = start_operator(
        tmp_path, k.kubeconfig, stand_in.endpoint_url, "--shard-label-selector", f"{SHARD}=b"
    )
    try:
        _apply(k, _secret(namespace))
        for name, shard in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("none", None)):
            _apply(k, _policy(namespace, name, shard))
        for name in ("a1", "a2", "b1"):
            wait_for_condition(k, namespace, name, "Ready", status="True")
        assert _reconciled_by(shard_a, namespace) == {"a1", "a2"}
        assert _reconciled_by(shard_b, namespace) == {"b1"}
        # a policy no shard selects is left alone: no status, no instances
        unselected = get_json(k, "spotpolicy", "none", "-n", namespace)
        assert not (unselected.get("status") or {}).get("conditions")
        assert ec2_instances(stand_in, unselected["metadata"]["uid"]) == []
        # moved to the other shard: adopted there, released here
        k.kubectl("label", "spotpolicy", "a2", "-n", namespace, f"{SHARD}=b", "--overwrite")
        wait_for(
            lambda: "a2" in _reconciled_by(shard_b, namespace), "shard b adopts a2", op=shard_b
        )
        gen = get_json(k, "spotpolicy", "a2", "-n", namespace)["metadata"]["generation"]
        k.kubectl(
            "patch", "spotpolicy", "a2", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"capacity": {"target": 16}}}),
        )  # fmt: skip

        def scaled() -> bool:
            o = get_json(k, "spotpolicy", "a2", "-n", namespace)
            st = o.get("status") or {}
            return bool(
                st.get("observedGeneration") == gen + 1
                and float((st.get("capacity") or {}).get("fulfilled", {}).get("total", 0)) >= 16
            )

        wait_for(scaled, "a2 scaled by shard b", op=shard_b)
        # every deletion is finalized by the shard that owns the policy
        k.kubectl("delete", "spotpolicy", "a1", "a2", "b1", "-n", namespace, "--timeout=60s")
    finally:
        shard_a.stop()
        shard_b.stop()
    for op in (shard_a, shard_b):
        assert "Traceback" not in op.log(), op.log()[-3000:]


def test_two_peered_replicas_act_as_one(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    namespace: str,
    tmp_path: Path,
) -> None:
    k = crds_installed
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "sf-ha"},
    }
    _apply(k, peering)
    first = start_operator(tmp_path, k.kubeconfig, stand_in.endpoint_url, "--peering-name", "sf-ha")
    second = start_operator(
        tmp_path, k.kubeconfig, stand_in.endpoint_url, "--peering-name", "sf-ha"
    )
    try:
        _apply(k, _secret(namespace))
        _apply(k, _policy(namespace, "ha", None))
        obj = wait_for_condition(k, namespace, "ha", "Ready", status="True")
        active = [op for op in (first, second) if _reconciled_by(op, namespace)]
        assert len(active) == 1  # the other one stood by
        # the active one goes: the standby takes over and keeps the policy reconciled
        standby = second if active[0] is first else first
        active[0].stop()
        gen = obj["metadata"]["generation"]
        k.kubectl(
            "patch", "spotpolicy", "ha", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"capacity": {"target": 16}}}),
        )  # fmt: skip

        def taken_over() -> bool:
            st = get_json(k, "spotpolicy", "ha", "-n", namespace).get("status") or {}
            return bool(st.get("observedGeneration") == gen + 1)

        wait_for(taken_over, "the standby reconciles generation 2", timeout=120, op=standby)
        assert _reconciled_by(standby, namespace) == {"ha"}
    finally:
        first.stop()
        second.stop()
        k.kubectl("delete", "clusterkopfpeering", "sf-ha", "--wait=false", check=False)

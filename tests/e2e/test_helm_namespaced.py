"""The chart in namespaced mode (``watch.namespaces``), end to end on real parts: a
Role + RoleBinding in each watched namespace instead of cluster-wide namespaced rules.

As in test_helm_install.py there is no kubelet here: the operator runs as its own
process from the installed Deployment's args and env, as the chart's ServiceAccount,
so these Roles are what lets it work in the watched namespace and what keeps it out
of every other one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from tests.e2e import support
from tests.fixtures import cloud as cloud_fx
from tests.fixtures.operator import OperatorProcess, wait_for, wait_for_events

pytestmark = pytest.mark.e2e

RELEASE = "fleet"
NS = "fleet-operator"
SA = "fleet-spotfleet"
USER = f"system:serviceaccount:{NS}:{SA}"
WATCHED, UNWATCHED = "team-a", "team-x"


@pytest.fixture(scope="module")
def release(
    cluster: localcluster.LocalCluster,
    helm: support.Helm,
    stand_in: cloud_fx.Cloud,
    workdir: Path,
) -> Iterator[str]:
    for ns in (NS, WATCHED, UNWATCHED):
        cluster.kubectl("create", "namespace", ns)
    values = {
        "watch": {"namespaces": [WATCHED]},
        "reconcileIntervalSeconds": 2,
        "metrics": {"port": localcluster.free_port()},
        "health": {"port": localcluster.free_port()},
        "awsEndpointUrl": stand_in.endpoint_url,
        "dashboards": {"enabled": False},
    }
    values_file = workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm("install", RELEASE, str(support.CHART), "-n", NS, "-f", str(values_file))
    try:
        yield RELEASE
    finally:
        helm("uninstall", RELEASE, "-n", NS, check=False)


@pytest.fixture(scope="module")
def operator(
    cluster: localcluster.LocalCluster, release: str, workdir: Path
) -> Iterator[OperatorProcess]:
    kubeconfig = support.token_kubeconfig(cluster, NS, SA, workdir / "sa.kubeconfig")
    op = support.run_deployment(cluster, NS, SA, kubeconfig, workdir)
    try:
        yield op
    finally:
        op.stop()


def test_namespaced_install_grants_roles_only_in_watched_namespaces(
    cluster: localcluster.LocalCluster, release: str
) -> None:
    dep = support.get_json(cluster, "deployment", SA, "-n", NS)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--namespace", WATCHED]
    role = support.get_json(cluster, "clusterrole", SA)
    assert {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    } == {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
    }
    roles = support.get_json(cluster, "roles", "-A", "-l", f"app.kubernetes.io/instance={release}")
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles["items"]] == [
        (WATCHED, SA)
    ]
    bindings = support.get_json(
        cluster, "rolebindings", "-A", "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    assert [(b["metadata"]["namespace"], b["subjects"]) for b in bindings] == [
        (WATCHED, [{"kind": "ServiceAccount", "name": SA, "namespace": NS}])
    ]
    yes = [
        ("get", "secrets", "-n", WATCHED),
        ("watch", "spotpolicies.spotfleet.dev", "-n", WATCHED),
        ("patch", "spotpolicies.spotfleet.dev", "--subresource=status", "-n", WATCHED),
        ("create", "events", "-n", WATCHED),
        ("list", "namespaces"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    no = [
        ("get", "secrets", "-n", UNWATCHED),
        ("get", "secrets", "-n", NS),
        ("list", "spotpolicies.spotfleet.dev", "-A"),
        ("patch", "spotpolicies.spotfleet.dev", "-n", UNWATCHED),
        ("create", "events", "-n", UNWATCHED),
        ("get", "namespaces"),
        ("delete", "pods", "-n", WATCHED),
        ("list", "secrets", "-n", WATCHED),
    ]
    for verb, resource, *extra in yes:
        assert support.can_i(cluster, USER, verb, resource, *extra), (verb, resource, extra)
    for verb, resource, *extra in no:
        assert not support.can_i(cluster, USER, verb, resource, *extra), (verb, resource, extra)


def test_the_operator_works_in_the_watched_namespace_only(
    cluster: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    operator: OperatorProcess,
) -> None:
    for ns in (UNWATCHED, WATCHED):
        cluster.kubectl("apply", "-f", "-", input=support.tenant_secret(ns))
        cluster.kubectl("apply", "-f", "-", input=support.policy(ns, target=8))
    obj: dict[str, Any] = wait_for(
        support.status_is(cluster, WATCHED, "web", 1, "True"), "Ready in the watched namespace",
        timeout=120, op=operator,
    )  # fmt: skip
    assert support.owned_instances(stand_in, obj["metadata"]["uid"])
    wait_for_events(cluster, WATCHED, {"Launched"}, op=operator)
    # several reconcile intervals later the other namespace's policy is untouched:
    # no status, no finalizer, no instances, no Events
    time.sleep(3 * 2)
    other = support.get_json(cluster, "spotpolicy", "web", "-n", UNWATCHED)
    assert "status" not in other
    assert not other["metadata"].get("finalizers")
    assert support.owned_instances(stand_in, other["metadata"]["uid"]) == []
    assert support.get_json(cluster, "events", "-n", UNWATCHED)["items"] == []
    log = operator.log()
    refusals = ("Forbidden", "forbidden", " 403", "Not enough permissions", "Failed to post")
    assert not [line for line in log.splitlines() if any(r in line for r in refusals)], log[-4000:]

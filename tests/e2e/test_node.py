"""The chart's pod on a real node: ``helm install`` runs the operator from the image.

Everything is real: the image built with buildah (``hack/image.sh``), a node of
containerd + runc + CNI bridge + kubelet + kube-proxy in a network namespace of its own
(``tests/fixtures/node.py``), kube-scheduler and kube-controller-manager beside the
local control plane, the two charts installed with the real helm, and the stand-in
cloud on the address pods reach this machine at. So the chart's probes, security
context, volumes, ServiceAccount token and the in-cluster ``kubernetes`` Service are
what the kubelet and the runtime enforce, not what a test reads from a manifest.

A machine without containerd, the node binaries or root fails this module
(``make setup`` and ``make node-tools`` provide them): it is part of what CI proves."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from tests.e2e import support
from tests.fixtures import cloud as cloud_fx
from tests.fixtures import node as node_fx
from tests.fixtures import operator as operator_fx

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

RELEASE, NS, TENANT = "spotfleet", "spotfleet-system", "tenant-node"
SELECTOR = "app.kubernetes.io/name=spotfleet"
UID = 65532
#: Log lines that would mean the pod wrote outside its writable paths, or was refused.
BAD_LOG_LINES = ("Read-only file system", "PermissionError", "Permission denied", "Traceback",
                 "Forbidden")  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.LocalCluster]:
    """A control plane a node can join (this module's own)."""
    if missing := node_fx.missing_prerequisites():
        pytest.fail("the node cannot run here, missing: " + "; ".join(missing), pytrace=False)
    host, _ = node_fx.LocalNode.subnet_for(os.getpid())
    yield from support.own_cluster(tmp_path_factory.mktemp("node-cluster"), host)


@pytest.fixture(scope="module")
def node(
    cluster: localcluster.LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[node_fx.LocalNode]:
    with node_fx.running(cluster, tmp_path_factory.mktemp("node")) as n:
        yield n


@pytest.fixture(scope="module")
def stand_in(
    node: node_fx.LocalNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[cloud_fx.Cloud]:
    """The stand-in cloud where the pod reaches this machine (the node's veth)."""
    workdir = tmp_path_factory.mktemp("node-cloud")
    with cloud_fx.own_cloud(workdir, "--host", node.host_address, "--notice-seconds", "2") as c:
        yield c


def wait(what: str, check: Callable[[], Any], node: node_fx.LocalNode, timeout: float = 180) -> Any:
    """Poll ``check()`` until truthy; fail with the pod's state and logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    pods = node.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    desc = node.cluster.kubectl("describe", "pods", "-n", NS, check=False).stdout
    logs = "\n".join(
        node.container_log(NS, p["metadata"]["name"])
        for p in node_fx.pod_json(node.cluster, NS, SELECTOR)
    )
    kubelet = (node.logs / "kubelet.log").read_text(errors="replace")[-3000:]
    pytest.fail(
        f"timed out after {timeout}s waiting for {what}\n{pods}\n{desc[-4000:]}\n"
        f"{logs[-4000:]}\n== kubelet\n{kubelet}"
    )


@pytest.fixture(scope="module")
def release(
    cluster: localcluster.LocalCluster,
    node: node_fx.LocalNode,
    image: str,
    stand_in: cloud_fx.Cloud,
    helm: support.Helm,
    workdir: Path,
) -> Iterator[dict[str, Any]]:
    """The image loaded into the node, both charts installed as docs/helm.md says; the
    operator pod Running and Ready. Uninstalled at the end."""
    node.load_image(image)
    repo, tag = image.rsplit(":", 1)
    helm("install", "spotfleet-crds", str(support.REPO / "charts" / "spotfleet-crds"))
    support.operator_namespace(cluster, NS, "spotfleet-aws")
    values = {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "reconcileIntervalSeconds": 2,
        "awsEndpointUrl": stand_in.endpoint_url,
        "interruptionQueueUrl": cloud_fx.interruption_queue(stand_in),
        "aws": {"credentialsSecret": "spotfleet-aws"},
    }
    values_file = workdir / "node-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = helm("install", RELEASE, str(support.CHART), "-n", NS, "-f", str(values_file))
    assert "STATUS: deployed" in out.stdout, out.stdout

    def ready_pod() -> Any:
        for p in node_fx.pod_json(cluster, NS, SELECTOR):
            conds = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
            if conds.get("Ready") == "True":
                return p
        return None

    pod = wait("the operator pod Ready", ready_pod, node)
    try:
        yield {"pod": pod, "cloud": stand_in}
    finally:
        helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "120s", check=False)


def test_the_node_runs_the_charts_pod_as_the_chart_says(
    release: dict[str, Any], node: node_fx.LocalNode, cluster: localcluster.LocalCluster
) -> None:
    pod = release["pod"]
    assert pod["spec"]["nodeName"] == node.name
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0, status
    # the runtime enforces the chart's security context on the operator's process
    cid = status["containerID"].removeprefix("containerd://")
    pid = node.tasks()[cid]
    proc = {
        k: v.split()
        for k, v in (
            ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    }
    assert proc["Uid"] == [str(UID)] * 4 and proc["Gid"] == [str(UID)] * 4, proc["Uid"]
    assert proc["CapEff"] == ["0000000000000000"] and proc["NoNewPrivs"] == ["1"]
    assert proc["Seccomp"] == ["2"]  # RuntimeDefault: a filter is installed
    mounts = {
        f[4]: f[5].split(",")
        for f in (ln.split() for ln in Path(f"/proc/{pid}/mountinfo").read_text().splitlines())
    }
    assert "ro" in mounts["/"], mounts["/"]
    for writable in ("/tmp", "/var/lib/spotfleet"):  # the chart's emptyDirs
        assert "rw" in mounts[writable], (writable, mounts.get(writable))
    # its token came from the ServiceAccount admission + kubelet (projected volume)
    # (Debian's /var/run is a link to /run, so that is where the runtime mounts it)
    (token_dir,) = [m for m in mounts if m.endswith("/run/secrets/kubernetes.io/serviceaccount")]
    assert "ro" in mounts[token_dir], mounts[token_dir]
    # kube-apiserver reaches the kubelet: `kubectl logs` of the pod works
    logs = cluster.kubectl("logs", "-n", NS, pod["metadata"]["name"]).stdout
    assert logs.strip(), "kubectl logs printed nothing"


def test_the_pod_reconciles_a_policy_to_ready_and_cleans_up(
    release: dict[str, Any], node: node_fx.LocalNode, cluster: localcluster.LocalCluster
) -> None:
    cloud = release["cloud"]
    cluster.kubectl("create", "namespace", TENANT)
    cluster.kubectl("apply", "-f", "-", input=support.tenant_secret(TENANT))
    cluster.kubectl("apply", "-f", "-", input=support.policy(TENANT))
    obj = wait("Ready=True", support.status_is(cluster, TENANT, "web", 1, "True"), node)
    assert float(obj["status"]["capacity"]["fulfilled"]["total"]) >= 32
    uid = obj["metadata"]["uid"]
    assert operator_fx.ec2_instances(cloud, uid), "Ready without running instances"
    events = json.loads(cluster.kubectl("get", "events", "-n", TENANT, "-o", "json").stdout)[
        "items"
    ]
    assert any(e["involvedObject"].get("uid") == uid for e in events), "no Event for the policy"

    # deleting the policy runs the finalizer in the pod: its instances go
    cluster.kubectl("delete", "spotpolicy", "web", "-n", TENANT, "--timeout=90s")
    wait("instances terminated", lambda: not operator_fx.ec2_instances(cloud, uid), node, 90)
    text = node.container_log(NS, release["pod"]["metadata"]["name"])
    assert text, "the kubelet wrote no log for the pod"
    assert not [b for b in BAD_LOG_LINES if b in text], text[-4000:]

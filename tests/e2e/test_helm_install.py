"""The chart end to end, cluster-wide mode, on real parts: a kube-apiserver + etcd of this
module's own, the real helm and kubectl, the stand-in cloud (moto + market layer),
the operator as its own process, and a real Prometheus scraping it.

This module's control plane has no node, so the chart's pods never run here and the
image values are irrelevant (tests/e2e/test_node.py runs the pod on a real node).
What is tested is what the API server holds after ``helm install`` (CRD,
ServiceAccount, RBAC, Deployment...), and then the operator started from that
Deployment's own args and env (see ``support.run_deployment``) with the identity of
the chart's ServiceAccount -- so the chart's RBAC is what allows or refuses every call
the operator makes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from tests.e2e import dashboard, support
from tests.fixtures import cloud as cloud_fx
from tests.fixtures.operator import OperatorProcess, wait_for, wait_for_events

pytestmark = pytest.mark.e2e

RELEASE = "spotfleet"
NS = "spotfleet-system"
SA = "spotfleet"  # the release name contains the chart name: fullname == release name
USER = f"system:serviceaccount:{NS}:{SA}"
TENANT, OTHER = "tenant-a", "tenant-b"
CRD = "spotpolicies.spotfleet.dev"
#: What the operator may do cluster-wide, and nothing else: (apiGroup, resource, verb).
EXPECTED_RULES = (
    {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")}
    | {("spotfleet.dev", "spotpolicies", v) for v in ("get", "list", "watch", "patch")}
    | {("spotfleet.dev", "spotpolicies/status", v) for v in ("get", "patch", "update")}
    | {("", "secrets", "get")}
    | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
)
#: Log lines that would mean the chart's RBAC refused something the operator tried.
REFUSALS = ("Forbidden", "forbidden", " 403", "Not enough permissions", "Failed to post an event")


@pytest.fixture(scope="module")
def values(stand_in: cloud_fx.Cloud, queue_url: str) -> dict[str, Any]:
    """Install values: image irrelevant (no kubelet), everything else as a user would."""
    return {
        "image": {"repository": "registry.invalid/spotfleet", "tag": "e2e"},
        "reconcileIntervalSeconds": 2,
        "metrics": {"port": localcluster.free_port()},
        "health": {"port": localcluster.free_port()},
        "awsEndpointUrl": stand_in.endpoint_url,
        "interruptionQueueUrl": queue_url,
        "aws": {"credentialsSecret": "spotfleet-aws"},
        "riskModel": "bundled",
    }


@pytest.fixture(scope="module")
def release(
    cluster: localcluster.LocalCluster, helm: support.Helm, values: dict[str, Any], workdir: Path
) -> Iterator[str]:
    """``helm install`` into a fresh namespace (with the operator's own AWS identity in a
    Secret, as docs/helm.md says); uninstalled at the end if a test did not."""
    support.operator_namespace(cluster, NS, "spotfleet-aws")
    values_file = workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = helm("install", RELEASE, str(support.CHART), "-n", NS, "-f", str(values_file))
    assert "STATUS: deployed" in out.stdout, out.stdout
    try:
        yield RELEASE
    finally:
        helm("uninstall", RELEASE, "-n", NS, check=False)


@pytest.fixture(scope="module")
def operator(
    cluster: localcluster.LocalCluster, release: str, workdir: Path
) -> Iterator[OperatorProcess]:
    """The operator started from the installed Deployment, as the chart's ServiceAccount."""
    kubeconfig = support.token_kubeconfig(cluster, NS, SA, workdir / "sa.kubeconfig")
    op = support.run_deployment(cluster, NS, release, kubeconfig, workdir)
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="module")
def tenant_policy(cluster: localcluster.LocalCluster, operator: OperatorProcess) -> dict[str, Any]:
    """A tenant's Secret + SpotPolicy, applied by the admin, reconciled to Ready."""
    cluster.kubectl("create", "namespace", TENANT)
    cluster.kubectl("apply", "-f", "-", input=support.tenant_secret(TENANT))
    cluster.kubectl("apply", "-f", "-", input=support.policy(TENANT))
    obj: dict[str, Any] = wait_for(
        support.status_is(cluster, TENANT, "web", 1, "True"), "Ready=True", timeout=120, op=operator
    )
    return obj


# ---------------------------------------------------------------------------------------


def test_helm_install_puts_the_charts_objects_in_the_api_server(
    cluster: localcluster.LocalCluster, release: str, helm: support.Helm, values: dict[str, Any]
) -> None:
    # the CRD came from the chart's crds/ (a symlink to the repo's crds/) and is served
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    crd = support.get_json(cluster, "crd", CRD)
    source = yaml.safe_load((support.REPO / "crds" / f"{CRD}.yaml").read_text())
    assert crd["spec"]["names"] == {**source["spec"]["names"], "listKind": "SpotPolicyList"}
    assert [v["name"] for v in crd["spec"]["versions"]] == [
        v["name"] for v in source["spec"]["versions"]
    ]
    status = json.loads(helm("status", release, "-n", NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    listed = json.loads(helm("list", "-n", NS, "-o", "json").stdout)
    assert [(r["name"], r["app_version"]) for r in listed] == [(release, "0.1.0")]

    sa = support.get_json(cluster, "serviceaccount", SA, "-n", NS)
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    role = support.get_json(cluster, "clusterrole", release)
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted == EXPECTED_RULES
    assert not any("resourceNames" in r or "nonResourceURLs" in r for r in role["rules"])
    binding = support.get_json(cluster, "clusterrolebinding", release)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": release,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]
    # cluster-wide mode makes no namespaced Roles
    assert (
        support.get_json(cluster, "roles", "-A", "-l", f"app.kubernetes.io/instance={release}")[
            "items"
        ]
        == []
    )

    dep = support.get_json(cluster, "deployment", release, "-n", NS)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SA
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == "registry.invalid/spotfleet:e2e"
    assert c["args"] == ["--all-namespaces"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env == {
        "SPOTFLEET_RECONCILE_INTERVAL_SECONDS": "2",
        "SPOTFLEET_METRICS_PORT": str(values["metrics"]["port"]),
        "SPOTFLEET_HEALTH_PORT": str(values["health"]["port"]),
        "SPOTFLEET_LOG_LEVEL": "INFO",
        "SPOTFLEET_RISK_MODEL": "bundled",
        "SPOTFLEET_DATABASE_URL": "sqlite+aiosqlite:////var/lib/spotfleet/audit.db",
        "SPOTFLEET_AWS_ENDPOINT_URL": values["awsEndpointUrl"],
        "SPOTFLEET_INTERRUPTION_QUEUE_URL": values["interruptionQueueUrl"],
    }
    assert c["envFrom"] == [{"secretRef": {"name": "spotfleet-aws"}}]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": values["metrics"]["port"], "health": values["health"]["port"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] == "health"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/var/lib/spotfleet": "data", "/tmp": "tmp"}
    assert {v["name"]: "emptyDir" in v for v in pod["volumes"]} == {"data": True, "tmp": True}
    # the image's ENTRYPOINT is what the args follow
    assert support.image_entrypoint() == ["spotfleet", "run"]

    svc = support.get_json(cluster, "service", f"{release}-metrics", "-n", NS)
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("metrics", values["metrics"]["port"], "metrics")
    ]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]

    cm = support.get_json(cluster, "configmap", f"{release}-dashboard", "-n", NS)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["spotfleet.json"]) == dashboard.load()
    # serviceMonitor is off by default (and this cluster has no Prometheus Operator CRD)
    manifest = helm("get", "manifest", release, "-n", NS).stdout
    assert "kind: ServiceMonitor" not in manifest


def test_the_service_account_may_do_what_the_operator_needs_and_nothing_more(
    cluster: localcluster.LocalCluster, release: str
) -> None:
    cluster.kubectl("create", "namespace", "rbac-probe")
    allowed = [
        ("get", "spotpolicies.spotfleet.dev", "-A"),
        ("watch", "spotpolicies.spotfleet.dev", "-A"),
        ("patch", "spotpolicies.spotfleet.dev", "-n", "rbac-probe"),
        ("patch", "spotpolicies.spotfleet.dev", "--subresource=status", "-n", "rbac-probe"),
        ("get", "secrets", "-n", "rbac-probe"),
        ("create", "events", "-n", "rbac-probe"),
        ("create", "events.events.k8s.io", "-n", "rbac-probe"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    refused = [
        ("delete", "pods", "-n", "rbac-probe"),
        ("create", "pods", "-n", "rbac-probe"),
        ("list", "secrets", "-n", "rbac-probe"),
        ("watch", "secrets", "-A"),
        ("create", "secrets", "-n", "rbac-probe"),
        ("create", "spotpolicies.spotfleet.dev", "-n", "rbac-probe"),
        ("update", "spotpolicies.spotfleet.dev", "-n", "rbac-probe"),
        ("delete", "spotpolicies.spotfleet.dev", "-n", "rbac-probe"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("get", "configmaps", "-n", NS),
        ("list", "namespaces"),
        ("create", "deployments.apps", "-n", NS),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("*", "*"),
    ]
    for verb, resource, *extra in allowed:
        assert support.can_i(cluster, USER, verb, resource, *extra), (verb, resource, extra)
    for verb, resource, *extra in refused:
        assert not support.can_i(cluster, USER, verb, resource, *extra), (verb, resource, extra)


def test_the_operator_reconciles_with_the_charts_identity(
    cluster: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    operator: OperatorProcess,
    tenant_policy: dict[str, Any],
    workdir: Path,
) -> None:
    # the kubeconfig the operator runs with is the ServiceAccount's, not the admin's
    who = subprocess.run(
        [
            str(localcluster.find_binary("kubectl")),
            "--kubeconfig", str(workdir / "sa.kubeconfig"),
            "auth", "whoami", "-o", "json",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == USER

    st = tenant_policy["status"]
    # it read the tenant's Secret (credentials resolved) and wrote status
    assert support.condition(tenant_policy, "CredentialsValid")["status"] == "True"
    assert float(st["capacity"]["fulfilled"]["total"]) >= 32
    assert st["allocation"] and float(st["cost"]["perHour"]) > 0
    # ... launched what status says, in EC2 (the stand-in cloud)
    inst = support.owned_instances(stand_in, tenant_policy["metadata"]["uid"])
    assert sum(a["count"] for a in st["allocation"]) == len(inst)
    # ... and posted Events on the policy
    wait_for_events(cluster, TENANT, {"Planned", "Launched"}, "web", operator)
    # nothing it tried was refused (Kopf logs and continues on 403s: check the log)
    log = operator.log()
    assert not [line for line in log.splitlines() if any(r in line for r in REFUSALS)], log[-4000:]
    # the default audit store landed on the emptyDir standing in for /var/lib/spotfleet
    assert (workdir / "volumes" / "data" / "audit.db").stat().st_size > 0


def test_prometheus_scrapes_the_operator_and_every_dashboard_query_has_series(
    cluster: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    operator: OperatorProcess,
    tenant_policy: dict[str, Any],
    workdir: Path,
) -> None:
    # make every kind of event the dashboard shows happen, for real:
    # a scale-in (terminations) ...
    cluster.kubectl(
        "patch", "spotpolicy", "web", "-n", TENANT, "--type=merge",
        "-p", '{"spec":{"capacity":{"target":16}}}',
    )  # fmt: skip
    wait_for(
        support.status_is(cluster, TENANT, "web", 2, "True"), "Ready at generation 2", op=operator
    )
    # ... an interruption warning and a rebalance recommendation through EventBridge -> SQS ...
    uid = tenant_policy["metadata"]["uid"]
    spot = [
        i for i in support.owned_instances(stand_in, uid) if i.get("InstanceLifecycle") == "spot"
    ]
    assert spot, "the policy runs no spot instance to interrupt"
    stand_in.client.interrupt(spot[0]["InstanceId"], kind="both")
    # ... and a reconcile error (a policy whose Secret does not exist)
    cluster.kubectl("create", "namespace", OTHER)
    cluster.kubectl("apply", "-f", "-", input=support.policy(OTHER, "nokeys", secret="missing"))
    failed = wait_for(
        support.status_is(cluster, OTHER, "nokeys", 1, "False"), "Ready=False", op=operator
    )
    assert support.condition(failed, "Ready")["reason"] == "SecretNotFound"
    wanted = (
        f'spotfleet_interruptions_total{{namespace="{TENANT}",policy="web"}}',
        f'spotfleet_rebalance_recommendations_total{{namespace="{TENANT}",policy="web"}}',
        f'spotfleet_terminations_total{{namespace="{TENANT}",policy="web",reason="scale-in"}}',
        f'spotfleet_reconcile_errors_total{{namespace="{OTHER}",policy="nokeys",reason="SecretNotFound"}}',
    )
    missing: list[str] = []

    def all_there() -> bool:
        text = operator.metrics()
        missing[:] = [w for w in wanted if w not in text]
        return not missing

    try:
        # generous: on a loaded 2-core machine the SQS round trips and reconciles behind
        # these series took over 60 s twice (a wait, not a timing assertion)
        wait_for(
            all_there,
            "interruption, rebalance, scale-in and error series",
            timeout=180,
            op=operator,
        )
    except BaseException:
        print("missing from /metrics:", missing)
        raise

    prom = support.Prometheus.start(workdir / "prometheus", [f"127.0.0.1:{operator.metrics_port}"])
    try:
        wait_for(
            lambda: [s for s in prom.query('up{job="spotfleet"}') if s["value"][1] == "1"],
            "Prometheus to scrape the operator (up == 1)",
        )
        dash = dashboard.load()
        variables = dashboard.all_values(dash)
        queries = [q for q in dashboard.queries(dash) if not q.where.startswith("variable ")]
        pending = {q.where: dashboard.substitute(q.expr, variables, "1m") for q in queries}
        results: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for where, expr in list(pending.items()):
                got = prom.query(expr)
                if got:
                    results[where] = got
                    del pending[where]
            time.sleep(1)
        assert not pending, f"dashboard queries with no series after 120s: {pending}"
        assert len(results) == len(queries)
        # the variables' label_values() sources exist too, and list the tenant's policy
        series = prom.query("spotfleet_capacity_target_units")
        assert {(s["metric"]["namespace"], s["metric"]["policy"]) for s in series} >= {
            (TENANT, "web")
        }
        # the values are the operator's: cost and savings of the tenant as status says
        obj = support.get_json(cluster, "spotpolicy", "web", "-n", TENANT)
        cost = prom.query(f'spotfleet_cost_usd_per_hour{{namespace="{TENANT}",policy="web"}}')
        assert len(cost) == 1
        assert abs(float(cost[0]["value"][1]) - float(obj["status"]["cost"]["perHour"])) < 0.01
        launched = prom.query(f'sum(spotfleet_launches_total{{namespace="{TENANT}",policy="web"}})')
        assert float(launched[0]["value"][1]) >= len(obj["status"]["allocation"])
    finally:
        prom.stop()
    assert prom.proc.returncode is not None


def test_promtool_accepts_the_operators_exposition(operator: OperatorProcess) -> None:
    text = operator.metrics()
    assert "spotfleet_decision_duration_seconds_bucket" in text
    out = subprocess.run(
        [str(support._which("promtool")), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_helm_uninstall_removes_the_release(
    cluster: localcluster.LocalCluster,
    helm: support.Helm,
    release: str,
    operator: OperatorProcess,
) -> None:
    operator.stop()  # by PID, before its identity goes away
    assert operator.proc.returncode is not None
    out = helm("uninstall", release, "-n", NS, "--wait")
    assert "uninstalled" in out.stdout
    for kind, ns in (
        ("deployment", NS),
        ("serviceaccount", NS),
        ("service", NS),
        ("configmap", NS),
    ):
        name = {"service": f"{release}-metrics", "configmap": f"{release}-dashboard"}.get(
            kind, release
        )
        wait_for(
            lambda k=kind, n=name, s=ns: not support.exists(cluster, k, n, "-n", s), f"{kind} gone"
        )
    assert not support.exists(cluster, "clusterrole", release)
    assert not support.exists(cluster, "clusterrolebinding", release)
    assert helm("list", "-A", "-q").stdout.split() == []
    # Helm never deletes CRDs from crds/ (that would delete every SpotPolicy): docs/helm.md
    assert support.exists(cluster, "crd", CRD)
    # and the identity it minted a token for can no longer do anything
    assert not support.can_i(cluster, USER, "get", "secrets", "-n", TENANT)

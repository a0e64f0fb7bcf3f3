"""The CRD upgrade path on a real kube-apiserver + etcd: ``helm install`` of
charts/spotfleet-crds, a SpotPolicy, then ``helm upgrade`` with a changed CRD (a new
field and a printer column, as a later release would ship): the cluster serves the new
schema, the existing SpotPolicy is untouched, the main chart still installs beside it,
and uninstalling the CRD chart leaves the CRDs (and so the policies) in place; CRDs the
main chart created are handed over as docs/helm.md says; and on the same cluster
``helm install`` refuses values the schema rejects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from tests.e2e import support

pytestmark = pytest.mark.e2e

CRD_CHART = support.REPO / "charts" / "spotfleet-crds"
CRD = "spotpolicies.spotfleet.dev"
NS, TENANT = "spotfleet-system", "tenant-a"


def next_release(workdir: Path) -> Path:
    """A copy of the CRD chart (symlinks resolved) as the next release would ship it: chart
    0.2.0 whose SpotPolicy CRD has an optional ``spec.costCenter`` and a CostCenter column."""
    chart = workdir / "spotfleet-crds-next"
    shutil.copytree(CRD_CHART, chart, symlinks=False)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.2.0"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    path = chart / "files" / f"{CRD}.yaml"
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["costCenter"] = {"type": "string", "description": "Who pays."}
    version["additionalPrinterColumns"].insert(
        1, {"name": "CostCenter", "type": "string", "jsonPath": ".spec.costCenter"}
    )
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def with_cost_center(name: str) -> str:
    obj = json.loads(support.policy(TENANT, name))
    obj["spec"]["costCenter"] = "cc-42"
    return json.dumps(obj)


def served_spec(cluster: localcluster.LocalCluster) -> dict[str, Any]:
    crd = support.get_json(cluster, "crd", CRD)
    (version,) = crd["spec"]["versions"]
    props: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return props


def test_helm_upgrade_of_the_crd_chart_moves_the_cluster_to_the_new_schema(
    cluster: localcluster.LocalCluster, helm: support.Helm, workdir: Path
) -> None:
    out = helm("install", "spotfleet-crds", str(CRD_CHART), "-n", NS, "--create-namespace")
    assert "STATUS: deployed" in out.stdout
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    crd = support.get_json(cluster, "crd", CRD)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "spotfleet-crds"
    assert "costCenter" not in served_spec(cluster)

    cluster.kubectl("create", "namespace", TENANT)
    cluster.kubectl("apply", "-f", "-", input=support.policy(TENANT, "web"))
    before = support.get_json(cluster, "spotpolicy", "web", "-n", TENANT)
    # the old schema does not know the new field: strict validation refuses it
    refused = cluster.kubectl(
        "create", "--validate=strict", "-f", "-", input=with_cost_center("early"), check=False
    )
    assert refused.returncode != 0 and 'unknown field "spec.costCenter"' in refused.stderr

    out = helm("upgrade", "spotfleet-crds", str(next_release(workdir)), "-n", NS)
    assert "STATUS: deployed" in out.stdout
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    assert served_spec(cluster)["costCenter"] == {"type": "string", "description": "Who pays."}
    crd = support.get_json(cluster, "crd", CRD)
    (version,) = crd["spec"]["versions"]
    assert [c["name"] for c in version["additionalPrinterColumns"]][:2] == [
        "Target",
        "CostCenter",
    ]
    assert crd["metadata"]["labels"]["helm.sh/chart"] == "spotfleet-crds-0.2.0"
    # the new field is accepted and stored, and shown in the new column
    cluster.kubectl("create", "--validate=strict", "-f", "-", input=with_cost_center("billed"))
    billed = support.get_json(cluster, "spotpolicy", "billed", "-n", TENANT)
    assert billed["spec"]["costCenter"] == "cc-42"
    table = cluster.kubectl("get", "spotpolicies", "-n", TENANT).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "TARGET", "COSTCENTER"]
    rows = {ln.split()[0]: ln.split() for ln in table[1:]}
    assert rows["billed"][:3] == ["billed", "32", "cc-42"]
    assert rows["web"][:2] == ["web", "32"] and "cc-42" not in rows["web"]  # no cost centre
    # the policy from before the upgrade is untouched
    after = support.get_json(cluster, "spotpolicy", "web", "-n", TENANT)
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp"):
        assert after["metadata"][key] == before["metadata"][key]
    assert after["spec"] == before["spec"]

    # the main chart installs beside it: Helm skips the CRDs that already exist
    values = workdir / "main-values.yaml"
    values.write_text(yaml.safe_dump({"image": {"repository": "registry.invalid/spotfleet"}}))
    out = helm("install", "spotfleet", str(support.CHART), "-n", NS, "-f", str(values))
    assert "STATUS: deployed" in out.stdout
    assert "costCenter" in served_spec(cluster)  # the chart's own crds/ did not roll it back
    helm("uninstall", "spotfleet", "-n", NS)

    # uninstalling the CRD chart keeps the CRDs and every SpotPolicy
    out = helm("uninstall", "spotfleet-crds", "-n", NS)
    assert "kept due to the resource policy" in out.stdout + out.stderr
    assert support.exists(cluster, "crd", CRD)
    names = support.get_json(cluster, "spotpolicies", "-n", TENANT)["items"]
    assert sorted(p["metadata"]["name"] for p in names) == ["billed", "web"]


def handover_commands() -> str:
    """The ```sh block of docs/helm.md that hands main-chart CRDs over to spotfleet-crds."""
    text = (support.REPO / "docs" / "helm.md").read_text()
    after = text.split("**Moving an existing install to the CRD chart.**", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def test_crds_from_the_main_chart_are_handed_over_as_the_docs_say(
    cluster: localcluster.LocalCluster, helm: support.Helm, workdir: Path
) -> None:
    # start where an existing user is: CRDs created by the main chart's crds/, a policy
    for name in (
        "spotpolicies.spotfleet.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    ):
        cluster.kubectl("delete", "crd", name, "--ignore-not-found", "--wait=true")
    values = workdir / "handover-values.yaml"
    values.write_text(yaml.safe_dump({"image": {"repository": "registry.invalid/spotfleet"}}))
    helm(
        "install",
        "spotfleet",
        str(support.CHART),
        "-n",
        NS,
        "--create-namespace",
        "-f",
        str(values),
    )
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    cluster.kubectl("create", "namespace", "tenant-h")
    obj = json.loads(support.policy("tenant-h", "web"))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    before = support.get_json(cluster, "spotpolicy", "web", "-n", "tenant-h")
    # without the hand-over Helm refuses to take the CRDs
    refused = helm("install", "spotfleet-crds", str(CRD_CHART), "-n", NS, check=False)
    assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr
    # the documented commands, as written, with this cluster's helm and kubectl
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(helm.home / var.lower())
    bins = {str(localcluster.find_binary(b).parent) for b in ("helm", "kubectl")}
    env["PATH"] = os.pathsep.join([*sorted(bins), env.get("PATH", "")])
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", handover_commands()],
        cwd=support.REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "STATUS: deployed" in out.stdout
    crd = support.get_json(cluster, "crd", CRD)
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "spotfleet-crds"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    after = support.get_json(cluster, "spotpolicy", "web", "-n", "tenant-h")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"] == before["spec"]
    # and from now on helm upgrade manages them
    helm("upgrade", "spotfleet-crds", str(CRD_CHART), "-n", NS)
    helm("uninstall", "spotfleet", "-n", NS)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicas=abc", "at '/replicas': got string, want integer"),
        ("logLevl=DEBUG", "at '': additional properties 'logLevl' not allowed"),
        ("metrics.port=70000", "at '/metrics/port': maximum"),
    ],
)
def test_helm_install_refuses_values_the_schema_rejects(
    cluster: localcluster.LocalCluster, helm: support.Helm, setting: str, message: str
) -> None:
    out = helm("install", "bad", str(support.CHART), "-n", "bad", "--set", setting, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert "INSTALLATION FAILED" in out.stderr
    listed = json.loads(helm("list", "-A", "-o", "json").stdout)
    assert "bad" not in {r["name"] for r in listed}  # nothing was installed

"""The examples, printer columns and `kubectl explain` against the real API server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from spotfleet_operator import api
from spotfleet_operator.api import conditions, schema, status

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

pytestmark = pytest.mark.integration


def _get(cluster: localcluster.LocalCluster, ns: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "spotpolicy", name, "-n", ns, "-o", "json")
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def test_every_example_is_accepted_and_reads_back_unchanged(
    crds_installed: localcluster.LocalCluster, namespace: str
) -> None:
    assert len(EXAMPLES) >= 5
    for path in EXAMPLES:
        manifest = yaml.safe_load(path.read_text())
        crds_installed.kubectl("apply", "-n", namespace, "-f", str(path))
        stored = _get(crds_installed, namespace, manifest["metadata"]["name"])
        assert stored["spec"] == manifest["spec"], path.name
        assert "status" not in stored
        parsed = api.parse_policy(stored)
        assert isinstance(parsed, api.ParsedPolicy), path.name
        assert parsed.namespace == namespace
        assert parsed.generation == 1
        assert parsed.uid == stored["metadata"]["uid"]
    listed = crds_installed.kubectl("get", "spol", "-n", namespace, "-o", "name").stdout.split()
    assert len(listed) == len(EXAMPLES)


def _status() -> dict[str, Any]:
    now = datetime(2021, 5, 31, 12, 0, tzinfo=UTC)
    conds = conditions.set_condition(
        [], conditions.READY, conditions.TRUE, conditions.RECONCILED, "96 vcpu running", 1, now
    )
    conds = conditions.set_condition(
        conds, conditions.DEGRADED, conditions.FALSE, conditions.AS_EXPECTED, "", 1, now
    )
    st = status.SpotPolicyStatus.model_validate(
        {
            "observedGeneration": 1,
            "conditions": conditions.to_json(conds),
            "capacity": {
                "unit": "vcpu",
                "desired": {"spot": "80", "onDemand": "16", "total": "96"},
                "fulfilled": {"spot": "64", "onDemand": "16", "total": "80"},
                "spotPercent": 80,
            },
            "allocation": [
                {
                    "instanceType": "m5.xlarge",
                    "zone": "us-east-1a",
                    "market": "spot",
                    "count": 16,
                    "pricePerHour": "0.0685",
                },
                {
                    "instanceType": "m5.xlarge",
                    "zone": "us-east-1b",
                    "market": "on-demand",
                    "count": 4,
                    "pricePerHour": "0.192",
                },
            ],
            "cost": {
                "perHour": "1.864",
                "onDemandEquivalentPerHour": "3.84",
                "savingsPercent": "51.5",
            },
            "lastDecision": {
                "time": "2021-05-31T12:00:00Z",
                "summary": "16 m5.xlarge spot in us-east-1a, 4 on-demand",
                "alternatives": [
                    {"summary": "c5.2xlarge spot", "costPerHour": "1.9", "reason": "dearer"}
                ],
            },
        }
    )
    return st.to_patch()


def test_printer_columns_show_spec_and_status(
    crds_installed: localcluster.LocalCluster, namespace: str
) -> None:
    crds_installed.kubectl(
        "apply", "-n", namespace, "-f", str(REPO / "examples/web-tier-vcpu.yaml")
    )
    before = crds_installed.kubectl("get", "spol", "-n", namespace).stdout.splitlines()
    assert before[0].split() == [
        "NAME", "TARGET", "FULFILLED", "SPOT%", "$/H", "SAVINGS", "READY", "AGE",
    ]  # fmt: skip
    assert before[1].split()[:2] == ["web-tier", "96"]

    patch = _status()
    crds_installed.kubectl(
        "patch", "spotpolicy", "web-tier", "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps({"status": patch}),
    )  # fmt: skip
    rows = crds_installed.kubectl("get", "spol", "-n", namespace).stdout.splitlines()
    assert rows[1].split()[:7] == ["web-tier", "96", "80", "80", "1.864", "51.5", "True"]
    wide = crds_installed.kubectl("get", "spol", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[:3] == ["NAME", "TARGET", "UNIT"]
    assert wide.splitlines()[1].split()[:3] == ["web-tier", "96", "vcpu"]

    stored = _get(crds_installed, namespace, "web-tier")
    assert stored["status"] == patch
    assert status.SpotPolicyStatus.model_validate(stored["status"]).to_patch() == patch
    # the status subresource: a status change does not bump the generation
    assert stored["metadata"]["generation"] == 1


def test_status_schema_refuses_a_malformed_status(
    crds_installed: localcluster.LocalCluster, namespace: str
) -> None:
    crds_installed.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples/dry-run.yaml"))
    out = crds_installed.kubectl(
        "patch", "spotpolicy", "analytics-preview", "-n", namespace,
        "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"cost": {"perHour": 1.5}}}),
        check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "status.cost.perHour" in out.stderr


def _objects(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)] if "properties" in node else []
    for name, child in node.get("properties", {}).items():
        target = child.get("items", child) if child.get("type") == "array" else child
        out += _objects(target, f"{path}.{name}")
    return out


def _words(text: str) -> str:
    return " ".join(text.split())


def test_kubectl_explain_spec_capacity_prints_the_descriptions(
    crds_installed: localcluster.LocalCluster,
) -> None:
    out = crds_installed.kubectl("explain", "spotpolicy.spec.capacity").stdout
    text = _words(out)
    capacity = schema.root()["properties"]["spec"]["properties"]["capacity"]
    assert _words(capacity["description"]) in text
    for name in ("target", "unit", "min"):
        assert _words(capacity["properties"][name]["description"]) in text, name
    assert "target <integer> -required-" in text
    assert "enum: vcpu, memoryGiB, instances" in text


def test_kubectl_explain_documents_every_spec_field(
    crds_installed: localcluster.LocalCluster,
) -> None:
    spec_schema = schema.root()["properties"]["spec"]
    objects = _objects(spec_schema, "spotpolicy.spec")
    assert len(objects) >= 14
    for path, node in objects:
        text = _words(crds_installed.kubectl("explain", path).stdout)
        for name, child in node["properties"].items():
            assert f"{name} <" in text, f"{path}.{name} missing"
            assert _words(child["description"]) in text, f"{path}.{name} undocumented"

"""The real API server refuses bad SpotPolicies at admission, naming the field.

Each case mutates a valid manifest (examples/web-tier-vcpu.yaml) in one way and
sends it with ``kubectl create`` to the real kube-apiserver with the generated
CRD installed. The error must name the field path and say what is wrong; the
operator's own parser must reject the same manifest naming the same field.
docs/validation.md lists these cases.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from spotfleet_operator import api

REPO = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((REPO / "examples" / "web-tier-vcpu.yaml").read_text())

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    """One invalid manifest: how to break it, the field the error names, words it contains."""

    id: str
    mutate: Callable[[dict[str, Any]], object]
    path: str
    fragment: str


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        node = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        node = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return apply


def _both(*fns: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        for fn in fns:
            fn(spec)

    return apply


IR = "instanceRequirements"

CASES: list[Case] = [
    Case("region-missing", _drop("region"), "spec.region", "Required value"),
    Case("region-pattern", _set("region", "US East 1"), "spec.region", "should match"),
    Case(
        "target-negative",
        _set("capacity.target", -1),
        "spec.capacity.target",
        "greater than or equal to 0",
    ),
    Case(
        "target-not-integer",
        _set("capacity.target", "96"),
        "spec.capacity.target",
        "must be of type integer",
    ),
    Case("unit-unknown", _set("capacity.unit", "cores"), "spec.capacity.unit", "Unsupported value"),
    Case(
        "min-above-target",
        _set("capacity.min", 97),
        "spec.capacity.min",
        "min must be less than or equal to target",
    ),
    Case(
        "instances-bound",
        _both(
            _set("capacity.unit", "instances"),
            _set("capacity.target", 5001),
            _set("capacity.min", 1),
            _set("onDemand.base", 0),
        ),
        "spec.capacity.target",
        "at most 5000 when unit is instances",
    ),
    Case(
        "base-above-target",
        _set("onDemand.base", 97),
        "spec.onDemand.base",
        "onDemand.base must be less than or equal to capacity.target",
    ),
    Case(
        "percentage-over-100",
        _set("onDemand.percentageAboveBase", 101),
        "spec.onDemand.percentageAboveBase",
        "less than or equal to 100",
    ),
    Case(
        "percentage-negative",
        _set("onDemand.percentageAboveBase", -5),
        "spec.onDemand.percentageAboveBase",
        "greater than or equal to 0",
    ),
    Case(
        "vcpu-min-above-max",
        _set(f"{IR}.vcpu", {"min": 32, "max": 4}),
        f"spec.{IR}.vcpu.min",
        "min must be less than or equal to max",
    ),
    Case(
        "memory-min-above-max",
        _set(f"{IR}.memoryGiB", {"min": "64", "max": "8.5"}),
        f"spec.{IR}.memoryGiB.min",
        "min must be less than or equal to max",
    ),
    Case(
        "memory-per-vcpu-pattern",
        _set(f"{IR}.memoryGiBPerVcpu", {"max": "4Gi"}),
        f"spec.{IR}.memoryGiBPerVcpu.max",
        "should match",
    ),
    Case(
        "gpu-min-above-max",
        _set(f"{IR}.gpu", {"min": 4, "max": 1}),
        f"spec.{IR}.gpu.min",
        "min must be less than or equal to max",
    ),
    Case(
        "architecture-unknown",
        _set(f"{IR}.architectures", ["sparc"]),
        f"spec.{IR}.architectures[0]",
        "Unsupported value",
    ),
    Case(
        "architecture-duplicate",
        _set(f"{IR}.architectures", ["x86_64", "x86_64"]),
        f"spec.{IR}.architectures",
        "Duplicate value",
    ),
    Case(
        "family-allowed-and-excluded",
        _set(f"{IR}.allowedFamilies", ["m5", "t2"]),
        f"spec.{IR}.excludedFamilies",
        "cannot be both allowed and excluded",
    ),
    Case(
        "type-pattern",
        _set(f"{IR}.allowedTypes", ["M5.LARGE"]),
        f"spec.{IR}.allowedTypes[0]",
        "should match",
    ),
    Case(
        "burstable-unknown",
        _set(f"{IR}.burstable", "sometimes"),
        f"spec.{IR}.burstable",
        "Unsupported value",
    ),
    Case(
        "objective-unknown",
        _set("strategy.objective", "cheapest"),
        "spec.strategy.objective",
        "Unsupported value",
    ),
    Case(
        "price-not-decimal",
        _set("strategy.maxSpotPricePerUnitHour", "1e-3"),
        "spec.strategy.maxSpotPricePerUnitHour",
        "should match",
    ),
    Case(
        "price-is-a-float",
        _set("strategy.maxSpotPricePerUnitHour", 0.03),
        "spec.strategy.maxSpotPricePerUnitHour",
        "must be of type string",
    ),
    Case(
        "price-negative",
        _set("strategy.maxSpotPricePerUnitHour", "-0.03"),
        "spec.strategy.maxSpotPricePerUnitHour",
        "should match",
    ),
    Case(
        "budget-zero",
        _set("strategy.budgetPerHour", "0.00"),
        "spec.strategy.budgetPerHour",
        "budgetPerHour must be greater than 0",
    ),
    Case(
        "min-pools-zero",
        _set("strategy.diversification.minPools", 0),
        "spec.strategy.diversification.minPools",
        "greater than or equal to 1",
    ),
    Case(
        "pool-share-over-100",
        _set("strategy.diversification.maxPoolSharePercent", 150),
        "spec.strategy.diversification.maxPoolSharePercent",
        "less than or equal to 100",
    ),
    Case(
        "horizon-too-short",
        _set("strategy.horizonSeconds", 60),
        "spec.strategy.horizonSeconds",
        "greater than or equal to 3600",
    ),
    Case(
        "savings-over-100",
        _set("rebalance.minSavingsPercent", 101),
        "spec.rebalance.minSavingsPercent",
        "less than or equal to 100",
    ),
    Case(
        "rebalance-action-unknown",
        _set("rebalance.onRebalanceRecommendation", "drain"),
        "spec.rebalance.onRebalanceRecommendation",
        "Unsupported value",
    ),
    Case(
        "credentials-both",
        _set("credentials.secretRef", {"name": "aws"}),
        "spec.credentials",
        "exactly one of secretRef or assumeRoleArn",
    ),
    Case(
        "credentials-none",
        _set("credentials", {}),
        "spec.credentials",
        "exactly one of secretRef or assumeRoleArn",
    ),
    Case("credentials-missing", _drop("credentials"), "spec.credentials", "Required value"),
    Case(
        "external-id-without-role",
        _set("credentials", {"secretRef": {"name": "aws"}, "externalId": "abc-123"}),
        "spec.credentials.externalId",
        "externalId is only valid with assumeRoleArn",
    ),
    Case(
        "secret-in-other-namespace",
        _set("credentials", {"secretRef": {"name": "aws", "namespace": "kube-system"}}),
        "spec.credentials.secretRef.namespace",
        "unknown field",
    ),
    Case(
        "role-arn-malformed",
        _set("credentials.assumeRoleArn", "arn:aws:iam::12:role/x"),
        "spec.credentials.assumeRoleArn",
        "should match",
    ),
    Case(
        "launch-missing", _drop("launch"), "spec.launch", "launch is required unless dryRun is true"
    ),
    Case(
        "launch-template-and-image",
        _set("launch.imageId", "ami-0abcdef1234567890"),
        "spec.launch",
        "exactly one of launchTemplate or imageId",
    ),
    Case(
        "launch-template-no-id-or-name",
        _set("launch.launchTemplate", {"version": "3"}),
        "spec.launch.launchTemplate",
        "exactly one of id or name",
    ),
    Case(
        "security-groups-with-template",
        _set("launch.securityGroupIds", ["sg-0123456789abcdef0"]),
        "spec.launch.securityGroupIds",
        "securityGroupIds is only valid with imageId",
    ),
    Case(
        "user-data-with-template",
        _set("launch.userDataSecretRef", {"name": "boot", "key": "user-data"}),
        "spec.launch.userDataSecretRef",
        "userDataSecretRef is only valid with imageId",
    ),
    Case(
        "tag-reserved-prefix",
        _set("launch.tags", {"aws:cloudformation:stack-name": "x"}),
        "spec.launch.tags",
        "tag keys must be",
    ),
    Case(
        "zone-outside-region",
        _set("availabilityZones", ["us-east-1a", "us-west-2a"]),
        "spec.availabilityZones",
        "every availability zone must be a zone of spec.region",
    ),
    Case(
        "subnet-ids-and-tags",
        _set("subnetSelector.ids", ["subnet-0123456789abcdef0"]),
        "spec.subnetSelector",
        "exactly one of ids or tags",
    ),
    Case(
        "deletion-policy-unknown",
        _set("deletionPolicy", "Retain"),
        "spec.deletionPolicy",
        "Unsupported value",
    ),
    Case("suspend-not-boolean", _set("suspend", "yes"), "spec.suspend", "must be of type boolean"),
    Case("unknown-field", _set("preemptible", True), "spec.preemptible", "unknown field"),
]


def _manifest(case: Case) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["metadata"]["name"] = f"bad-{case.id}"[:63]
    case.mutate(body["spec"])
    return body


def _names_path(text: str, path: str) -> bool:
    # "spec.x.y: ..." or "spec.x.y[1]: ..." or (unknown fields) 'unknown field "spec.x.y"'
    pattern = re.escape(path) + r'(\[\d+\])?(: |")'
    return re.search(pattern, text) is not None


def test_the_table_is_big_and_distinct() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({json.dumps(_manifest(c), sort_keys=True) for c in CASES}) == len(CASES)


def test_the_base_manifest_is_accepted(
    crds_installed: localcluster.LocalCluster, namespace: str
) -> None:
    body = copy.deepcopy(BASE)
    crds_installed.kubectl(
        "create", "-n", namespace, "--dry-run=server", "-f", "-", input=json.dumps(body)
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_naming_the_field(
    crds_installed: localcluster.LocalCluster, namespace: str, case: Case
) -> None:
    body = _manifest(case)
    out = crds_installed.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
    )
    assert out.returncode != 0, f"accepted: {out.stdout}"
    err = out.stderr
    assert _names_path(err, case.path), err
    assert case.fragment in err, err
    got = crds_installed.kubectl("get", "spol", "-n", namespace, "-o", "name")
    assert got.stdout.strip() == ""

    parsed = api.parse_policy(body)
    assert isinstance(parsed, api.InvalidSpec), f"the operator's parser accepted {case.id}"
    assert any(
        e.path == case.path or e.path.startswith((case.path + "[", case.path + "."))
        for e in parsed.errors
    ), parsed.message


def test_region_is_immutable(crds_installed: localcluster.LocalCluster, namespace: str) -> None:
    body = copy.deepcopy(BASE)
    crds_installed.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body))
    out = crds_installed.kubectl(
        "patch",
        "spol",
        "web-tier",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"region": "us-west-2", "availabilityZones": None}}),
        check=False,
    )
    assert out.returncode != 0
    assert "spec.region" in out.stderr
    assert "region is immutable; create a new SpotPolicy instead" in out.stderr
    # other fields stay mutable
    crds_installed.kubectl(
        "patch",
        "spol",
        "web-tier",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"capacity": {"target": 128}}}),
    )
    got = json.loads(
        crds_installed.kubectl("get", "spol", "web-tier", "-n", namespace, "-o", "json").stdout
    )
    assert got["spec"]["region"] == "us-east-1"
    assert got["spec"]["capacity"]["target"] == 128


def test_every_case_is_listed_in_docs_validation_md() -> None:
    text = (REPO / "docs" / "validation.md").read_text()
    for case in CASES:
        assert f"| `{case.id}` | `{case.path}` |" in text, case.id


def test_unknown_fields_are_pruned_without_strict_validation(
    crds_installed: localcluster.LocalCluster, namespace: str
) -> None:
    body = copy.deepcopy(BASE)
    body["spec"]["preemptible"] = True
    body["spec"]["capacity"]["cores"] = 4
    crds_installed.kubectl(
        "create", "-n", namespace, "--validate=false", "-f", "-", input=json.dumps(body)
    )
    stored = json.loads(
        crds_installed.kubectl("get", "spol", "web-tier", "-n", namespace, "-o", "json").stdout
    )
    assert "preemptible" not in stored["spec"]
    assert stored["spec"]["capacity"] == BASE["spec"]["capacity"]
    assert isinstance(api.parse_policy(stored), api.ParsedPolicy)

"""SpotPolicy API models: examples parse, generated files do not drift, errors name fields."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_engine import model
from spotfleet_operator import api
from spotfleet_operator.api import crdgen, docgen, schema

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CRD_FILE = REPO / "crds" / "spotpolicies.spotfleet.dev.yaml"


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def _web() -> dict[str, Any]:
    return copy.deepcopy(_load(REPO / "examples" / "web-tier-vcpu.yaml"))


def test_at_least_five_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert len(EXAMPLES) >= 5
    for expected in (
        "web-tier-vcpu.yaml",
        "cache-memory-gib.yaml",
        "batch-gpu-instances.yaml",
        "arm64-only.yaml",
        "dry-run.yaml",
    ):
        assert expected in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses_and_converts(path: Path) -> None:
    parsed = api.parse_policy(_load(path))
    assert isinstance(parsed, api.ParsedPolicy), getattr(parsed, "message", "")
    policy = api.to_engine_policy(parsed.spec)
    assert policy.problems() == []
    assert policy.region == "us-east-1"


def test_conversion_of_the_web_tier_example() -> None:
    parsed = api.parse_policy(_web())
    assert isinstance(parsed, api.ParsedPolicy)
    assert parsed.name == "web-tier"
    p = api.to_engine_policy(parsed.spec)
    assert p.unit is model.CapacityUnit.VCPU
    assert (p.target, p.min_capacity, p.on_demand_base) == (96.0, 64.0, 16.0)
    assert p.on_demand_percentage_above_base == 10.0
    assert p.zones == ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d")
    assert p.objective == "balanced"
    assert p.max_spot_price_per_unit_hour == pytest.approx(0.03)
    assert p.budget_per_hour is None
    assert (p.min_pools, p.max_pool_share_pct) == (4, 34.0)
    assert (p.rebalance_enabled, p.min_savings_pct, p.max_replacements_per_hour) == (
        True,
        15.0,
        4,
    )
    assert p.horizon_hours == 24.0
    r = p.requirements
    assert (r.vcpu_min, r.vcpu_max) == (2, 16)
    assert (r.memory_per_vcpu_min, r.memory_per_vcpu_max) == (2.0, 4.0)
    assert r.architectures == frozenset({"x86_64"})
    assert r.excluded_families == frozenset({"t2", "m1", "m3", "c1", "c3"})
    assert r.burstable == "exclude"
    assert r.current_generation_only and r.exclude_bare_metal


def test_minimal_spec_takes_model_defaults() -> None:
    parsed = api.parse_spec(
        {
            "region": "eu-west-1",
            "capacity": {"target": 10, "unit": "instances"},
            "credentials": {"secretRef": {"name": "aws"}},
            "dryRun": True,
        }
    )
    assert isinstance(parsed, api.SpotPolicySpec)
    p = api.to_engine_policy(parsed)
    assert p == model.Policy(
        region="eu-west-1",
        target=10.0,
        unit=model.CapacityUnit.INSTANCES,
        min_pools=1,
        max_pool_share_pct=100.0,
        min_savings_pct=10.0,
        max_replacements_per_hour=10,
        horizon_hours=24.0,
    )
    assert parsed.deletion_policy == "Delete"
    assert parsed.suspend is False


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crdgen.render(), "crds/ drifted from the models: run `make crds`"


def test_committed_reference_page_matches_the_models() -> None:
    assert (REPO / "docs" / "api.md").read_text() == docgen.render(), (
        "docs/api.md drifted from the models: run `make crds`"
    )


def test_crdgen_command_prints_the_committed_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spotfleet_operator.api.crdgen"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert out.stdout == CRD_FILE.read_text()
    target = tmp_path / "crd.yaml"
    subprocess.run(
        [sys.executable, "-m", "spotfleet_operator.api.crdgen", "--out", str(target)],
        check=True,
        cwd=REPO,
    )
    assert target.read_text() == CRD_FILE.read_text()


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_every_field_is_described_and_nothing_is_a_float() -> None:
    root = schema.root()
    nodes = _walk(root["properties"]["spec"], "spec") + _walk(
        root["properties"]["status"], "status"
    )
    assert len(nodes) > 80
    for path, node in nodes:
        assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, path
        if not path.endswith(("[]", "{}")):
            assert node.get("description", "").strip(), f"{path} has no description"
    schema_text = CRD_FILE.read_text().split("openAPIV3Schema", 1)[1]
    for forbidden in ("$ref", "anyOf", "allOf", "nullable", "title:", "default:", "type: number"):
        assert forbidden not in schema_text, forbidden


def test_crd_declares_identity_columns_and_status_subresource() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert crd["metadata"]["name"] == "spotpolicies.spotfleet.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["spol"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["Target", "Fulfilled", "Spot%", "$/h", "Savings", "Ready", "Age"]
    status_props = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert "phase" not in status_props


def _error_paths(result: object) -> list[str]:
    assert isinstance(result, api.InvalidSpec), result
    return [e.path for e in result.errors]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda s: s["capacity"].update(min=200), "spec.capacity.min"),
        (lambda s: s["capacity"].update(unit="instances", target=6000), "spec.capacity.target"),
        (lambda s: s["onDemand"].update(base=97), "spec.onDemand.base"),
        (
            lambda s: s["onDemand"].update(percentageAboveBase=101),
            "spec.onDemand.percentageAboveBase",
        ),
        (
            lambda s: s["instanceRequirements"].update(vcpu={"min": 8, "max": 2}),
            "spec.instanceRequirements.vcpu.min",
        ),
        (
            lambda s: s["instanceRequirements"].update(memoryGiB={"min": "64", "max": "8.5"}),
            "spec.instanceRequirements.memoryGiB.min",
        ),
        (
            lambda s: s["instanceRequirements"].update(architectures=["x86_64", "x86_64"]),
            "spec.instanceRequirements.architectures",
        ),
        (
            lambda s: s["instanceRequirements"].update(allowedFamilies=["t2"]),
            "spec.instanceRequirements.excludedFamilies",
        ),
        (
            lambda s: s["strategy"].update(maxSpotPricePerUnitHour="1e3"),
            "spec.strategy.maxSpotPricePerUnitHour",
        ),
        (lambda s: s["strategy"].update(budgetPerHour="0.000"), "spec.strategy.budgetPerHour"),
        (lambda s: s["credentials"].update(secretRef={"name": "x"}), "spec.credentials"),
        (
            lambda s: s["credentials"].update(secretRef={"name": "x", "namespace": "other"}),
            "spec.credentials.secretRef.namespace",
        ),
        (lambda s: s.pop("launch"), "spec.launch"),
        (lambda s: s.update(availabilityZones=["us-west-2a"]), "spec.availabilityZones"),
        (lambda s: s["launch"].update(tags={"aws:cloudformation": "x"}), "spec.launch.tags"),
        (lambda s: s.update(bogus=1), "spec.bogus"),
    ],
)
def test_invalid_specs_name_the_field(mutate: Any, path: str) -> None:
    body = _web()
    mutate(body["spec"])
    result = api.parse_policy(body)
    assert path in _error_paths(result)
    assert isinstance(result, api.InvalidSpec)
    assert result.reason == "InvalidSpec"
    assert f"{path}: " in result.message


def test_invalid_spec_keeps_identity_and_generation() -> None:
    body = _web()
    body["metadata"].update(namespace="team-a", generation=7)
    body["spec"]["capacity"]["target"] = -1
    result = api.parse_policy(body)
    assert isinstance(result, api.InvalidSpec)
    assert (result.name, result.namespace, result.generation) == ("web-tier", "team-a", 7)
    assert result.message.startswith("spec.capacity.target: ")


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "spec",
        42,
        {},
        {"spec": None},
        {"spec": []},
        {"metadata": "x", "spec": {}},
        {"metadata": {"generation": "x"}, "spec": {"region": 5}},
        {"apiVersion": "v1", "kind": "Pod", "spec": {}},
        {"spec": {"capacity": {"target": 10**40, "unit": "vcpu"}}},
        {"spec": {"region": "us-east-1", "capacity": {"target": 1, "unit": "vcpu"}, "x": [[[]]]}},
    ],
)
def test_parse_policy_never_raises(body: object) -> None:
    result = api.parse_policy(body)
    assert isinstance(result, api.InvalidSpec)
    assert result.errors
    assert result.message


def test_wrong_kind_is_reported_even_with_a_good_spec() -> None:
    body = _web()
    body["kind"] = "Pod"
    result = api.parse_policy(body)
    assert isinstance(result, api.InvalidSpec)
    assert _error_paths(result) == ["kind"]


def test_nulls_are_dropped_like_the_api_server_does() -> None:
    body = _web()
    body["spec"]["suspend"] = None
    body["spec"]["capacity"]["min"] = None
    parsed = api.parse_policy(body)
    assert isinstance(parsed, api.ParsedPolicy)
    assert parsed.spec.suspend is False
    assert parsed.spec.capacity.min is None


def test_long_messages_are_truncated() -> None:
    body = _web()
    body["spec"]["instanceRequirements"]["allowedTypes"] = ["Bad!" * 10] * 100
    result = api.parse_policy(body)
    assert isinstance(result, api.InvalidSpec)
    assert len(result.errors) >= 100
    assert len(result.message) <= 2000
    assert result.message.endswith("...")

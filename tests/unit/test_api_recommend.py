"""`spotfleet recommend -f <example> --json`, run as a real command, satisfies the policy.

The plan is checked against the manifest itself (not against the engine's own
Policy/Requirements code): every chosen type meets the instance requirements
by the catalog's facts, zones, on-demand base and percentage, pool share,
minimum pools, spot price cap and budget hold, capacity reaches the target,
and the money adds up with the bundled prices.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod

REPO = Path(__file__).resolve().parents[2]
SPOTFLEET = Path(sys.executable).parent / "spotfleet"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
EPS = 1e-6


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPOTFLEET), "recommend", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def _in_range(value: float, rng: dict[str, Any] | None) -> bool:
    if not rng:
        return True
    lo, hi = rng.get("min"), rng.get("max")
    return (lo is None or value >= float(lo) - EPS) and (hi is None or value <= float(hi) + EPS)


def _type_ok(spec: dict[str, Any], t: catalog_mod.model.InstanceType) -> list[str]:
    req = spec.get("instanceRequirements", {})
    bad = []
    if not _in_range(t.vcpus, req.get("vcpu")):
        bad.append("vcpu")
    if not _in_range(t.memory_gib, req.get("memoryGiB")):
        bad.append("memoryGiB")
    if not _in_range(t.memory_gib / t.vcpus, req.get("memoryGiBPerVcpu")):
        bad.append("memoryGiBPerVcpu")
    if not _in_range(t.gpus, req.get("gpu")):
        bad.append("gpu")
    if "architectures" in req and t.arch not in req["architectures"]:
        bad.append("architectures")
    fams = req.get("allowedFamilies")
    if fams and not any(fnmatch.fnmatchcase(t.family, f) for f in fams):
        bad.append("allowedFamilies")
    if any(fnmatch.fnmatchcase(t.family, f) for f in req.get("excludedFamilies", [])):
        bad.append("excludedFamilies")
    types = req.get("allowedTypes")
    if types and not any(fnmatch.fnmatchcase(t.name, p) for p in types):
        bad.append("allowedTypes")
    if any(fnmatch.fnmatchcase(t.name, p) for p in req.get("excludedTypes", [])):
        bad.append("excludedTypes")
    burst = req.get("burstable", "include")
    if (burst == "exclude" and t.burstable) or (burst == "only" and not t.burstable):
        bad.append("burstable")
    if req.get("currentGenerationOnly") and not t.current_generation:
        bad.append("currentGenerationOnly")
    if req.get("excludeBareMetal") and t.bare_metal:
        bad.append("excludeBareMetal")
    return bad


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_recommend_json_satisfies_the_policy(path: Path) -> None:
    out = _run("-f", str(path), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    spec = yaml.safe_load(path.read_text())["spec"]
    plan = doc["plan"]
    at = datetime.fromisoformat(doc["at"].replace("Z", "+00:00"))
    history = market_mod.load_bundled_history()
    assert at == history.end  # default --at: the latest time in the bundled history
    assert plan["outcome"] in ("Optimal", "Feasible"), plan["bindingConstraint"]

    catalog = catalog_mod.load_bundled("us-east-1")
    unit = spec["capacity"]["unit"]
    target = spec["capacity"]["target"]
    prices = {c["pool"]: Decimal(c["pricePerHour"]) for c in plan["explanation"]["chosen"]}
    assert set(prices) == set(plan["targets"])

    cap = {"spot": 0.0, "on-demand": 0.0}
    per_pool: dict[str, float] = {}
    cost = Decimal(0)
    od_equiv = 0.0
    for key, count in plan["targets"].items():
        type_name, zone, market = key.split("/")
        t = catalog.types[type_name]
        assert _type_ok(spec, t) == [], (key, _type_ok(spec, t))
        if "availabilityZones" in spec:
            assert zone in spec["availabilityZones"]
        assert count > 0
        units = {"vcpu": t.vcpus, "memoryGiB": t.memory_gib, "instances": 1.0}[unit] * count
        cap[market] += units
        per_pool[key] = units
        cost += prices[key] * count
        od_equiv += catalog.on_demand_usd_per_hour[type_name] * count
        if market == "spot":
            market_price = history.price_at(type_name, zone, at)
            assert market_price is not None
            assert float(prices[key]) == pytest.approx(market_price, abs=1e-6)
            limit = spec.get("strategy", {}).get("maxSpotPricePerUnitHour")
            if limit is not None:
                assert float(prices[key]) * count / units <= float(limit) + EPS
        else:
            assert float(prices[key]) == pytest.approx(catalog.on_demand_usd_per_hour[type_name])

    total = cap["spot"] + cap["on-demand"]
    assert total >= target - EPS
    assert plan["capacity"] == pytest.approx(total)
    on_demand = spec.get("onDemand", {})
    base = min(on_demand.get("base", 0), target)
    pct = on_demand.get("percentageAboveBase", 0) / 100
    assert cap["on-demand"] >= base + pct * (total - base) - EPS
    div = spec.get("strategy", {}).get("diversification", {})
    share = div.get("maxPoolSharePercent", 100) / 100
    for key, units in per_pool.items():
        assert units <= share * total + EPS, key
    if total > 0:
        assert len(per_pool) >= div.get("minPools", 1)
    budget = spec.get("strategy", {}).get("budgetPerHour")
    if budget is not None:
        assert cost <= Decimal(budget)

    assert Decimal(plan["costPerHour"]) == pytest.approx(cost, abs=Decimal("0.000001"))
    assert float(plan["onDemandEquivalentPerHour"]) == pytest.approx(od_equiv, abs=1e-6)
    assert plan["savingsPercent"] == pytest.approx(100 * (1 - float(cost) / od_equiv), abs=0.01)
    assert doc["summary"].startswith(plan["outcome"])


def test_recommend_table_output_names_cost_savings_and_pools() -> None:
    out = _run("-f", str(REPO / "examples" / "batch-gpu-instances.yaml"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for words in (
        "gpu-batch",
        "Type",
        "Zone",
        "Market",
        "Cost $",
        "on-demand equivalent $",
        "savings",
    ):
        assert words in text, words
    assert "g4dn" in text or "p3" in text or "g5" in text


def test_recommend_at_an_earlier_time_uses_that_market() -> None:
    early = _run(
        "-f", str(REPO / "examples" / "dry-run.yaml"), "--json", "--at", "2021-03-15T12:00:00Z"
    )
    assert early.returncode == 0, early.stderr
    assert json.loads(early.stdout)["at"] == "2021-03-15T12:00:00Z"


def test_recommend_reports_invalid_manifests_and_times(tmp_path: Path) -> None:
    bad = yaml.safe_load((REPO / "examples" / "dry-run.yaml").read_text())
    bad["spec"]["capacity"]["min"] = 1000
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    out = _run("-f", str(f), "--json")
    assert out.returncode == 2
    assert "spec.capacity.min" in out.stderr
    assert out.stdout == ""
    late = _run("-f", str(REPO / "examples" / "dry-run.yaml"), "--at", "2024-01-01T00:00:00Z")
    assert late.returncode == 2
    assert "outside the bundled history" in late.stderr

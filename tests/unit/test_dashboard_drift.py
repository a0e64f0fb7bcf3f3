"""The chart's Grafana dashboard is the generator's output (``make dashboard``,
spotfleet_cli.dashboard with the pinned grafana-foundation-sdk): the committed JSON does
not drift from it, and the generator keeps every panel, every query's metrics and the
``$namespace``/``$policy`` scope of the per-policy ones (what the hand-written dashboard
had). The e2e tier then runs every query on a real Prometheus (test_helm_install.py)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from spotfleet_cli import dashboard
from spotfleet_operator import metrics
from tests.e2e import dashboard as shipped

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "spotfleet" / "dashboards" / "spotfleet.json"
SDK = "grafana-foundation-sdk"
#: The SDK's build for Grafana 11.6 (the epoch is the build's timestamp).
SDK_VERSION = "1769699379!11.6.0"

#: Every panel in order, rows included: (type, title, unit, the metrics of each target).
PANELS: list[tuple[str, str, str | None, list[set[str]]]] = [
    ("row", "Cost", None, []),
    ("stat", "Cost now", "currencyUSD", [{"spotfleet_cost_usd_per_hour"}]),
    (
        "stat",
        "On-demand equivalent",
        "currencyUSD",
        [{"spotfleet_on_demand_equivalent_usd_per_hour"}],
    ),
    (
        "gauge",
        "Savings ratio (all selected policies)",
        "percentunit",
        [{"spotfleet_cost_usd_per_hour", "spotfleet_on_demand_equivalent_usd_per_hour"}],
    ),
    (
        "stat",
        "Hourly saving",
        "currencyUSD",
        [{"spotfleet_cost_usd_per_hour", "spotfleet_on_demand_equivalent_usd_per_hour"}],
    ),
    (
        "timeseries",
        "Cost per hour vs on-demand equivalent",
        "currencyUSD",
        [{"spotfleet_cost_usd_per_hour"}, {"spotfleet_on_demand_equivalent_usd_per_hour"}],
    ),
    ("timeseries", "Savings ratio by policy", "percentunit", [{"spotfleet_savings_ratio"}]),
    ("row", "Capacity", None, []),
    (
        "timeseries",
        "Capacity desired vs fulfilled by market",
        None,
        [
            {"spotfleet_capacity_desired_units"},
            {"spotfleet_capacity_fulfilled_units"},
            {"spotfleet_capacity_target_units"},
        ],
    ),
    ("timeseries", "Instances per pool", None, [{"spotfleet_instances"}]),
    ("row", "Churn", None, []),
    (
        "timeseries",
        "Launches and terminations",
        "ops",
        [{"spotfleet_launches_total"}, {"spotfleet_terminations_total"}],
    ),
    (
        "timeseries",
        "Interruptions and rebalance recommendations",
        None,
        [{"spotfleet_interruptions_total"}, {"spotfleet_rebalance_recommendations_total"}],
    ),
    ("timeseries", "Reconcile errors by reason", None, [{"spotfleet_reconcile_errors_total"}]),
    ("row", "Operator", None, []),
    (
        "timeseries",
        "Reconcile duration (p50, p99)",
        "s",
        [{"spotfleet_reconcile_duration_seconds_bucket"}] * 2,
    ),
    (
        "timeseries",
        "Decision duration (p50, p99)",
        "s",
        [{"spotfleet_decision_duration_seconds_bucket"}] * 2,
    ),
    (
        "timeseries",
        "Reconciles by outcome",
        "ops",
        [{"spotfleet_reconcile_duration_seconds_count"}],
    ),
    (
        "timeseries",
        "AWS API calls by operation and code",
        "ops",
        [{"spotfleet_aws_api_calls_total"}],
    ),
    (
        "timeseries",
        "Predicted interruption risk of chosen pools (p50, p90)",
        "percentunit",
        [{"spotfleet_risk_predicted_probability_bucket"}] * 2,
    ),
    ("stat", "Unavailable pools", None, [{"spotfleet_unavailable_pools"}]),
    ("stat", "Orphaned instances", None, [{"spotfleet_orphaned_instances"}]),
]
SCOPE = '{namespace=~"$namespace", policy=~"$policy"}'


def generated() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dashboard.render())
    return data


def per_policy_series() -> set[str]:
    """Series names of the operator's metrics labelled by namespace and policy."""
    out: set[str] = set()
    for attr, metric in vars(metrics.Metrics()).items():
        if attr == "registry" or not {"namespace", "policy"} <= set(metric._labelnames):
            continue
        kind, name = metric._type, metric._name
        if kind == "counter":
            out.add(name + "_total")
        elif kind == "histogram":
            out |= {name + s for s in ("_bucket", "_sum", "_count")}
        else:
            out.add(name)
    return out


def test_the_committed_dashboard_is_the_generators_output() -> None:
    assert DASHBOARD.read_bytes() == dashboard.render().encode(), (
        f"{DASHBOARD.relative_to(REPO)} drifted from spotfleet_cli.dashboard: run `make dashboard`"
    )
    text = dashboard.render()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == dashboard.render()  # deterministic


def test_the_command_writes_prints_and_checks(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spotfleet_cli.dashboard", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    printed = run()
    assert printed.returncode == 0 and printed.stdout == DASHBOARD.read_text()
    target = tmp_path / "spotfleet.json"
    assert run("--out", str(target)).returncode == 0
    assert target.read_bytes() == DASHBOARD.read_bytes()
    ok = run("--check", "--out", str(DASHBOARD))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    target.write_text(DASHBOARD.read_text().replace('"Cost now"', '"Cost then"'))
    drift = run("--check", "--out", str(target))
    assert drift.returncode == 1 and drift.stdout == ""
    assert "run `make dashboard`" in drift.stderr
    assert '-      "title": "Cost then",' in drift.stderr
    assert '+      "title": "Cost now",' in drift.stderr
    assert "Cost then" in target.read_text()  # --check never writes
    assert run("--check").returncode == 2  # nothing to compare with


def test_the_panels_and_their_queries_are_the_expected_set() -> None:
    dash = generated()
    assert (dash["uid"], dash["title"], dash["schemaVersion"]) == ("spotfleet", "spotfleet", 41)
    got = []
    for p in dash["panels"]:
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        exprs = [t["expr"] for t in p.get("targets", [])]
        assert all(e.strip() for e in exprs), p["title"]
        assert [t["refId"] for t in p.get("targets", [])] == list("ABC"[: len(exprs)])
        got.append((p["type"], p["title"], unit, [shipped.metric_names(e) for e in exprs]))
    assert got == PANELS
    # every panel is on the 24-column grid, ids 1, 2, ... in order, rows full width
    assert [p["id"] for p in dash["panels"]] == list(range(1, len(PANELS) + 1))
    for p in dash["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] == "row":
            assert (pos["w"], pos["h"], p["collapsed"], p["panels"]) == (24, 1, False, [])
    # rows are not nested: tests/e2e/test_dashboard.py reads the top-level panels
    assert sum(p["type"] != "row" for p in dash["panels"]) == 18


def test_per_policy_queries_use_the_namespace_and_policy_variables() -> None:
    scoped = per_policy_series()
    assert "spotfleet_cost_usd_per_hour" in scoped and "spotfleet_aws_api_calls_total" not in scoped
    n = 0
    for q in shipped.queries(generated()):
        if q.where.startswith("variable "):
            continue
        for name in shipped.metric_names(q.expr) & scoped:
            uses = re.findall(rf"\b{name}\b(\{{[^}}]*\}})?", q.expr)
            assert uses and all(m == SCOPE for m in uses), f"{q.where}: {q.expr}"
            n += len(uses)
        if not shipped.metric_names(q.expr) & scoped:
            assert "$namespace" not in q.expr and "$policy" not in q.expr, q.where
    assert n == 18  # the per-policy selectors of the hand-written dashboard


def test_the_variables_are_datasource_namespace_and_policy() -> None:
    variables = generated()["templating"]["list"]
    assert [(v["name"], v["type"]) for v in variables] == [
        ("datasource", "datasource"),
        ("namespace", "query"),
        ("policy", "query"),
    ]
    assert variables[0]["query"] == "prometheus"
    assert variables[1]["query"]["query"] == (
        "label_values(spotfleet_capacity_target_units, namespace)"
    )
    assert variables[2]["query"]["query"] == (
        'label_values(spotfleet_capacity_target_units{namespace=~"$namespace"}, policy)'
    )
    for v in variables[1:]:
        assert (v["includeAll"], v["allValue"], v["multi"]) == (True, ".*", True)
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_the_sdk_is_the_pinned_build_for_grafana_11_6() -> None:
    assert importlib.metadata.version(SDK) == SDK_VERSION
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"{SDK}=={SDK_VERSION}" in dev["dev"]
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    assert [p["version"] for p in lock["package"] if p["name"] == SDK] == [SDK_VERSION]

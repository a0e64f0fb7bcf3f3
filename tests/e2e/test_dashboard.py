"""The shipped Grafana dashboard and docs/metrics.md against the metrics the operator
really registers (``spotfleet_operator.metrics.Metrics``). Pure: no cluster needed;
the e2e tier (test_helm_install.py) then runs every query on a real Prometheus."""

from __future__ import annotations

import re

import pytest

from spotfleet_operator import metrics
from tests.e2e import dashboard

EXPOSITION = metrics.Metrics().exposition().decode()
DASH = dashboard.load()
QUERIES = dashboard.queries(DASH)


def test_the_dashboard_has_the_panels_the_issue_asks_for() -> None:
    titles = " | ".join(
        str(p.get("title", "")).lower() for p in DASH["panels"] if p.get("type") != "row"
    )
    for words in (
        "cost per hour vs on-demand",
        "savings ratio",
        "desired vs fulfilled by market",
        "instances per pool",
        "interruptions",
        "launches and terminations",
        "reconcile duration (p50, p99)",
        "decision duration (p50, p99)",
        "aws api calls by operation and code",
        "unavailable pools",
        "orphaned instances",
    ):
        assert words in titles, f"no panel titled like {words!r}"
    assert len(QUERIES) >= 20


@pytest.mark.parametrize("query", QUERIES, ids=[q.where for q in QUERIES])
def test_every_query_uses_only_metrics_the_operator_exposes(query: dashboard.Query) -> None:
    names = dashboard.metric_names(query.expr)
    assert names, f"no metric in {query.expr!r}"
    unknown = names - dashboard.exposed_series_names(EXPOSITION)
    assert not unknown, f"{query.where}: {sorted(unknown)} not in the operator's exposition"


def test_the_name_check_catches_unknown_metrics_and_functions() -> None:
    exposed = dashboard.exposed_series_names(EXPOSITION)
    bad = 'sum by (namespace) (rate(spotfleet_cost_dollars_total{policy=~"$policy"}[5m]))'
    assert dashboard.metric_names(bad) - exposed == {"spotfleet_cost_dollars_total"}
    assert dashboard.metric_names("made_up_fn(spotfleet_savings_ratio)") - exposed == {"made_up_fn"}
    ok = (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(spotfleet_decision_duration_seconds_bucket{a="b{c}"}[1m])))'
    )
    assert dashboard.metric_names(ok) == {"spotfleet_decision_duration_seconds_bucket"}


def test_variables_substitute_to_their_all_value() -> None:
    values = dashboard.all_values(DASH)
    assert set(values) == {"namespace", "policy"}
    for q in QUERIES:
        sent = dashboard.substitute(q.expr, values, "1m")
        assert "$" not in sent, f"{q.where}: unsubstituted variable in {sent!r}"


def test_docs_metrics_md_documents_every_metric_and_its_labels() -> None:
    text = (dashboard.REPO / "docs" / "metrics.md").read_text()
    families = dashboard.metric_families(EXPOSITION)
    assert len(families) >= 18
    m = metrics.Metrics()
    for attr, metric in vars(m).items():
        if attr == "registry":
            continue
        name = metric._name + ("_total" if metric._type == "counter" else "")
        assert name in families
        assert f"`{name}`" in text, f"docs/metrics.md does not document {name}"
        row = next(line for line in text.splitlines() if f"`{name}`" in line)
        for label in metric._labelnames:
            assert re.search(rf"`{label}`", row), f"{name}: label {label} missing in its row"
    for p in DASH["panels"]:
        if p.get("type") != "row":
            assert p["title"] in text, f"docs/metrics.md does not list panel {p['title']!r}"

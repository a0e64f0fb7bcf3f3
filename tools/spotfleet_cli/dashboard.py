"""The Grafana dashboard the chart ships, built with grafana-foundation-sdk.

``python -m spotfleet_cli.dashboard [--out PATH] [--check]`` renders the dashboard
(uid ``spotfleet``) as JSON: to stdout, or written to ``--out``; with ``--check`` it
writes nothing and exits 1, printing a diff, when ``--out`` differs from it.
``charts/spotfleet/dashboards/spotfleet.json`` is this output (``make dashboard``);
tests/unit/test_dashboard_drift.py fails when the committed file differs.

The SDK is the build for Grafana 11.6 that uv.lock pins (a dev dependency): only this
module imports it, never the operator or the engine (an import-linter contract).
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import sys
from pathlib import Path
from typing import TypeAlias, TypeVar

from grafana_foundation_sdk.builders import common, dashboard, gauge, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import units

UID = "spotfleet"
TITLE = "spotfleet"
#: The matchers of every per-policy query: the namespace and policy variables.
SCOPE = 'namespace=~"$namespace", policy=~"$policy"'
#: The metric the namespace and policy variables take their values from.
VARIABLE_SOURCE = "spotfleet_capacity_target_units"
RATE = "[$__rate_interval]"

Panel: TypeAlias = stat.Panel | gauge.Panel | timeseries.Panel
P = TypeVar("P", stat.Panel, gauge.Panel, timeseries.Panel)


def scoped(metric: str) -> str:
    """``metric`` restricted to the selected namespaces and policies."""
    return f"{metric}{{{SCOPE}}}"


def quantile(q: str, metric: str, by: str = "le") -> str:
    """The ``q`` quantile of the histogram ``metric`` (its ``_bucket`` series) over the
    rate interval, summed ``by`` the given labels (``le`` among them)."""
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}{RATE})))"


def _datasource() -> models.DataSourceRef:
    """The Prometheus chosen in the ``datasource`` variable (a new object per use)."""
    return models.DataSourceRef(type_val="prometheus", uid="${datasource}")


def _panel(
    panel: P,
    title: str,
    description: str,
    size: tuple[int, int],
    targets: list[tuple[str, str]],
) -> P:
    """``panel`` with its title, description, ``size`` (width, height in grid units) and
    one range query per ``(expr, legend)`` of ``targets``, refIds A, B, ..."""
    width, height = size
    panel = (
        panel.title(title)
        .description(description)
        .datasource(_datasource())
        .span(width)
        .height(height)
    )
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + i))
            .datasource(_datasource())
            .expr(expr)
            .legend_format(legend)
            .range()
        )
    return panel


def _variables() -> list[dashboard.DatasourceVariable | dashboard.QueryVariable]:
    """``datasource`` (any Prometheus), then ``namespace`` and ``policy``: multi-select,
    "All" sent as ``.*``, values from the policies' capacity target series."""

    def query(name: str, label: str, ref: str, values_of: str) -> dashboard.QueryVariable:
        expr = f"label_values({values_of}, {name})"
        return (
            dashboard.QueryVariable(name)
            .label(label)
            .datasource(_datasource())
            .query({"query": expr, "refId": ref})
            .include_all(True)
            .all_value(".*")
            .multi(True)
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )

    return [
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .hide(models.VariableHide.DONT_HIDE),
        query("namespace", "Namespace", "ns", VARIABLE_SOURCE),
        query("policy", "Policy", "policy", f'{VARIABLE_SOURCE}{{namespace=~"$namespace"}}'),
    ]


def _cost() -> list[Panel]:
    """The Cost row: totals (stat, gauge), then cost and savings per policy."""
    cost = scoped("spotfleet_cost_usd_per_hour")
    on_demand = scoped("spotfleet_on_demand_equivalent_usd_per_hour")
    by_policy = "sum by (namespace, policy)"
    return [
        _panel(
            stat.Panel().unit(units.Dollars),
            "Cost now",
            "What the running fleets cost (spotfleet_cost_usd_per_hour).",
            (6, 5),
            [(f"sum({cost})", "USD/h")],
        ),
        _panel(
            stat.Panel().unit(units.Dollars),
            "On-demand equivalent",
            "What the same instances would cost on-demand.",
            (6, 5),
            [(f"sum({on_demand})", "USD/h")],
        ),
        _panel(
            gauge.Panel().unit(units.PercentUnit).min(0).max(1),
            "Savings ratio (all selected policies)",
            "1 - total cost / total on-demand equivalent.",
            (6, 5),
            [(f"1 - sum({cost}) / sum({on_demand})", "savings")],
        ),
        _panel(
            stat.Panel().unit(units.Dollars),
            "Hourly saving",
            "On-demand equivalent minus cost, USD/h.",
            (6, 5),
            [(f"sum({on_demand}) - sum({cost})", "USD/h")],
        ),
        _panel(
            timeseries.Panel().unit(units.Dollars),
            "Cost per hour vs on-demand equivalent",
            "Per policy: what the fleet costs and what the same instances would cost on-demand.",
            (12, 8),
            [
                (f"{by_policy} ({cost})", "{{namespace}}/{{policy}} cost"),
                (f"{by_policy} ({on_demand})", "{{namespace}}/{{policy}} on-demand equivalent"),
            ],
        ),
        _panel(
            timeseries.Panel().unit(units.PercentUnit),
            "Savings ratio by policy",
            "spotfleet_savings_ratio: 1 - cost / on-demand equivalent.",
            (12, 8),
            [(scoped("spotfleet_savings_ratio"), "{{namespace}}/{{policy}}")],
        ),
    ]


def _capacity() -> list[Panel]:
    """The Capacity row: planned, running and target capacity; instances per pool."""
    by_market = "sum by (namespace, policy, market)"
    return [
        _panel(
            timeseries.Panel(),
            "Capacity desired vs fulfilled by market",
            "Units in each policy's capacity unit (vCPU, GiB or instances): "
            "what the plan holds and what runs.",
            (12, 8),
            [
                (
                    f"{by_market} ({scoped('spotfleet_capacity_desired_units')})",
                    "{{namespace}}/{{policy}} desired {{market}}",
                ),
                (
                    f"{by_market} ({scoped('spotfleet_capacity_fulfilled_units')})",
                    "{{namespace}}/{{policy}} fulfilled {{market}}",
                ),
                (
                    f"sum by (namespace, policy) ({scoped(VARIABLE_SOURCE)})",
                    "{{namespace}}/{{policy}} target",
                ),
            ],
        ),
        _panel(
            timeseries.Panel().stacking(
                common.StackingConfig().mode(common_models.StackingMode.NORMAL)
            ),
            "Instances per pool",
            "Running instances by instance type, zone and market.",
            (12, 8),
            [
                (
                    f"sum by (instance_type, zone, market) ({scoped('spotfleet_instances')})",
                    "{{instance_type}} {{zone}} {{market}}",
                )
            ],
        ),
    ]


def _churn() -> list[Panel]:
    """The Churn row: launches, terminations, interruptions, reconcile errors."""

    def over_interval(fn: str, by: str, metric: str) -> str:
        return f"sum by ({by}) ({fn}({scoped(metric)}{RATE}))"

    return [
        _panel(
            timeseries.Panel().unit(units.OpsPerSecond),
            "Launches and terminations",
            "Instances launched per second by market, terminated per second by reason.",
            (8, 8),
            [
                (
                    over_interval("rate", "market", "spotfleet_launches_total"),
                    "launched {{market}}",
                ),
                (
                    over_interval("rate", "reason", "spotfleet_terminations_total"),
                    "terminated ({{reason}})",
                ),
            ],
        ),
        _panel(
            timeseries.Panel(),
            "Interruptions and rebalance recommendations",
            "Spot interruption warnings and rebalance recommendations received for owned "
            "instances.",
            (8, 8),
            [
                (
                    over_interval("increase", "namespace, policy", "spotfleet_interruptions_total"),
                    "{{namespace}}/{{policy}} interruptions",
                ),
                (
                    over_interval(
                        "increase", "namespace, policy", "spotfleet_rebalance_recommendations_total"
                    ),
                    "{{namespace}}/{{policy}} rebalance recommendations",
                ),
            ],
        ),
        _panel(
            timeseries.Panel(),
            "Reconcile errors by reason",
            "Reconciles that ended in an error (bad spec, credentials, AWS errors, throttling).",
            (8, 8),
            [
                (
                    over_interval(
                        "increase", "namespace, policy, reason", "spotfleet_reconcile_errors_total"
                    ),
                    "{{namespace}}/{{policy}} {{reason}}",
                )
            ],
        ),
    ]


def _operator() -> list[Panel]:
    """The Operator row: reconcile and decision latency, AWS calls, risk, pool health."""
    reconcile = "spotfleet_reconcile_duration_seconds_bucket"
    decision = "spotfleet_decision_duration_seconds_bucket"
    risk = "spotfleet_risk_predicted_probability_bucket"
    return [
        _panel(
            timeseries.Panel().unit(units.Seconds),
            "Reconcile duration (p50, p99)",
            "Wall time of one reconcile (observe, decide, act, report), all policies.",
            (8, 8),
            [(quantile("0.5", reconcile), "p50"), (quantile("0.99", reconcile), "p99")],
        ),
        _panel(
            timeseries.Panel().unit(units.Seconds),
            "Decision duration (p50, p99)",
            "Wall time of one planner.decide call (MILP included).",
            (8, 8),
            [(quantile("0.5", decision), "p50"), (quantile("0.99", decision), "p99")],
        ),
        _panel(
            timeseries.Panel().unit(units.OpsPerSecond),
            "Reconciles by outcome",
            "Reconciles per second by outcome.",
            (8, 8),
            [
                (
                    f"sum by (outcome) (rate(spotfleet_reconcile_duration_seconds_count{RATE}))",
                    "{{outcome}}",
                )
            ],
        ),
        _panel(
            timeseries.Panel().unit(units.OpsPerSecond),
            "AWS API calls by operation and code",
            "Calls per second; code is empty for success, else the AWS error code.",
            (12, 8),
            [
                (
                    f"sum by (operation, code) (rate(spotfleet_aws_api_calls_total{RATE}))",
                    "{{operation}} {{code}}",
                )
            ],
        ),
        _panel(
            timeseries.Panel().unit(units.PercentUnit),
            "Predicted interruption risk of chosen pools (p50, p90)",
            "Probabilities the risk model gave the pools the plans chose.",
            (12, 8),
            [
                (quantile("0.5", risk, "le, model"), "p50 {{model}}"),
                (quantile("0.9", risk, "le, model"), "p90 {{model}}"),
            ],
        ),
        _panel(
            stat.Panel(),
            "Unavailable pools",
            "Pools marked out of capacity after InsufficientInstanceCapacity.",
            (12, 5),
            [("spotfleet_unavailable_pools", "pools")],
        ),
        _panel(
            stat.Panel(),
            "Orphaned instances",
            "Instances tagged by a SpotPolicy that no longer exists.",
            (12, 5),
            [("spotfleet_orphaned_instances", "instances")],
        ),
    ]


def build() -> models.Dashboard:
    """The dashboard model: four expanded rows (Cost, Capacity, Churn, Operator), each
    followed by its panels at the top level, laid out by the SDK; panel ids 1, 2, ... in
    order."""
    board = (
        dashboard.Dashboard(TITLE)
        .uid(UID)
        .description(
            "Cost, savings, capacity and churn of SpotPolicy fleets, and the operator's own health."
        )
        .tags(["spotfleet", "aws", "spot"])
        .timezone("browser")
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time("now-6h", "now")
    )
    for variable in _variables():
        board = board.with_variable(variable)
    ids = itertools.count(1)
    for row, panels in (
        ("Cost", _cost()),
        ("Capacity", _capacity()),
        ("Churn", _churn()),
        ("Operator", _operator()),
    ):
        board = board.with_row(dashboard.Row(row).id(next(ids)).collapsed(False))
        for panel in panels:
            board = board.with_panel(panel.id(next(ids)))
    return board.build()


def render() -> str:
    """The dashboard as JSON text, exactly as committed: keys sorted, indent 2, ASCII,
    one trailing newline."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard to ``--out`` (or stdout); with ``--check``, exit 1 with a diff
    on stderr when ``--out`` is not what :func:`render` gives, 0 when it is."""
    parser = argparse.ArgumentParser(prog="python -m spotfleet_cli.dashboard")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--check", action="store_true", help="compare with --out instead of writing it"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if args.out is None:
            parser.error("--check needs --out")
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=str(args.out),
            tofile="generated",
        )
        sys.stderr.write(f"{args.out} differs from the generator (run `make dashboard`):\n")
        sys.stderr.writelines(diff)
        return 1
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

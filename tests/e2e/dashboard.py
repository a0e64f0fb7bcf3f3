"""The shipped Grafana dashboard as data: its PromQL expressions, the template variables
they use, and the metric names they reference, checked against the operator's own
exposition (what ``metrics.Metrics`` registers), never against a hand-written list."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "spotfleet" / "dashboards" / "spotfleet.json"

#: PromQL functions, aggregations and keywords the dashboard may use (anything else
#: that is not a metric of the operator is an error).
PROMQL_WORDS = frozenset(
    {
        "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev",
        "rate", "irate", "increase", "delta", "deriv", "histogram_quantile",
        "clamp_min", "clamp_max", "abs", "vector", "scalar", "time", "sort", "sort_desc",
        "and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
        "group_left", "group_right", "label_values",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard and where it comes from."""

    where: str  # panel title / refId, or "variable <name>"
    expr: str


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels") or []))
    return out


def queries(dash: dict[str, Any]) -> list[Query]:
    """Every panel target's ``expr`` and every query variable's query."""
    out = [
        Query(f"{p.get('title')} / {t.get('refId')}", str(t["expr"]))
        for p in _panels(dash.get("panels") or [])
        for t in p.get("targets") or []
        if "expr" in t
    ]
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v["query"]
            out.append(Query(f"variable {v['name']}", str(q)))
    return out


def all_values(dash: dict[str, Any]) -> dict[str, str]:
    """What Grafana substitutes for each query variable when "All" is selected."""
    return {
        v["name"]: v["allValue"]
        for v in (dash.get("templating") or {}).get("list") or []
        if v.get("type") == "query" and v.get("includeAll")
    }


def substitute(expr: str, variables: dict[str, str], rate_interval: str) -> str:
    """The expression as Grafana would send it: variables replaced by their "All"
    value, ``$__rate_interval`` by ``rate_interval``."""
    expr = expr.replace("$__rate_interval", rate_interval)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![0-9.])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")


def identifiers(expr: str) -> list[str]:
    """Bare identifiers of a PromQL expression: metric names, functions, keywords
    (label names inside matchers and grouping clauses, strings and ranges removed)."""
    m = _LABEL_VALUES.match(expr)
    if m:
        expr = "label_values(" + m.group(1) + ")"
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return _IDENT.findall(text)


def metric_names(expr: str) -> set[str]:
    """Identifiers that are not PromQL words: the metric (series) names used."""
    return {i for i in identifiers(expr) if i not in PROMQL_WORDS}


def exposed_series_names(exposition: str) -> set[str]:
    """Series names a scrape of ``exposition`` can produce, from its ``# TYPE`` lines:
    gauges as is, counters with _total/_created, histograms with _bucket/_sum/_count/_created."""
    names: set[str] = set()
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[:2] != ["#", "TYPE"]:
            continue
        name, kind = parts[2], parts[3]
        if kind == "counter":
            base = name.removesuffix("_total")
            names |= {base + "_total", base + "_created"}
        elif kind == "histogram":
            names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(name)
    return names


def metric_families(exposition: str) -> dict[str, str]:
    """Family name (as registered, counters with _total) -> type, from ``# TYPE`` lines."""
    out: dict[str, str] = {}
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            name = parts[2]
            out[name if parts[3] != "counter" or name.endswith("_total") else name + "_total"] = (
                parts[3]
            )
    return out

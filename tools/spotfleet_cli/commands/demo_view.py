"""What the demo shows: the live table of its SpotPolicies, the summary it prints and
writes with ``--json``."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table


def policy_table(items: list[dict[str, Any]]) -> Table:
    """The live table of the demo's SpotPolicies (what ``kubectl get spol`` shows, and more)."""
    t = Table(title="SpotPolicies (kubectl get spol -n demo)", expand=False)
    for col in (
        "policy",
        "Ready",
        "target",
        "fulfilled",
        "spot %",
        "$/h",
        "on-demand $/h",
        "savings",
        "last decision",
    ):
        t.add_column(col)
    for p in items:
        st = p.get("status") or {}
        ready: dict[str, Any] = next(
            (c for c in st.get("conditions") or [] if c["type"] == "Ready"), {}
        )
        cap = st.get("capacity") or {}
        cost = st.get("cost") or {}
        t.add_row(
            p["metadata"]["name"],
            f"{ready.get('status', '?')} ({ready.get('reason', '')})",
            f"{p['spec']['capacity']['target']} {p['spec']['capacity']['unit']}",
            str((cap.get("fulfilled") or {}).get("total", "-")),
            str(cap.get("spotPercent", "-")),
            str(cost.get("perHour", "-")),
            str(cost.get("onDemandEquivalentPerHour", "-")),
            f"{cost.get('savingsPercent', '-')}%",
            ((st.get("lastDecision") or {}).get("summary") or "")[:70],
        )
    return t


def summarize(demo: Any) -> dict[str, Any]:
    """The demo's summary: policies, actions, Events and steps (``--json``)."""
    out: dict[str, Any] = {
        "policies": [],
        "avoidedPools": demo.avoided,
        "routedAround": demo.routed,
        "interrupted": demo.interrupted,
    }
    for p in demo.get_policies():
        st = p.get("status") or {}
        out["policies"].append(
            {
                "name": p["metadata"]["name"],
                "ready": any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in st.get("conditions") or []
                ),
                "target": p["spec"]["capacity"]["target"],
                "unit": p["spec"]["capacity"]["unit"],
                "fulfilled": (st.get("capacity") or {}).get("fulfilled", {}),
                "spotPercent": (st.get("capacity") or {}).get("spotPercent"),
                "costPerHour": (st.get("cost") or {}).get("perHour"),
                "onDemandEquivalentPerHour": (st.get("cost") or {}).get(
                    "onDemandEquivalentPerHour"
                ),
                "savingsPercent": (st.get("cost") or {}).get("savingsPercent"),
                "instances": sum(a["count"] for a in st.get("allocation") or []),
                "allocation": st.get("allocation") or [],
            }
        )
    assert demo.sim is not None
    calls = demo.sim.calls()
    out["actions"] = {
        "createFleetCalls": sum(1 for c in calls if c.operation == "CreateFleet"),
        "instancesLaunched": launched_count(demo.events()),
        "terminateCalls": sum(1 for c in calls if c.operation == "TerminateInstances"),
    }
    reasons: dict[str, int] = {}
    for e in demo.events():
        reasons[e["reason"]] = reasons.get(e["reason"], 0) + int(e.get("count") or 1)
    out["events"] = reasons
    out["steps"] = [{"t": t, "step": s} for s, t in demo.steps]
    return out


def launched_count(events: list[dict[str, Any]]) -> int:
    """Instances launched, from the operator's ``Launched`` Events
    ("launched N x pool, M x pool")."""
    n = 0
    for e in events:
        if e["reason"] == "Launched":
            n += sum(int(m) for m in re.findall(r"(\d+) x ", e["message"]))
    return n


def print_summary(console: Console, s: dict[str, Any]) -> None:
    """The summary as a table and one line of actions."""
    t = Table(title="spotfleet demo: summary")
    for col in (
        "policy",
        "Ready",
        "target",
        "fulfilled",
        "instances",
        "spot %",
        "$/h",
        "on-demand $/h",
        "savings",
    ):
        t.add_column(col)
    for p in s["policies"]:
        t.add_row(
            p["name"],
            str(p["ready"]),
            f"{p['target']} {p['unit']}",
            str(p["fulfilled"].get("total")),
            str(p["instances"]),
            str(p["spotPercent"]),
            str(p["costPerHour"]),
            str(p["onDemandEquivalentPerHour"]),
            f"{p['savingsPercent']}%",
        )
    console.print(t)
    a = s["actions"]
    avoided = ", ".join(s["avoidedPools"]) or "none"
    console.print(
        f"actions: {a['instancesLaunched']} instances launched in "
        f"{a['createFleetCalls']} CreateFleet calls, {a['terminateCalls']} "
        f"TerminateInstances calls; pools avoided: {avoided}; "
        f"interruptions handled: {len(s['interrupted'])}"
    )

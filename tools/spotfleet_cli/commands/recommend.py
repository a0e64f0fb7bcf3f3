"""``spotfleet recommend``: what the engine would run for a SpotPolicy, on bundled market data.

Reads a manifest, parses it through the same API models as the operator,
converts it with :func:`api.to_engine_policy`, and runs the same
``planner.decide`` on the bundled us-east-1 catalog and 2021 spot history (an
empty fleet, so the plan is what a new policy would launch). Never touches AWS
or Kubernetes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from spotfleet_cli import consoles, inputs
from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model, planner
from spotfleet_engine import plan as plan_mod
from spotfleet_operator import api

#: A manifest that cannot be read or parsed, or a time outside the data; message for users.
RecommendError = inputs.InputError


@dataclass(frozen=True)
class Recommendation:
    """One policy's plan at one moment, with what it was computed from."""

    name: str
    namespace: str
    at: datetime
    risk_model: str
    policy: model.Policy
    plan: plan_mod.Plan

    def to_json(self) -> dict[str, Any]:
        """Machine-readable: the policy as the engine saw it and the plan (money as strings)."""
        p = self.policy
        return {
            "policy": {
                "name": self.name,
                "namespace": self.namespace or None,
                "region": p.region,
                "unit": p.unit.value,
                "target": p.target,
                "minCapacity": p.min_capacity,
                "onDemandBase": p.on_demand_base,
                "onDemandPercentageAboveBase": p.on_demand_percentage_above_base,
                "zones": list(p.zones),
                "objective": p.objective,
                "maxSpotPricePerUnitHour": p.max_spot_price_per_unit_hour,
                "budgetPerHour": p.budget_per_hour,
                "minPools": p.min_pools,
                "maxPoolSharePercent": p.max_pool_share_pct,
            },
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "riskModel": self.risk_model,
            "summary": self.plan.summary(),
            "plan": self.plan.to_dict(),
        }


def parse_at(text: str | None, history: market_mod.PriceHistory) -> datetime:
    """``--at`` as an aware UTC time inside the bundled history; default: its last observation."""
    if text is None:
        return history.end
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RecommendError(f"--at {text!r} is not an ISO 8601 time") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if not history.start <= at <= history.end:
        raise RecommendError(
            f"--at {text} is outside the bundled history "
            f"({history.start.isoformat()} .. {history.end.isoformat()})"
        )
    return at


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr meanwhile: the HiGHS solver library prints
    diagnostics to the process's stdout from native code, which would corrupt ``--json``."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def recommend(parsed: api.ParsedPolicy, at: str | None, risk_model: str) -> Recommendation:
    """Run the engine's ``decide`` for ``parsed`` on the bundled market at ``at``."""
    policy = api.to_engine_policy(parsed.spec)
    history = market_mod.load_bundled_history()
    if policy.region != history.region:
        raise RecommendError(
            f"the bundled market data covers {history.region} only, not {policy.region}"
        )
    now = parse_at(at, history)
    catalog = catalog_mod.load_bundled(policy.region)
    snapshot = market_mod.snapshot_at(history, now)
    risk = inputs.load_risk(risk_model, policy.horizon_hours)
    with _stdout_to_stderr():
        plan = planner.decide(policy, catalog, snapshot, model.Fleet(), risk, now)
    return Recommendation(
        name=parsed.name,
        namespace=parsed.namespace,
        at=now,
        risk_model=risk_model,
        policy=policy,
        plan=plan,
    )


def render(rec: Recommendation, console: Console) -> None:
    """The mix as a table, then cost, on-demand equivalent, savings and the explanation."""
    plan = rec.plan
    unit = plan.unit.value
    console.print(
        f"[bold]{rec.name or 'SpotPolicy'}[/bold]: target {plan.target:g} {unit} in "
        f"{rec.policy.region} at {rec.at.isoformat()} (risk model: {rec.risk_model})"
    )
    table = Table(box=box.SIMPLE_HEAVY)
    for col, justify in (
        ("Type", "left"),
        ("Zone", "left"),
        ("Market", "left"),
        ("Count", "right"),
        (unit, "right"),
        ("$/h each", "right"),
        ("Risk", "right"),
        ("Share %", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in plan.explanation.chosen:
        table.add_row(
            c.pool.instance_type,
            c.pool.zone,
            c.pool.market.value,
            str(c.count),
            f"{c.units:g}",
            plan_mod.money(c.price),
            f"{c.risk:.4f}",
            f"{c.share_pct:.1f}",
        )
    console.print(table)
    console.print(
        f"Outcome [bold]{plan.outcome}[/bold]: {plan.capacity:g}/{plan.target:g} {unit} "
        f"(spot {plan.spot_share_pct:.0f}%)"
    )
    console.print(
        f"Cost ${plan_mod.money(plan.cost_per_hour)}/h; on-demand equivalent "
        f"${plan_mod.money(plan.on_demand_equivalent_per_hour)}/h; "
        f"savings {plan.savings_pct:.1f}%"
    )
    if plan.binding_constraint:
        console.print(f"Binding constraint: {plan.binding_constraint}")
    for note in plan.explanation.notes:
        console.print(f"- {note}")
    if plan.explanation.rejected:
        console.print("Best alternatives left out:")
        for r in plan.explanation.rejected:
            console.print(
                f"- {r.pool.key()} at ${plan_mod.money(r.price)}/h (risk {r.risk:.4f}): {r.reason}"
            )


def command(path: Path, as_json: bool, at: str | None, risk_model: str) -> int:
    """The CLI body: 0 on success (any outcome, Infeasible included), 2 on a usage error."""
    console = consoles.console()
    try:
        rec = recommend(inputs.load_policy_manifest(path), at, risk_model)
    except RecommendError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if as_json:
        print(json.dumps(rec.to_json(), indent=2))
    else:
        render(rec, console)
    return 0

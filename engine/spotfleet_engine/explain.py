"""Why a plan is what it is: the binding constraint (a typed :class:`Binding` and
the human text) and the pools chosen and left out.

:func:`diagnose` names what makes a policy infeasible by solving relaxations of
the fresh plan's MILP (each a :class:`~spotfleet_engine.milp.MilpSpec` with a
constraint removed), in this order: nothing matches; nothing eligible; the
budget; too few pools for ``minPools``; the share cap or the pool count; no
on-demand pool for the on-demand part; no spot pool for the spot part; pools
out of capacity; the on-demand split with the eligible sizes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from spotfleet_engine import candidates as cand_mod
from spotfleet_engine import milp, model
from spotfleet_engine import plan as plan_mod

I64 = npt.NDArray[np.int64]


class Binding(enum.StrEnum):
    """What kind of constraint binds a ``Degraded`` or ``Infeasible`` plan
    (``Plan.binding``; ``Plan.binding_constraint`` is the text with figures)."""

    #: pools out of capacity: what is eligible cannot hold the target
    CAPACITY = "Capacity"
    #: budgetPerHour is below the cheapest valid plan
    BUDGET = "Budget"
    #: instance requirements, zones and catalog match no pool
    NO_ELIGIBLE_POOLS = "NoEligiblePools"
    #: maxSpotPricePerUnitHour excludes the spot pools needed
    MAX_PRICE = "MaxPrice"
    #: minPools or maxPoolSharePercent cannot be met with the eligible pools
    DIVERSIFICATION = "Diversification"
    #: the on-demand base / percentage cannot be met
    ON_DEMAND = "OnDemand"
    #: maxReplacementsPerHour: the running fleet cannot reach a valid plan this hour
    CHURN = "Churn"
    #: Policy.problems() is not empty
    INVALID_POLICY = "InvalidPolicy"


def invalid_policy(problems: list[str]) -> tuple[Binding, str]:
    """The binding of a policy that fails :meth:`~spotfleet_engine.model.Policy.problems`."""
    return Binding.INVALID_POLICY, "policy invalid: " + "; ".join(problems)


def churn(policy: model.Policy, replacements_left: int) -> tuple[Binding, str]:
    """The binding when neither keeping the fleet nor a move within the churn budget is valid."""
    return Binding.CHURN, (
        "maxReplacementsPerHour: the running fleet cannot meet the policy without "
        f"replacing more than the {replacements_left} replacements left this hour"
        + ("" if policy.rebalance_enabled else " (rebalance disabled)")
    )


def _excluded_kind(c: cand_mod.Candidates, idx: I64) -> Binding:
    """Why the candidate pools ``idx`` are all ineligible: out of capacity when that is
    every reason, else the max price (the only other reason a pool is excluded)."""
    reasons = {c.why_out[int(i)] for i in idx}
    return Binding.CAPACITY if reasons == {cand_mod.UNAVAILABLE} else Binding.MAX_PRICE


def diagnose(
    policy: model.Policy,
    c: cand_mod.Candidates,
    elig: I64,
    over_eligible: milp.MilpSpec,
    over_pruned: milp.MilpSpec,
    split: cand_mod.OnDemandSplit,
) -> tuple[Binding, str]:
    """The constraint that makes the policy infeasible, as (kind, text with figures).

    ``over_eligible``/``over_pruned`` are the fresh plan's MILP over every eligible
    pool and over the pruned ones; each check solves one of them with constraints
    removed."""
    unit = policy.unit.value
    if not c.pools:
        return Binding.NO_ELIGIBLE_POOLS, (
            "instanceRequirements/zones: no pool matches (no priced type in the allowed zones)"
        )
    if elig.size == 0:
        reasons = sorted({why.split(" ")[0] for why in c.why_out if why})
        kind = _excluded_kind(c, np.arange(len(c.pools), dtype=np.int64))
        return kind, (
            "no eligible pool: every matching pool is excluded (" + ", ".join(reasons) + ")"
        )
    relaxed = milp.solve(replace(over_eligible, cost=over_eligible.price, budget=None))
    if relaxed.status != "infeasible" and policy.budget_per_hour is not None:
        cheapest = float(sum(c.price[i] * n for i, n in relaxed.x.items()))
        return Binding.BUDGET, (
            f"budgetPerHour {policy.budget_per_hour:.2f} < cheapest feasible {cheapest:.2f}"
        )
    n_pools = int(elig.size)
    if policy.min_pools > n_pools:
        return Binding.DIVERSIFICATION, f"minPools {policy.min_pools} > {n_pools} eligible pools"
    free = replace(over_pruned, budget=None, share_pct=100.0, min_pools=1)
    if milp.solve(free).status != "infeasible":
        if milp.solve(replace(over_pruned, budget=None, min_pools=1)).status == "infeasible":
            return Binding.DIVERSIFICATION, (
                f"maxPoolSharePercent {policy.max_pool_share_pct:g} cannot be met with the "
                f"{n_pools} eligible pools"
            )
        return Binding.DIVERSIFICATION, (
            f"minPools {policy.min_pools} cannot be met with the {n_pools} eligible pools"
        )
    spot = elig[~c.is_od[elig]]
    odp = elig[c.is_od[elig]]
    if split.wanted and odp.size == 0:
        return Binding.ON_DEMAND, (
            f"onDemandBase {policy.on_demand_base:g} {unit} / onDemandPercentageAboveBase "
            f"{policy.on_demand_percentage_above_base:g}: no eligible on-demand pool"
        )
    if split.fraction < 1 and spot.size == 0:
        why = ""
        if policy.max_spot_price_per_unit_hour is not None:
            why = f" (maxSpotPricePerUnitHour {policy.max_spot_price_per_unit_hour:g})"
        all_spot = np.flatnonzero(~c.is_od).astype(np.int64)
        kind = _excluded_kind(c, all_spot) if all_spot.size else Binding.NO_ELIGIBLE_POOLS
        return kind, f"spot capacity above the on-demand part needs spot pools: none eligible{why}"
    capped = [i for i in c.max_count if c.why_out[i] is None]
    if capped and milp.solve(replace(free, upper={})).status != "infeasible":
        return Binding.CAPACITY, (
            f"insufficient capacity: {len(capped)} pools out of capacity can keep only the "
            f"instances running in them, and the other eligible pools cannot make up "
            f"{policy.target:g} {unit}"
        )
    return Binding.ON_DEMAND, (
        f"onDemandBase/onDemandPercentageAboveBase: the {unit} split cannot be met with "
        "the eligible instance sizes"
    )


def rejected(
    policy: model.Policy,
    c: cand_mod.Candidates,
    x: Mapping[int, int],
    *,
    reason_default: str | None = None,
    pruned: set[int] | None = None,
) -> tuple[plan_mod.RejectedPool, ...]:
    """The three cheapest-per-unit (expected cost) candidate pools not in ``x``, with
    why: ineligible (its ``why_out``), ``reason_default`` (infeasible plans), pruned,
    costlier than every chosen pool, or a size that does not fit the constraints."""
    if not c.pools:
        return ()
    per_unit = c.cost / c.w
    order = np.lexsort((np.arange(len(c.pools)), per_unit))
    chosen_max = max((float(per_unit[i]) for i in x), default=math.inf)
    unit = policy.unit.value
    out: list[plan_mod.RejectedPool] = []
    for o in order:
        i = int(o)
        if i in x:
            continue
        why = c.why_out[i]
        if why is None:
            if reason_default is not None:
                why = reason_default
            elif pruned is not None and i in pruned:
                why = (
                    f"pruned: enough pools of the same size and market are cheaper "
                    f"(expected ${per_unit[i]:.6f}/{unit}-h)"
                )
            elif per_unit[i] > chosen_max + 1e-12:
                why = (
                    f"expected ${per_unit[i]:.6f}/{unit}-h, above every chosen pool "
                    f"(max ${chosen_max:.6f})"
                )
            else:
                why = (
                    f"cheaper per {unit} (${per_unit[i]:.6f}/{unit}-h) but its size "
                    f"({c.w[i]:g} {unit}) does not lower the plan's total under the "
                    "capacity, share and pool-count constraints"
                )
        out.append(plan_mod.RejectedPool(c.pools[i], float(c.price[i]), float(c.risk[i]), why))
        if len(out) == 3:
            break
    return tuple(out)


def explanation(
    policy: model.Policy,
    c: cand_mod.Candidates,
    x: Mapping[int, int],
    notes: tuple[str, ...],
    pruned: set[int],
    total: float,
) -> plan_mod.Explanation:
    """Every chosen pool (price, risk, units, share of the ``total`` planned units),
    the three best rejected ones with why, and ``notes``."""
    chosen = tuple(
        plan_mod.ChosenPool(
            pool=c.pools[i],
            count=n,
            price=float(c.price[i]),
            risk=float(c.risk[i]),
            units=float(c.w[i]) * n,
            share_pct=100.0 * float(c.w[i]) * n / total if total else 0.0,
        )
        for i, n in sorted(x.items(), key=lambda kv: c.pools[kv[0]])
    )
    return plan_mod.Explanation(
        chosen=chosen, rejected=rejected(policy, c, x, pruned=pruned), notes=notes
    )

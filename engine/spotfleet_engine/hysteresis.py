"""Hysteresis: what happens to running capacity.

1. Scale-in (:func:`scale_in`), when running capacity exceeds the target, removes
   the most expensive instances per unit first (ties: riskiest, then newest),
   one at a time, while capacity stays >= target, on-demand stays >= what the
   split requires, no pool exceeds the share cap and the pool count stays >=
   ``minPools`` (so scale-in never forces a launch elsewhere).
2. The *kept* plan is the MILP with every remaining running count as a lower
   bound; the *moved* plan may give up at most ``maxReplacementsPerHour -
   fleet.replacements_last_hour`` running instances (:func:`settle`).
3. The moved plan is taken only when ``rebalanceEnabled`` and, over the horizon and
   after paying :data:`SWITCH_HOURS` of price per replaced instance, it saves more
   than ``minSavingsPercent`` of the expected cost of the instances it replaces
   (:func:`move_saving_pct`), *and* it is expected to save USD: the same sum with
   interruptions at their expected cost (``Candidates.money``, risk aversion 1)
   instead of the objective's aversion, and spot prices at their expected mean over
   the horizon (:mod:`spotfleet_engine.outlook`: today's price where the pools'
   own history shows no mean reversion), is above 0. The objective may value a
   quieter pool above its price (``balanced`` counts an interruption 10 times), so
   a move for risk alone can pass the first test while the USD it is expected to
   save does not cover the switch; such a move is not taken. The threshold is per
   replaced instance, not per fleet: a move the churn limit spreads over several
   hours is judged hour by hour on what that hour replaces, so its later parts are
   not held to the whole fleet's cost.
   When the kept plan violates the policy the moved plan is taken regardless; when
   neither is valid there is no plan.

Fast paths (exact): a running fleet that meets every constraint on its own is the
kept plan without a MILP (:func:`kept_if_feasible`), and the moved MILP is
skipped when the fresh optimum proves no move can pass ``minSavingsPercent``
(:func:`move_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from spotfleet_engine import candidates as cand_mod
from spotfleet_engine import milp, model

#: Hours of the old pool's price one replacement costs (old and new overlap while draining).
SWITCH_HOURS = 1.0


def newest_first(instances: Sequence[model.FleetInstance]) -> list[model.FleetInstance]:
    """``instances`` newest launch first (ties: instance id, descending)."""
    return sorted(instances, key=lambda inst: (inst.launched_at, inst.instance_id), reverse=True)


def scale_in(
    policy: model.Policy,
    c: cand_mod.Candidates,
    running: Mapping[int, list[model.FleetInstance]],
    split: cand_mod.OnDemandSplit,
) -> dict[int, list[model.FleetInstance]]:
    """Running instances (candidate index -> newest first) left after scale-in
    (step 1 of the module doc; only when capacity is above the target)."""
    left = {i: list(v) for i, v in running.items()}
    units = {i: float(c.w[i]) * len(v) for i, v in left.items()}
    cap = sum(units.values())
    od_cap = sum(u for i, u in units.items() if c.is_od[i])
    if cap <= policy.target:
        return left
    if policy.target <= 0:  # the empty plan meets every constraint
        return {i: [] for i in left}
    share = policy.max_pool_share_pct / 100.0
    order = sorted(
        left,
        key=lambda i: (-float(c.cost[i] / c.w[i]), -float(c.risk[i]), c.pools[i]),
    )
    for i in order:
        w = float(c.w[i])
        while left[i] and cap - w >= policy.target - 1e-9:
            new_cap = cap - w
            new_od = od_cap - w if c.is_od[i] else od_cap
            if new_od < split.required(new_cap) - 1e-9:
                break
            units[i] -= w
            pools_left = sum(1 for u in units.values() if u > 1e-9)
            too_big = max(units.values()) > share * new_cap + 1e-9
            if too_big or (pools_left < policy.min_pools and units[i] <= 1e-9):
                units[i] += w
                break
            left[i].pop(0)
            cap, od_cap = new_cap, new_od
    return left


def kept_if_feasible(
    policy: model.Policy,
    c: cand_mod.Candidates,
    kept: Mapping[int, int],
    split: cand_mod.OnDemandSplit,
    slack: float,
) -> milp.Solution | None:
    """``kept`` as the kept plan's solution when it meets every constraint on its own
    (capacity, share cap, on-demand split within ``slack``, pool count, budget), else None.

    Exact: the kept MILP bounds each running pool below by its count, and every
    pool costs more than 0 per hour, so when the running fleet is feasible adding
    anything only costs more and the optimum is the running fleet itself."""
    idx = np.asarray(sorted(i for i, n in kept.items() if n > 0), dtype=np.int64)
    if idx.size == 0:
        return None
    cnt = np.asarray([kept[int(i)] for i in idx], dtype=np.float64)
    units = c.w[idx] * cnt
    cap = float(units.sum())
    if cap < policy.target - 1e-9 or bool(np.any(c.cost[idx] <= 0.0)):
        return None
    if policy.max_pool_share_pct < 100.0 and bool(
        np.any(units > policy.max_pool_share_pct / 100.0 * cap + 1e-9)
    ):
        return None
    od_cap = float(units[c.is_od[idx]].sum())
    lo = split.required(cap)
    if od_cap < lo - 1e-9 or od_cap > lo + slack + 1e-9:
        return None
    if policy.min_pools > 1 and idx.size < policy.min_pools:
        return None
    if policy.budget_per_hour is not None and float(c.price[idx] @ cnt) > (
        policy.budget_per_hour + 1e-9
    ):
        return None
    xs = cnt.astype(np.int64)
    return milp.Solution(
        "optimal", {int(i): int(n) for i, n in zip(idx, xs, strict=True)}, float(c.cost[idx] @ xs)
    )


def move_bound(
    policy: model.Policy,
    c: cand_mod.Candidates,
    kept: Mapping[int, int],
    anchored: milp.Solution,
    fresh: milp.Solution,
) -> float | None:
    """A lower bound of every plan's objective when it proves that no move can be worth
    it (no churn-limited plan's :func:`move_saving_pct` can exceed minSavingsPercent),
    else None.

    ``fresh`` solved to optimality within MIP_REL_GAP bounds every plan below by
    ``fresh.objective x (1 - MIP_REL_GAP)``. A move replaces at least one running
    instance and must, per replaced instance ``i``, cover SWITCH_HOURS of its price
    plus minSavingsPercent of its expected cost over the horizon, so it needs a
    saving above the smallest such sum over the running pools."""
    running = [i for i, n in kept.items() if n > 0]
    if anchored.status != "optimal" or fresh.status != "optimal" or not running:
        return None
    lower = fresh.objective * (1.0 - milp.MIP_REL_GAP)
    hours, share = policy.horizon_hours, policy.min_savings_pct / 100.0
    least = min(
        SWITCH_HOURS * float(c.price[i]) + share * float(c.cost[i]) * hours for i in running
    )
    if (anchored.objective - lower) * hours > least:
        return None
    return lower


def pct(old: float, new: float) -> float:
    """Percent ``new`` is below ``old`` (0 when ``old`` is not positive)."""
    return 100.0 * (old - new) / old if old > 0 else 0.0


def replaced(kept: Mapping[int, int], moved: milp.Solution) -> list[tuple[int, int]]:
    """(candidate index, instances) of the running ``kept`` counts ``moved`` gives up."""
    return [(i, cnt - moved.x.get(i, 0)) for i, cnt in kept.items() if moved.x.get(i, 0) < cnt]


def move_saving_pct(
    policy: model.Policy,
    c: cand_mod.Candidates,
    kept: Mapping[int, int],
    anchored: milp.Solution,
    moved: milp.Solution,
    cost: cand_mod.F64 | None = None,
) -> float | None:
    """Percent of the replaced instances' expected cost over the horizon that ``moved``
    saves against ``anchored`` after paying SWITCH_HOURS of price per replaced
    instance (negative when it does not pay); None when it replaces nothing.

    ``cost`` (USD per instance-hour per candidate) prices both plans; default
    ``c.cost``, the objective's (``c.money`` gives the USD a move is expected to save)."""
    gone = replaced(kept, moved)
    if not gone:
        return None
    cc = c.cost if cost is None else cost
    hours = policy.horizon_hours
    switch = SWITCH_HOURS * sum(float(c.price[i]) * n for i, n in gone)
    base = sum(float(cc[i]) * n for i, n in gone) * hours
    if cost is None:
        delta = anchored.objective - moved.objective
    else:
        delta = sum(float(cc[i]) * n for i, n in anchored.x.items()) - sum(
            float(cc[i]) * n for i, n in moved.x.items()
        )
    saving = delta * hours - switch
    return 100.0 * saving / base if base > 0 else math.inf if saving > 0 else -math.inf


@dataclass(frozen=True)
class Settled:
    """What :func:`settle` chose: ``solution`` None when neither keeping nor a move
    within the ``replacements_left`` churn budget meets the policy; ``notes`` for
    the explanation."""

    solution: milp.Solution | None
    notes: tuple[str, ...]
    replacements_left: int


def settle(
    policy: model.Policy,
    c: cand_mod.Candidates,
    kept: Mapping[int, int],
    fresh: milp.Solution,
    spec: milp.MilpSpec,
    replacements_left: int,
    *,
    fast: bool,
    split: cand_mod.OnDemandSplit,
    outlook: Callable[[], cand_mod.F64] | None = None,
) -> Settled:
    """Keep the running ``kept`` counts or move them (steps 2-3 of the module doc).

    ``spec`` is the fresh plan's MILP (in degraded mode with its capacity floor),
    ``fresh`` its solution; ``fast`` allows the exact fast paths (never in degraded
    mode, where no move is taken for a saving); ``outlook`` the expected mean price
    of each candidate over the horizon (:func:`spotfleet_engine.outlook.expected_prices`,
    asked only for a move that passes minSavingsPercent), which the USD test prices
    pools at instead of their current price (None: the current price)."""
    degraded = spec.capacity_goal is not None
    keep = tuple(kept.items())
    anchored = (
        kept_if_feasible(policy, c, kept, split, spec.on_demand.slack) if fast else None
    ) or milp.solve(replace(spec, keep=keep))
    notes: list[str] = []
    moved: milp.Solution | None = None
    may_move = policy.rebalance_enabled and replacements_left > 0
    bound = move_bound(policy, c, kept, anchored, fresh) if may_move and fast else None
    if bound is not None:
        if bound < anchored.objective - 1e-12:
            notes.append(
                f"kept running capacity: moving could save at most "
                f"{pct(anchored.objective, bound):.2f}%, not more than "
                f"minSavingsPercent {policy.min_savings_pct:g} after switching costs"
            )
    elif may_move:
        moved = milp.solve(replace(spec, keep=keep, churn=replacements_left))
        if moved.status == "infeasible":
            moved = None
    if anchored.status == "infeasible":
        if moved is None:
            return Settled(None, tuple(notes), replacements_left)
        notes.append("running capacity moved: keeping it would violate the policy")
        return Settled(moved, tuple(notes), replacements_left)
    saved = None if degraded or moved is None else move_saving_pct(policy, c, kept, anchored, moved)
    if moved is not None and saved is not None and saved > policy.min_savings_pct:
        money = c.money if outlook is None else c.money - c.price + outlook()
        usd = move_saving_pct(policy, c, kept, anchored, moved, money)
        if usd is None or usd > 0.0:
            notes.append(
                f"rebalance saves {saved:.1f}% of the "
                f"replaced instances' cost ({pct(anchored.objective, moved.objective):.1f}% of "
                f"the fleet's) > minSavingsPercent {policy.min_savings_pct:g}"
            )
            return Settled(moved, tuple(notes), replacements_left)
        notes.append(
            f"kept running capacity: moving saves {saved:.1f}% of the replaced instances' "
            f"cost at the objective's risk aversion, but in expected USD (interruptions at "
            f"their expected cost, prices at their outlook over the horizon) {usd:.1f}% "
            f"after switching costs, not more than 0"
        )
        return Settled(anchored, tuple(notes), replacements_left)
    if not degraded and moved is not None and moved.objective < anchored.objective - 1e-12:
        notes.append(
            f"kept running capacity: moving saves "
            f"{pct(anchored.objective, moved.objective):.2f}% of the fleet's cost, not more "
            f"than minSavingsPercent {policy.min_savings_pct:g} of the replaced instances' "
            f"after switching costs"
        )
    return Settled(anchored, tuple(notes), replacements_left)

"""The hindsight oracle: a lower bound of every policy-abiding strategy's penalised cost.

Per decision interval, knowing that interval's real prices and reclaims, it
solves the linear relaxation of the cheapest fleet the policy allows
(:class:`HindsightOracle`, which lists exactly what it relaxes); summed over the
replay, no strategy that obeys the policy can beat it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse

from spotfleet_engine import candidates as cand_mod
from spotfleet_engine import model

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class OracleInterval:
    """The oracle's answer for one interval: ``cost`` penalised USD (a lower
    bound of any strategy's penalised cost in that interval), ``shortfall_unit_h``
    capacity it leaves unmet, ``interrupted`` instances it accepts to lose."""

    cost: float
    billed: float
    shortfall_unit_h: float
    interrupted: float
    units: dict[model.Pool, float]


@dataclass(frozen=True)
class HindsightOracle:
    """Per interval, the linear relaxation of the cheapest fleet the policy allows,
    given the interval's real prices and reclaims; summed, a bound no strategy that
    obeys the policy can beat.

    Variables are units per pool (fractional), ``s`` unmet capacity and
    ``Z = sum(units) + s``. Cost per unit: on-demand ``od x dt / w``; spot
    ``min(real bill over the interval, min over its reclaims at t of
    (bill until t + penalty))/w``; unmet capacity ``shortfall_rate x dt``.

    Held to the policy as every strategy is: only the policy's types and zones
    (the replay's universe, :mod:`spotfleet_engine.candidates`); ``Z >= target``;
    per pool ``units <= share x Z + w`` (the share cap, with one instance of
    rounding); on-demand units within the policy's split, ``>= b (1 - q) + q x
    target - s`` and ``<= b (1 - q) + q x Z`` plus the largest on-demand instance
    (the planner's rounding slack; 0 when the policy wants no on-demand).

    What it relaxes, exactly:

    1. knowledge of the future: it knows the interval's real prices and which
       pools are reclaimed when (it takes the reclaim branch when cheaper), and
       it may hold instances in a pool that is out of capacity at the interval's
       start (a clairvoyant would have launched there before the pool ran dry;
       every strategy keeps what it launched before);
    2. ``maxSpotPricePerUnitHour``: not enforced (a strategy keeps instances whose
       pool's price rose above it after launch; the baselines keep them too);
    3. it re-chooses its fleet every interval, ignoring ``maxReplacementsPerHour``
       (switching costs nothing in the billing, so only the churn limit binds);
    4. fractional units (an LP, fast enough to solve every hour), under which
       ``minPools`` is no constraint;
    5. ``budgetPerHour``, which the AWS-style baselines do not obey either.

    Items 2-5 are relaxations beyond knowledge of the future; each only lowers
    the bound. Every policy-abiding strategy's fleet at the start of an interval
    (what it holds after its decision, plus ``s = max(0, target - capacity)``)
    satisfies the constraints above, and its real penalised cost in the interval
    is at least the objective there: each instance pays its full bill or is
    reclaimed and pays the bill until then plus the penalty, and unmet capacity
    costs the shortfall rate (a fleet an Infeasible plan keeps unchanged after
    reclaims is the one case covered only up to that rounding slack; the tests
    check the bound interval by interval). Shortfall caused by reclaims is not
    charged to the oracle, which again only lowers it. The all-on-demand reference strategy
    ignores the split by design, so the bound is not proven for it (it holds
    whenever spot is the cheaper way to fill the policy's spot part).
    """

    name: str = "oracle"

    def interval(
        self,
        policy: model.Policy,
        dt_h: float,
        spot_pools: Sequence[model.Pool],
        spot_bill: Sequence[float],
        spot_reclaim_bill: Sequence[float | None],
        od_pools: Sequence[model.Pool],
        od_price: Callable[[str], float],
        weight: Callable[[str], float],
        penalty_od_hours: float,
        shortfall_rate: float,
        *,
        exact_lp: bool = False,
    ) -> OracleInterval:
        """Solve one interval. ``spot_bill[i]`` is the real bill of one instance
        of ``spot_pools[i]`` over the interval; ``spot_reclaim_bill[i]`` the bill
        until its first reclaim in the interval (None when none).

        On-demand pools of one type cost the same, so they are merged into one
        variable per type whose cap is the sum of the zones' caps (exact). The
        LP is solved by a greedy fill for a fixed ``Z`` (exact for this
        structure) and a search over ``Z`` (the value is convex in ``Z``);
        ``exact_lp=True`` solves it with HiGHS instead (the tests compare both).
        """
        target = policy.target
        share = policy.max_pool_share_pct / 100.0
        split = cand_mod.OnDemandSplit.of(policy)
        need_od = split.required(target)
        od_types: dict[str, int] = {}
        for p in od_pools:
            od_types[p.instance_type] = od_types.get(p.instance_type, 0) + 1
        names: list[model.Pool] = [
            *spot_pools,
            *(model.Pool(t, "*", model.Market.ON_DEMAND) for t in sorted(od_types)),
        ]
        ns = len(spot_pools)
        n = len(names)
        w = np.empty(n, dtype=np.float64)
        cost = np.empty(n, dtype=np.float64)
        slope = np.empty(n, dtype=np.float64)
        intercept = np.empty(n, dtype=np.float64)
        restricted = np.zeros(n, dtype=np.bool_)
        interrupted_branch = np.zeros(n, dtype=np.bool_)
        for i, p in enumerate(spot_pools):
            w[i] = weight(p.instance_type)
            c = spot_bill[i]
            alt = spot_reclaim_bill[i]
            if alt is not None:
                alt_total = alt + penalty_od_hours * od_price(p.instance_type)
                if alt_total < c:
                    c = alt_total
                    interrupted_branch[i] = True
            cost[i] = c / w[i]
            slope[i], intercept[i] = share, w[i]
        for j, t in enumerate(sorted(od_types)):
            i = ns + j
            m = od_types[t]
            w[i] = weight(t)
            cost[i] = od_price(t) * dt_h / w[i]
            slope[i], intercept[i] = m * share, m * w[i]
            restricted[i] = True
        s_cost = shortfall_rate * dt_h
        # on-demand units <= b (1 - q) + q Z + one instance, as the planner's plans
        od_cap = _OnDemandCap(
            split.constant + cand_mod.on_demand_slack(split, w[restricted]), split.fraction
        )
        lp = _Problem(cost, slope, intercept, restricted, s_cost, target, need_od, od_cap)
        x, s, value = _oracle_lp(lp) if exact_lp else _oracle_greedy(lp)
        units: dict[model.Pool, float] = {}
        for i in range(n):
            if x[i] > 1e-12:
                units[names[i]] = float(x[i])
        inter = float(np.sum(x[interrupted_branch] / w[interrupted_branch]))
        penalty = float(
            sum(
                x[i] / w[i] * penalty_od_hours * od_price(spot_pools[i].instance_type)
                for i in np.flatnonzero(interrupted_branch).tolist()
            )
        )
        return OracleInterval(
            cost=value,
            billed=value - s_cost * s - penalty,
            shortfall_unit_h=s * dt_h,
            interrupted=inter,
            units=units,
        )


@dataclass(frozen=True)
class _OnDemandCap:
    """On-demand units may not exceed ``constant + fraction x Z``."""

    constant: float
    fraction: float

    def at(self, z: float) -> float:
        return self.constant + self.fraction * z


def _fill(
    cost: F64,
    cap: F64,
    restricted: B,
    s_cost: float,
    s_cap: float,
    z: float,
    need: float,
    od_cap: float,
) -> tuple[F64, float, float]:
    """Cheapest fractional fill of ``z`` units with ``>= need`` from restricted
    items (``restricted`` pools and ``s``) and at most ``od_cap`` from the
    restricted pools; returns (units, s, value) or value inf."""
    n = len(cost)
    c_all = np.concatenate((cost, [s_cost]))
    cap_all = np.concatenate((np.minimum(cap, z), [min(s_cap, z)]))
    res_all = np.concatenate((restricted, [True]))
    take = np.zeros(n + 1, dtype=np.float64)
    od_left = max(od_cap, 0.0)
    left = need
    order = np.argsort(c_all, kind="stable")
    for i in order:
        if left <= 1e-12:
            break
        if res_all[i]:
            room = cap_all[i] if i == n else min(cap_all[i], od_left)
            got = min(room, left)
            take[i] += got
            left -= got
            if i < n:
                od_left -= got
    if left > 1e-9:
        return take[:n], float(take[n]), math.inf
    left = z - float(take.sum())
    for i in order:
        if left <= 1e-12:
            break
        room = cap_all[i] - take[i]
        if i < n and restricted[i]:
            room = min(room, od_left)
        got = min(room, left)
        if got > 0:
            take[i] += got
            left -= got
            if i < n and restricted[i]:
                od_left -= got
    if left > 1e-9:
        return take[:n], float(take[n]), math.inf
    return take[:n], float(take[n]), float(c_all @ take)


@dataclass(frozen=True, eq=False)
class _Problem:
    """One interval's LP: per item (pools, on-demand merged per type) ``cost`` per unit
    and cap ``slope x Z + intercept``; ``restricted`` marks the on-demand items; unmet
    capacity ``s <= target`` at ``s_cost``; on-demand + ``s >= need``; on-demand
    ``<= od_cap.at(Z)``."""

    cost: F64
    slope: F64
    intercept: F64
    restricted: B
    s_cost: float
    target: float
    need: float
    od_cap: _OnDemandCap


def _oracle_greedy(p: _Problem) -> tuple[F64, float, float]:
    cost, s_cost, target = p.cost, p.s_cost, p.target

    def at(z: float) -> tuple[F64, float, float]:
        caps = p.slope * z + p.intercept
        return _fill(cost, caps, p.restricted, s_cost, target, z, p.need, p.od_cap.at(z))

    best = at(target)
    step = 1e-6 * max(target, 1.0)
    if at(target + step)[2] < best[2] - 1e-12:
        cmin = float(min(cost.min(initial=math.inf), s_cost))
        hi = best[2] / cmin if cmin > 0 and math.isfinite(best[2]) else 100.0 * target
        lo = target
        hi = max(hi, target + step)
        g = (math.sqrt(5.0) - 1.0) / 2.0
        a, bb = lo, hi
        c1, c2 = bb - g * (bb - a), a + g * (bb - a)
        f1, f2 = at(c1)[2], at(c2)[2]
        for _ in range(100):
            if f1 <= f2:
                bb, c2, f2 = c2, c1, f1
                c1 = bb - g * (bb - a)
                f1 = at(c1)[2]
            else:
                a, c1, f1 = c1, c2, f2
                c2 = a + g * (bb - a)
                f2 = at(c2)[2]
            if bb - a < 1e-9 * hi:
                break
        cand = at(0.5 * (a + bb))
        if cand[2] < best[2]:
            best = cand
    return best


def _oracle_lp(p: _Problem) -> tuple[F64, float, float]:
    """The same LP solved by HiGHS (variables: units..., s, Z)."""
    cost, slope, intercept, restricted = p.cost, p.slope, p.intercept, p.restricted
    s_cost, target, need, od_cap = p.s_cost, p.target, p.need, p.od_cap
    n = len(cost)
    c = np.concatenate((cost, [s_cost, 0.0]))
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []
    for i in range(n):  # u_i - slope_i Z <= intercept_i
        rows += [i, i]
        cols += [i, n + 1]
        vals += [1.0, -float(slope[i])]
        rhs.append(float(intercept[i]))
    r = n
    idx = [i for i in range(n) if restricted[i]]
    rows += [r] * (len(idx) + 1)
    cols += [*idx, n]
    vals += [-1.0] * (len(idx) + 1)
    rhs.append(-need)
    # sum of on-demand units - fraction Z <= constant
    rows += [r + 1] * (len(idx) + 1)
    cols += [*idx, n + 1]
    vals += [1.0] * len(idx) + [-od_cap.fraction]
    rhs.append(od_cap.constant)
    a_ub = sparse.csr_matrix((vals, (rows, cols)), shape=(n + 2, n + 2))
    a_eq = sparse.csr_matrix(np.concatenate((np.ones(n + 1), [-1.0]))[None, :])
    bounds = [(0.0, None)] * n + [(0.0, target), (target, None)]
    res = optimize.linprog(
        c,
        A_ub=a_ub,
        b_ub=np.asarray(rhs),
        A_eq=a_eq,
        b_eq=np.zeros(1),
        bounds=bounds,
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"oracle LP failed: {res.message}")
    x = np.asarray(res.x, dtype=np.float64)
    return x[:n], float(x[n]), float(res.fun)

"""The fleet MILP as data: a frozen :class:`MilpSpec` in, a :class:`Solution` out.

A spec states the constraints wanted over ``n`` pool variables (integer instance
counts ``x_j``, capacity ``C = sum w_j x_j``); :func:`solve` writes them as one
sparse mixed-integer program for HiGHS (``scipy.optimize.milp``):

- capacity ``C >= capacity_min``; with ``capacity_goal`` set (degraded mode) the
  objective first maximises ``min(C, capacity_goal)``, then minimises cost;
- on-demand capacity in ``[constant + fraction x C, ... + slack]`` (:class:`OnDemandRow`);
- per pool ``w_j x_j <= share_pct/100 x C`` when ``share_pct < 100``;
- at least ``min_pools`` pools hold capacity (binary indicators, only when the
  share cap does not already force that many: :func:`min_pools_implied`);
- ``sum price_j x_j <= budget`` when a budget is given;
- ``upper`` caps counts (pools out of capacity); ``keep`` bounds running counts
  from below, or, with ``churn`` set, lets at most ``churn`` of those kept
  instances go.

Pure and deterministic: no time limits (they would make plans depend on speed),
only a branch-and-bound node limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse

#: Relative MIP gap HiGHS must prove before a plan is called optimal.
MIP_REL_GAP = 1e-4

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

Status = Literal["optimal", "feasible", "infeasible"]


def pools_forced(share_pct: float) -> int:
    """Fewest pools a plan can use when none may hold more than ``share_pct`` percent
    of its capacity: ``ceil(100 / share)``."""
    return math.ceil(100.0 / share_pct - 1e-9)


def min_pools_implied(share_pct: float, min_pools: int) -> bool:
    """True when the share cap alone forces ``min_pools`` pools."""
    return pools_forced(share_pct) >= min_pools


@dataclass(frozen=True, eq=False)
class OnDemandRow:
    """On-demand capacity (the pools where ``mask``) must lie in
    ``[constant + fraction x C, constant + fraction x C + slack]`` units."""

    mask: B
    constant: float
    fraction: float
    slack: float


@dataclass(frozen=True, eq=False)
class MilpSpec:
    """One fleet MILP over pool variables ``j = 0..n-1`` (see the module doc).

    ``ids[j]`` is the caller's name for variable ``j`` (:class:`Solution` and
    ``upper``/``keep`` use it); ``cost`` is the objective per instance-hour,
    ``weight`` units per instance, ``price`` USD per instance-hour (the budget row).
    ``keep`` lists ``(id, count)`` of running pools (in the caller's order).
    """

    ids: I64
    cost: F64
    weight: F64
    price: F64
    capacity_min: float
    on_demand: OnDemandRow
    share_pct: float = 100.0
    min_pools: int = 1
    budget: float | None = None
    upper: Mapping[int, int] = field(default_factory=dict)
    keep: tuple[tuple[int, int], ...] = ()
    churn: int | None = None
    capacity_goal: float | None = None
    node_limit: int = 20_000
    presolve: bool = False


@dataclass(frozen=True)
class Solution:
    """``x``: id -> count (counts > 0 only); ``objective``: ``sum cost x`` (inf when
    infeasible). ``feasible`` means valid but not proven optimal (node limit)."""

    status: Status
    x: dict[int, int]
    objective: float


def infeasible() -> Solution:
    """The answer when no plan meets the spec."""
    return Solution("infeasible", {}, math.inf)


def solve(spec: MilpSpec) -> Solution:
    """Solve ``spec``.

    HiGHS handles general integers with infinite bounds badly (seconds spent in
    root propagation), so capacity is first bounded by ``cap_max`` = 1.5 x
    (max(capacity_min, kept units) + pools needed x largest size), which bounds
    every count through the share cap. The bound is then proven slack: every plan
    with more capacity costs at least ``cap_max x`` the cheapest cost per unit; if
    that is not above the solution's cost, ``cap_max`` grows fourfold and the solve
    repeats (finally without a bound). Degraded mode is solved unbounded.
    """
    if len(spec.ids) == 0 or spec.capacity_goal is not None:
        return _solve_once(spec, math.inf)
    w = spec.weight
    per_unit = float(np.min(spec.cost / w))
    pos = {int(i): j for j, i in enumerate(spec.ids)}
    kept_units = sum(float(w[pos[i]]) * n for i, n in spec.keep)
    needed = max(spec.min_pools, pools_forced(spec.share_pct))
    cap_max = 1.5 * (max(spec.capacity_min, kept_units) + needed * float(np.max(w)))
    for _ in range(3):
        sol = _solve_once(spec, cap_max)
        if sol.status != "infeasible" and cap_max * per_unit >= sol.objective:
            return sol
        cap_max *= 4.0
    return _solve_once(spec, math.inf)


def _solve_once(spec: MilpSpec, cap_max: float) -> Solution:
    """One HiGHS solve with capacity bounded by ``cap_max`` (may be inf)."""
    n = len(spec.ids)
    if n == 0:  # nothing to plan with: only an empty plan can be valid
        return Solution("optimal", {}, 0.0) if spec.capacity_min <= 0 else infeasible()
    w = spec.weight
    cost = spec.cost
    pos = {int(i): j for j, i in enumerate(spec.ids)}
    keep_pos = sorted((pos[i], cnt) for i, cnt in spec.keep if cnt > 0)
    use_share = spec.share_pct < 100.0
    use_min_pools = spec.min_pools > 1 and not (
        use_share and min_pools_implied(spec.share_pct, spec.min_pools)
    )
    n_y = n if use_min_pools else 0
    n_d = len(keep_pos) if spec.churn is not None else 0
    n_z = 1 if spec.capacity_goal is not None else 0
    ix_c = n
    ix_y = n + 1
    ix_d = ix_y + n_y
    ix_z = ix_d + n_d
    nv = ix_z + n_z

    obj = np.zeros(nv)
    obj[:n] = cost
    lb = np.zeros(nv)
    ub = np.full(nv, np.inf)
    integrality = np.ones(nv, dtype=np.int64)
    integrality[ix_c] = 0
    lb[ix_c] = spec.capacity_min
    if n_y:
        ub[ix_y:ix_d] = 1.0
    if math.isfinite(cap_max):
        ub[ix_c] = cap_max
        share = spec.share_pct / 100.0 if use_share else 1.0
        ub[:n] = np.floor(share * cap_max / w + 1e-9)
    if spec.capacity_goal is not None:
        integrality[ix_z] = 0
        ub[ix_z] = spec.capacity_goal
        big = 2.0 * float(np.max(cost / w)) + 1.0
        obj[ix_z] = -big
    for i, most in spec.upper.items():
        if i in pos:
            ub[pos[i]] = min(ub[pos[i]], float(most))
    if spec.churn is None:
        for j, cnt in keep_pos:
            lb[j] = cnt
            ub[j] = max(ub[j], cnt)

    rows: list[I64] = []
    cols: list[I64] = []
    vals: list[F64] = []
    r_lo: list[float] = []
    r_hi: list[float] = []
    nrow = 0

    def add(cidx: I64, v: F64, lo: float, hi: float) -> None:
        nonlocal nrow
        rows.append(np.full(len(cidx), nrow, dtype=np.int64))
        cols.append(cidx.astype(np.int64))
        vals.append(v.astype(np.float64))
        r_lo.append(lo)
        r_hi.append(hi)
        nrow += 1

    ar = np.arange(n, dtype=np.int64)
    # capacity definition: sum w x - C = 0
    add(np.append(ar, ix_c), np.append(w, -1.0), 0.0, 0.0)
    if use_share:
        s = spec.share_pct / 100.0
        rows.append(np.repeat(np.arange(nrow, nrow + n, dtype=np.int64), 2))
        cols.append(np.column_stack((ar, np.full(n, ix_c))).ravel())
        vals.append(np.column_stack((w, np.full(n, -s))).ravel())
        r_lo.extend([-np.inf] * n)
        r_hi.extend([0.0] * n)
        nrow += n
    od = spec.on_demand
    oi = ar[od.mask]
    add(
        np.append(oi, ix_c),
        np.append(w[od.mask], -od.fraction),
        od.constant,
        od.constant + od.slack,
    )
    if use_min_pools:
        rows.append(np.repeat(np.arange(nrow, nrow + n, dtype=np.int64), 2))
        cols.append(np.column_stack((ar, ix_y + ar)).ravel())
        vals.append(np.tile(np.array([1.0, -1.0]), n))
        r_lo.extend([0.0] * n)
        r_hi.extend([np.inf] * n)
        nrow += n
        add(ix_y + ar, np.ones(n), float(spec.min_pools), np.inf)
    if spec.budget is not None:
        add(ar, spec.price, -np.inf, spec.budget)
    if n_d:
        assert spec.churn is not None
        for k, (j, cnt) in enumerate(keep_pos):
            add(np.array([j, ix_d + k]), np.array([1.0, 1.0]), float(cnt), np.inf)
            ub[ix_d + k] = cnt
        add(ix_d + np.arange(n_d, dtype=np.int64), np.ones(n_d), -np.inf, float(spec.churn))
    if n_z:
        add(np.array([ix_z, ix_c]), np.array([1.0, -1.0]), -np.inf, 0.0)

    a = sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nrow, nv)
    )
    res = optimize.milp(
        obj,
        integrality=integrality,
        bounds=optimize.Bounds(lb, ub),
        constraints=optimize.LinearConstraint(a, np.asarray(r_lo), np.asarray(r_hi)),
        options={
            "mip_rel_gap": MIP_REL_GAP,
            "node_limit": spec.node_limit,
            "presolve": spec.presolve,
        },
    )
    if res.x is None:
        return infeasible()
    xs = np.rint(res.x[:n]).astype(np.int64)
    x = {int(spec.ids[j]): int(xs[j]) for j in np.flatnonzero(xs)}
    status: Status = "optimal" if res.status == 0 else "feasible"
    return Solution(status, x, float(cost[xs > 0] @ xs[xs > 0]))

"""The replay: every strategy decides at each decision time on the market as
seen then, its fleet is billed at the real prices until the next decision, and
the common reclaim stream takes instances from the pools it holds.

Order inside one interval ``[t_k, t_k+1)``: the strategy decides at ``t_k``
(seeing prices up to ``t_k`` and the pools out of capacity at ``t_k``); its
terminations take effect at once, its launches into pools out of capacity
fail (the capacity stays missing until the next decision), the others start
at ``t_k``; then the interval's reclaims happen at their second, each
taking its share of the instances held there; reclaimed capacity is missing
until the next decision (counted in unit-hours below the target). Billing is
per second at the real price path; a reclaimed instance pays until its
reclaim.

Move payback. A *move* is one decision of one strategy at which it terminated at
least one instance for a reason other than ``scale-in`` (a rebalance or
consolidation: ``voluntary_terminations`` counts those instances, ``moves`` the
decisions). Its realised payback is measured after the replay, over the window
``[t0, min(t0 + policy.horizon_hours, end of the replay grid)]`` (a move late in
the replay is still counted, over the shortened window):

- counterfactual: what keeping every instance it removed in its old pool would
  have cost over the window at the real price path (spot: the pool's price
  curve; on-demand: its on-demand price x hours);
- replacement: what the instances launched at the same decision cost over the
  same window, scaled to the moved capacity by ``min(1, M / L)`` (M: units
  removed, L: units launched; a move that launched nothing costs 0 here);
- switching: :data:`spotfleet_engine.hysteresis.SWITCH_HOURS` x the replacement
  instances' price at ``t0`` (USD/h, scaled the same way): the new instances' boot
  time, billed without useful work, the same assumption the planner makes;
- payback = counterfactual - replacement - switching (USD); the move *pays back*
  when payback > 0.

It measures the price decision only: later reclaims of either side (the old
pool's or the new one's) are ignored here; the penalised cost scores those.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from spotfleet_engine import candidates as cand_mod
from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import hysteresis, model, strategies
from spotfleet_engine import market as market_mod
from spotfleet_engine import plan as plan_mod
from spotfleet_engine.backtest import interruptions as intr
from spotfleet_engine.backtest import oracle as oracle_mod
from spotfleet_engine.backtest import prices as prices_mod
from spotfleet_engine.backtest import traces as traces_mod

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Scoring:
    """How lost work and missing capacity are charged (defaults are the published ones).

    Penalised cost = billed + ``penalty_od_hours`` x (on-demand USD/h of each
    reclaimed instance) + ``shortfall_od_multiple`` x (cheapest on-demand USD
    per unit-hour among the policy's types) x shortfall unit-hours.
    """

    penalty_od_hours: float = 1.0
    shortfall_od_multiple: float = 3.0


@dataclass
class StrategyResult:
    """Totals and per-interval series of one strategy (USD, unit-hours, counts)."""

    name: str
    billed: float = 0.0
    on_demand_equivalent: float = 0.0
    interruptions: float = 0.0
    lost_od_usd_per_h: float = 0.0
    shortfall_unit_h: float = 0.0
    replacements: int = 0
    voluntary_terminations: int = 0
    failed_launches: int = 0
    #: decisions with a voluntary termination (see the module doc: move payback)
    moves: int = 0
    #: moves whose realised payback over the horizon is > 0
    moves_paid_back: int = 0
    #: sum of the moves' realised paybacks (USD)
    move_payback_usd: float = 0.0
    #: each move's realised payback (USD), in decision order
    move_paybacks: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    billed_k: list[float] = field(default_factory=list)
    lost_od_k: list[float] = field(default_factory=list)
    shortfall_k: list[float] = field(default_factory=list)
    interruptions_k: list[float] = field(default_factory=list)
    actions: list[tuple[int, str]] = field(default_factory=list)

    def penalised(self, scoring: Scoring, ref_unit_od: float) -> float:
        return (
            self.billed
            + scoring.penalty_od_hours * self.lost_od_usd_per_h
            + scoring.shortfall_od_multiple * ref_unit_od * self.shortfall_unit_h
        )

    def penalised_k(self, scoring: Scoring, ref_unit_od: float) -> F64:
        return (
            np.asarray(self.billed_k)
            + scoring.penalty_od_hours * np.asarray(self.lost_od_k)
            + scoring.shortfall_od_multiple * ref_unit_od * np.asarray(self.shortfall_k)
        )

    @property
    def savings_pct(self) -> float:
        if self.on_demand_equivalent <= 0:
            return 0.0
        return 100.0 * (1.0 - self.billed / self.on_demand_equivalent)


@dataclass
class ReplayResult:
    """Everything a report needs. ``oracle`` is computed under ``scoring``."""

    policy: model.Policy
    start: datetime
    end: datetime
    interval: timedelta
    grid: list[int]
    strategies: list[StrategyResult]
    oracle: StrategyResult | None
    scoring: Scoring
    config: intr.InterruptionConfig
    ref_unit_od: float
    spot_pools: int
    on_demand_pools: int
    reclaims_by_source: dict[str, int]
    #: the advisor snapshot in force, as consecutive runs of decisions:
    #: (snapshot date or None, first decision epoch s, end epoch s, decisions)
    advisor_in_force: tuple[tuple[date | None, int, int, int], ...] = ()
    #: price rows the history's loader dropped, by reason (see ``market.PriceHistory``)
    rejected_price_rows: Mapping[str, int] = field(default_factory=dict)

    @property
    def simulated_hours(self) -> float:
        return (self.grid[-1] - self.grid[0]) / 3600.0

    def by_name(self, name: str) -> StrategyResult:
        for s in [*self.strategies, *([self.oracle] if self.oracle else [])]:
            if s.name == name:
                return s
        raise KeyError(name)


class _Fleet:
    """One strategy's running instances, by pool, oldest first."""

    def __init__(self, name: str, universe: prices_mod.Universe, weight: Callable[[str], float]):
        self.name = name
        self.u = universe
        self.weight = weight
        self.index = {p: i for i, p in enumerate(universe.spot)}
        self.by_pool: dict[model.Pool, list[model.FleetInstance]] = {}
        self.where: dict[str, model.Pool] = {}
        self.spot_n = np.zeros(len(universe.spot), dtype=np.float64)
        self.counter = 0
        self.voluntary: list[tuple[int, int]] = []  # (epoch s, count)
        # (epoch s, pools removed voluntarily, pools launched), each pool -> count
        self.moves: list[tuple[int, dict[model.Pool, int], dict[model.Pool, int]]] = []
        self._snapshot: model.Fleet | None = None

    def fleet(self, now: int) -> model.Fleet:
        recent = sum(n for t, n in self.voluntary if t > now - 3600)
        if self._snapshot is None:
            inst = tuple(i for pool in sorted(self.by_pool) for i in self.by_pool[pool])
            self._snapshot = model.Fleet(instances=inst)
        return model.Fleet(instances=self._snapshot.instances, replacements_last_hour=recent)

    def units(self) -> float:
        return sum(len(v) * self.weight(p.instance_type) for p, v in self.by_pool.items())

    def remove(self, instance_id: str) -> model.Pool | None:
        pool = self.where.pop(instance_id, None)
        if pool is None:
            return None
        lst = self.by_pool[pool]
        for j, inst in enumerate(lst):
            if inst.instance_id == instance_id:
                del lst[j]
                break
        if not lst:
            del self.by_pool[pool]
        i = self.index.get(pool)
        if i is not None:
            self.spot_n[i] -= 1
        self._snapshot = None
        return pool

    def launch(self, pool: model.Pool, n: int, at: datetime) -> None:
        lst = self.by_pool.setdefault(pool, [])
        for _ in range(n):
            self.counter += 1
            iid = f"{self.name}-{self.counter}"
            lst.append(model.FleetInstance(iid, pool, at))
            self.where[iid] = pool
        i = self.index.get(pool)
        if i is not None:
            self.spot_n[i] += n
        self._snapshot = None

    def reclaim(self, pool: model.Pool, lost: int) -> None:
        lst = self.by_pool.get(pool, [])
        for inst in lst[:lost]:
            self.where.pop(inst.instance_id, None)
        del lst[:lost]
        if not lst:
            self.by_pool.pop(pool, None)
        self.spot_n[self.index[pool]] -= lost
        self._snapshot = None


def run(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    history: market_mod.PriceHistory,
    strategy_list: Sequence[strategies.Strategy],
    *,
    start: datetime,
    end: datetime,
    advisor: market_mod.AdvisorHistory,
    interval: timedelta = timedelta(hours=1),
    config: intr.InterruptionConfig = intr.InterruptionConfig(),
    scoring: Scoring = Scoring(),
    traces: Sequence[traces_mod.AvailabilityTrace] = (),
    oracle: bool = True,
    progress: Callable[[int, int], None] | None = None,
    record_actions: bool = False,
) -> ReplayResult:
    """Replay ``strategy_list`` (names must differ) on ``history`` over ``[start, end)``.

    Pure: the data come in as arguments. Raises ValueError for an invalid
    policy, an empty window or a policy no pool matches.
    """
    problems = policy.problems()
    if problems:
        raise ValueError("policy invalid: " + "; ".join(problems))
    names = [s.name for s in strategy_list]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy names must differ: {names}")
    grid = prices_mod.decision_grid(start, end, interval)
    u = prices_mod.build_universe(policy, catalog, history, grid)
    adv_cache: dict[object, Mapping[str, market_mod.AdvisorEntry]] = {}

    def advisor_at(k: int) -> Mapping[str, market_mod.AdvisorEntry]:
        # snapshots count from their day's 00:00 UTC, so one lookup per day is exact
        day = u.time(k).date()
        got = adv_cache.get(day)
        if got is None:
            got = advisor.at(u.time(k))
            adv_cache[day] = got
        return got

    events = intr.simulate(u, advisor_at, config, traces)
    # strategies see only the types the policy accepts (the same answer, faster)
    cat = catalog.restricted_to(cand_mod.eligible_types(policy, catalog))
    units_by_type = {t: w for t, w in u.weight.items()}

    def weight(t: str) -> float:
        w = units_by_type.get(t)
        if w is None:
            it = catalog.types.get(t)
            w = it.units(policy.unit) if it is not None else 0.0
            units_by_type[t] = w
        return w

    def od_price(t: str) -> float:
        p = u.od_price.get(t)
        return p if p is not None else catalog.on_demand_usd_per_hour.get(t, 0.0)

    ref = u.ref_unit_od_price()
    shortfall_rate = scoring.shortfall_od_multiple * ref
    fleets = [_Fleet(s.name, u, weight) for s in strategy_list]
    results = [StrategyResult(s.name) for s in strategy_list]
    orc = oracle_mod.HindsightOracle()
    oracle_res = StrategyResult("oracle") if oracle else None
    target = policy.target
    n_dec = u.decisions
    for k in range(n_dec):
        t0, t1 = int(grid[k]), int(grid[k + 1])
        dt_h = (t1 - t0) / 3600.0
        now = datetime.fromtimestamp(t0, UTC)
        unavailable = events.unavailable[k]
        snap = u.snapshot(k, advisor_at(k), unavailable)
        reclaims = events.by_interval[k]
        for strat, fl, res in zip(strategy_list, fleets, results, strict=True):
            plan = strat.decide(policy, cat, snap, fl.fleet(t0), strat.risk, now)
            res.outcomes[plan.outcome] = res.outcomes.get(plan.outcome, 0) + 1
            _apply(plan, fl, res, k, t0, now, unavailable, record_actions)
            _bill(fl, res, k, t0, t1, dt_h, reclaims, target, weight, od_price)
        if oracle_res is not None:
            first: dict[int, int] = {}
            for r in reclaims:
                first.setdefault(r.pool, r.at)
            reclaim_bill: list[float | None] = [None] * len(u.spot)
            for i, at in first.items():
                reclaim_bill[i] = u.curves[i].cost(t0, at)
            iv = orc.interval(
                policy,
                dt_h,
                u.spot,
                u.interval_cost[:, k].tolist(),
                reclaim_bill,
                u.on_demand,
                od_price,
                weight,
                scoring.penalty_od_hours,
                shortfall_rate,
            )
            oracle_res.billed_k.append(iv.billed)
            oracle_res.lost_od_k.append(0.0)
            oracle_res.shortfall_k.append(iv.shortfall_unit_h)
            oracle_res.interruptions_k.append(iv.interrupted)
            oracle_res.billed += iv.billed
            oracle_res.shortfall_unit_h += iv.shortfall_unit_h
            oracle_res.interruptions += iv.interrupted
            oracle_res.on_demand_equivalent += sum(
                units / weight(p.instance_type) * od_price(p.instance_type) * dt_h
                for p, units in iv.units.items()
            )
        if progress is not None:
            progress(k + 1, n_dec)
    grid_end = int(grid[-1])
    horizon_s = round(policy.horizon_hours * 3600.0)
    for fl, res in zip(fleets, results, strict=True):
        for t_move, removed, launched in fl.moves:
            t_end = min(t_move + horizon_s, grid_end)
            pay = move_payback(u, fl.index, t_move, t_end, removed, launched, weight, od_price)
            res.moves += 1
            if pay > 0.0:
                res.moves_paid_back += 1
            res.move_payback_usd += pay
            res.move_paybacks.append(pay)
    return ReplayResult(
        policy=policy,
        start=start,
        end=end,
        interval=interval,
        grid=[int(x) for x in grid],
        strategies=results,
        oracle=oracle_res,
        scoring=scoring,
        config=config,
        ref_unit_od=ref,
        spot_pools=len(u.spot),
        on_demand_pools=len(u.on_demand),
        reclaims_by_source=events.counts_by_source(),
        advisor_in_force=_advisor_runs(advisor, grid),
        rejected_price_rows=dict(history.rejected_rows),
    )


def _advisor_runs(
    advisor: market_mod.AdvisorHistory, grid: npt.NDArray[np.int64]
) -> tuple[tuple[date | None, int, int, int], ...]:
    """Which advisor snapshot each decision saw, as runs (see ``ReplayResult``)."""
    runs: list[tuple[date | None, int, int, int]] = []
    for k in range(len(grid) - 1):
        d = advisor.date_at(datetime.fromtimestamp(int(grid[k]), UTC))
        if runs and runs[-1][0] == d:
            _, first, _, n = runs[-1]
            runs[-1] = (d, first, int(grid[k + 1]), n + 1)
        else:
            runs.append((d, int(grid[k]), int(grid[k + 1]), 1))
    return tuple(runs)


def _apply(
    plan: plan_mod.Plan,
    fl: _Fleet,
    res: StrategyResult,
    k: int,
    t0: int,
    now: datetime,
    unavailable: frozenset[model.Pool],
    record: bool,
) -> None:
    voluntary = 0
    removed: dict[model.Pool, int] = {}
    launched: dict[model.Pool, int] = {}
    for term in plan.terminations:
        pool = fl.remove(term.instance_id)
        if pool is not None and term.reason != "scale-in":
            voluntary += 1
            removed[pool] = removed.get(pool, 0) + 1
    if voluntary:
        fl.voluntary.append((t0, voluntary))
        res.voluntary_terminations += voluntary
        fl.moves.append((t0, removed, launched))  # launched is filled below
    for la in plan.launches:
        if la.count <= 0:
            continue
        spot = la.pool.market is model.Market.SPOT
        if spot and (la.pool in unavailable or la.pool not in fl.index):
            res.failed_launches += la.count
            continue
        fl.launch(la.pool, la.count, now)
        launched[la.pool] = launched.get(la.pool, 0) + la.count
        if k > 0:
            res.replacements += la.count
    if record:
        acts = ",".join(
            [f"+{a.pool.key()}x{a.count}" for a in plan.launches]
            + [f"-{t.instance_id}" for t in plan.terminations]
        )
        res.actions.append((k, acts))


def move_payback(
    u: prices_mod.Universe,
    index: Mapping[model.Pool, int],
    t0: int,
    t1: int,
    removed: Mapping[model.Pool, int],
    launched: Mapping[model.Pool, int],
    weight: Callable[[str], float],
    od_price: Callable[[str], float],
) -> float:
    """Realised payback (USD) of a move at ``t0`` over ``[t0, t1]``: the real cost of
    keeping ``removed`` minus the real cost of ``launched`` scaled to the moved
    capacity, minus the switching cost (see the module doc). ``index``: spot pool ->
    its row in ``u`` (on-demand pools are absent)."""
    hours = (t1 - t0) / 3600.0

    def cost(pool: model.Pool) -> float:
        i = index.get(pool)
        if i is None:  # on-demand
            return od_price(pool.instance_type) * hours
        return u.curves[i].cost(t0, t1)

    def price(pool: model.Pool) -> float:
        i = index.get(pool)
        if i is None:
            return od_price(pool.instance_type)
        p = u.curves[i].price_at(t0)
        return 0.0 if p is None else p

    kept = sum(n * cost(p) for p, n in removed.items())
    moved_units = sum(n * weight(p.instance_type) for p, n in removed.items())
    new_units = sum(n * weight(p.instance_type) for p, n in launched.items())
    if new_units <= 0:
        return kept
    scale = min(1.0, moved_units / new_units)
    replacement = scale * sum(n * cost(p) for p, n in launched.items())
    switching = scale * hysteresis.SWITCH_HOURS * sum(n * price(p) for p, n in launched.items())
    return kept - replacement - switching


def _bill(
    fl: _Fleet,
    res: StrategyResult,
    k: int,
    t0: int,
    t1: int,
    dt_h: float,
    reclaims: Sequence[intr.Reclaim],
    target: float,
    weight: Callable[[str], float],
    od_price: Callable[[str], float],
) -> None:
    u = fl.u
    billed = float(fl.spot_n @ u.interval_cost[:, k]) if len(u.spot) else 0.0
    od_eq = 0.0
    for pool, lst in fl.by_pool.items():
        n = len(lst)
        odp = od_price(pool.instance_type)
        od_eq += n * odp * dt_h
        if pool.market is model.Market.ON_DEMAND:
            billed += n * odp * dt_h
    cap = fl.units()
    shortfall = 0.0
    lost_od = 0.0
    lost_n = 0
    t_prev = t0
    for r in reclaims:
        pool = u.spot[r.pool]
        n = len(fl.by_pool.get(pool, ()))
        if n == 0:
            continue
        lost = r.lost(n)
        if lost <= 0:
            continue
        shortfall += max(0.0, target - cap) * (r.at - t_prev) / 3600.0
        t_prev = r.at
        fl.reclaim(pool, lost)
        odp = od_price(pool.instance_type)
        billed -= lost * u.curves[r.pool].cost(r.at, t1)
        od_eq -= lost * odp * (t1 - r.at) / 3600.0
        cap -= lost * weight(pool.instance_type)
        lost_od += lost * odp
        lost_n += lost
    shortfall += max(0.0, target - cap) * (t1 - t_prev) / 3600.0
    if math.isclose(shortfall, 0.0, abs_tol=1e-12):
        shortfall = 0.0
    res.billed += billed
    res.on_demand_equivalent += od_eq
    res.interruptions += lost_n
    res.lost_od_usd_per_h += lost_od
    res.shortfall_unit_h += shortfall
    res.billed_k.append(billed)
    res.lost_od_k.append(lost_od)
    res.shortfall_k.append(shortfall)
    res.interruptions_k.append(float(lost_n))

"""``decide``: the cheapest safe fleet for a policy, as a :class:`~spotfleet_engine.plan.Plan`.

Pure and deterministic: no I/O, no clock (``now`` is an argument), no globals;
the same inputs give the same Plan. One decision is four steps, each in its
own module (the model is in ``docs/engine.md``):

1. :mod:`~spotfleet_engine.candidates`: the policy's candidate pools, which are
   eligible, their risk and expected cost per instance-hour, and pruning (exact
   by exchange);
2. :mod:`~spotfleet_engine.milp`: the fresh plan, the MILP over the pruned pools
   (a :class:`~spotfleet_engine.milp.MilpSpec` built by :func:`milp_spec`); when
   it is infeasible :func:`spotfleet_engine.explain.diagnose` names what binds
   and, with ``minCapacity`` below the target, the degraded plan holds as much
   as it can;
3. :mod:`~spotfleet_engine.hysteresis`: scale-in, then keep the running capacity
   or move it (churn limit, ``minSavingsPercent``), with exact fast paths;
4. the Plan: actions, totals and :func:`spotfleet_engine.explain.explanation`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt

from spotfleet_engine import candidates as cand_mod
from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import explain, hysteresis, milp, model
from spotfleet_engine import market as market_mod
from spotfleet_engine import outlook as outlook_mod
from spotfleet_engine import plan as plan_mod
from spotfleet_engine.risk import protocol as risk_protocol

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Options:
    """Solver knobs. ``prune=False`` solves the MILP over every eligible pool
    (the benchmark's reference); ``node_limit`` bounds branch and bound
    deterministically (no time limits: they would make plans depend on speed).
    HiGHS presolve is off by default: on the pruned models it costs more than
    it saves (measured by ``bench/decide.py``)."""

    prune: bool = True
    node_limit: int = 20_000
    presolve: bool = False
    #: skip the anchored MILP when the running fleet is feasible on its own, and the
    #: churn-limited MILP when no move can pass minSavingsPercent (exact; ``False``
    #: always solves all three, for tests and benchmarks)
    fast_path: bool = True


DEFAULT_OPTIONS = Options()


def milp_spec(
    policy: model.Policy,
    c: cand_mod.Candidates,
    ids: I64,
    split: cand_mod.OnDemandSplit,
    slack: float,
    options: Options,
) -> milp.MilpSpec:
    """The fresh plan's MILP over candidate indices ``ids``: minimise expected cost
    subject to the target, the on-demand split (up to ``slack`` above it), the share
    cap, ``minPools``, the budget and the caps of pools out of capacity."""
    return milp.MilpSpec(
        ids=ids,
        cost=c.cost[ids],
        weight=c.w[ids],
        price=c.price[ids],
        capacity_min=policy.target,
        on_demand=milp.OnDemandRow(c.is_od[ids], split.constant, split.fraction, slack),
        share_pct=policy.max_pool_share_pct,
        min_pools=policy.min_pools,
        budget=policy.budget_per_hour,
        upper=dict(c.max_count),
        node_limit=options.node_limit,
        presolve=options.presolve,
    )


def decide(
    policy: model.Policy,
    catalog: catalog_mod.Catalog,
    market: market_mod.MarketSnapshot,
    fleet: model.Fleet,
    risk: risk_protocol.RiskModel,
    now: datetime,
    *,
    options: Options = DEFAULT_OPTIONS,
) -> plan_mod.Plan:
    """The plan for ``policy`` given the market and the running ``fleet`` at ``now``.

    Never raises for an impossible policy: returns outcome ``Infeasible`` with
    ``binding`` (the kind) and ``binding_constraint`` (the text) naming what cannot
    be met (see :mod:`plan`).
    """
    problems = policy.problems()
    if problems:
        return _infeasible(policy, fleet, explain.invalid_policy(problems))
    c = cand_mod.build(policy, catalog, market, risk, now)
    index = {p: i for i, p in enumerate(c.pools)} if fleet.instances else {}

    # running fleet: eligible instances are kept candidates; the rest are replaced
    by_pool = fleet.by_pool()
    running: dict[int, list[model.FleetInstance]] = {}
    not_eligible: list[model.FleetInstance] = []
    for pool in sorted(by_pool):
        i = index.get(pool)
        if i is not None:
            c.keep_running(i, len(by_pool[pool]))
        if i is None or c.why_out[i] is not None:
            not_eligible.extend(by_pool[pool])
        else:
            running[i] = hysteresis.newest_first(by_pool[pool])
    elig = c.eligible()
    split = cand_mod.OnDemandSplit.of(policy)
    slack = cand_mod.on_demand_slack(split, c.w[elig][c.is_od[elig]])

    sub = cand_mod.prune(policy, c, elig, set(running)) if options.prune else elig
    stats = plan_mod.PlanStats(len(c.pools), len(elig), len(sub))
    pruned = set(elig.tolist()) - set(sub.tolist())

    spec = milp_spec(policy, c, sub, split, slack, options)
    scaled = _scale_in(policy, c, running, split, spec)
    kept = {i: len(v) for i, v in scaled.items() if v}
    fresh = milp.solve(spec)
    binding: tuple[explain.Binding, str] | None = None
    outcome: plan_mod.Outcome = "Optimal" if fresh.status == "optimal" else "Feasible"
    if fresh.status == "infeasible":
        over_eligible = milp_spec(policy, c, elig, split, slack, options)
        binding = explain.diagnose(policy, c, elig, over_eligible, spec, split)
        if binding[0] is explain.Binding.CAPACITY:
            # spot pools out of capacity: on-demand stands in for the spot part
            relaxed = on_demand_fallback(spec)
            solved = milp.solve(relaxed)
            if solved.status != "infeasible":
                spec, fresh, binding = relaxed, solved, None
                outcome = "Optimal" if solved.status == "optimal" else "Feasible"
        floor = degraded_floor(policy, binding[0] if binding else None)
        if fresh.status == "infeasible" and floor is not None:
            spec = replace(spec, capacity_min=floor, capacity_goal=policy.target)
            fresh = milp.solve(spec)
        if fresh.status == "infeasible":
            assert binding is not None
            return _infeasible(policy, fleet, binding, c, stats)
        if binding is not None:
            outcome = "Degraded"

    chosen = fresh
    notes: tuple[str, ...] = ()
    if kept:
        left = max(0, policy.max_replacements_per_hour - fleet.replacements_last_hour)
        fast = options.fast_path and outcome != "Degraded"
        running_od = sum(float(c.w[i]) * n for i, n in kept.items() if c.is_od[i])
        if running_od > split.required(policy.target) + slack + 1e-9:
            # on-demand runs in place of spot (a fallback): moving it back to spot is a
            # move like any other (churn limit, minSavingsPercent), never a forced one
            spec = on_demand_fallback(spec)
        settled = hysteresis.settle(
            policy,
            c,
            kept,
            fresh,
            spec,
            left,
            fast=fast,
            split=split,
            outlook=lambda: outlook_mod.expected_prices(c, market, now, policy.horizon_hours),
        )
        if settled.solution is None:
            return _infeasible(policy, fleet, explain.churn(policy, left), c, stats)
        chosen, notes = settled.solution, settled.notes
        if outcome != "Degraded" and (
            chosen.objective > fresh.objective * (1 + milp.MIP_REL_GAP) + 1e-9
        ):
            outcome = "Feasible"
    plan = _build(
        policy, c, chosen.x, running, scaled, not_eligible, outcome, binding, stats, notes, pruned
    )
    held = plan.capacity
    extra = plan.capacity_by_market.get(model.Market.ON_DEMAND, 0.0) - (
        split.required(min(held, policy.target)) + slack
    )
    return replace(plan, on_demand_fallback=extra) if extra > 1e-9 else plan


def on_demand_fallback(spec: milp.MilpSpec) -> milp.MilpSpec:
    """``spec`` with on-demand capacity allowed above the split (in place of spot that
    is out of capacity); the split's lower bound still holds."""
    return replace(spec, on_demand=replace(spec.on_demand, slack=math.inf))


def degraded_floor(policy: model.Policy, binding: explain.Binding | None) -> float | None:
    """The least capacity a degraded plan may hold (it holds as much as it can up to the
    target), or None when a shortfall is not acceptable: ``capacity.min`` below the
    target; with the budget binding and no ``min``, down to nothing (the budget is a
    ceiling, the fleet holds the most it allows)."""
    if policy.min_capacity is not None and policy.min_capacity < policy.target:
        return float(policy.min_capacity)
    if binding is explain.Binding.BUDGET:
        return 0.0
    return None


def _scale_in(
    policy: model.Policy,
    c: cand_mod.Candidates,
    running: dict[int, list[model.FleetInstance]],
    split: cand_mod.OnDemandSplit,
    spec: milp.MilpSpec,
) -> dict[int, list[model.FleetInstance]]:
    """The running instances left after scale-in (candidate index -> newest first).

    Above the target, the cheapest subset of what runs that meets every constraint
    (the fresh MILP with each running pool capped at its count and nothing else
    allowed): terminating to it launches nothing, so it is scale-in, not a move, and
    spends no churn budget. Greedy removal (:func:`hysteresis.scale_in`) stops where
    one removal would break the share cap or ``minPools`` even when a set of removals
    would not (a fleet at 200 vCPU sent to 32 with minPools 4 and a 30 % share cap
    stopped at 174); it stays as the fallback when the subset MILP finds nothing."""
    cap = sum(float(c.w[i]) * len(v) for i, v in running.items())
    if cap <= policy.target + 1e-9 or not running:
        return {i: list(v) for i, v in running.items()}
    ids = spec.ids
    caps = {int(i): len(running.get(int(i), [])) for i in ids}
    if policy.target > 0 and all(int(i) in caps for i in running):
        subset = milp.solve(dataclasses.replace(spec, upper=caps))
        if subset.status != "infeasible":
            return {i: v[len(v) - subset.x.get(i, 0) :] for i, v in running.items()}
    return hysteresis.scale_in(policy, c, running, split)


def _infeasible(
    policy: model.Policy,
    fleet: model.Fleet,
    binding: tuple[explain.Binding, str],
    c: cand_mod.Candidates | None = None,
    stats: plan_mod.PlanStats | None = None,
) -> plan_mod.Plan:
    """The Infeasible plan: the current fleet as targets, no actions, ``binding``."""
    kind, reason = binding
    counts = fleet.count_by_pool()
    rejected: tuple[plan_mod.RejectedPool, ...] = ()
    if c is not None:
        rejected = explain.rejected(policy, c, {}, reason_default=reason)
    return plan_mod.Plan(
        outcome="Infeasible",
        unit=policy.unit,
        target=policy.target,
        targets=dict(sorted(counts.items())),
        binding_constraint=reason,
        binding=kind,
        explanation=plan_mod.Explanation(rejected=rejected, notes=(reason,)),
        stats=stats or plan_mod.PlanStats(),
    )


def _build(
    policy: model.Policy,
    c: cand_mod.Candidates,
    x: Mapping[int, int],
    running: Mapping[int, list[model.FleetInstance]],
    scaled: Mapping[int, list[model.FleetInstance]],
    not_eligible: list[model.FleetInstance],
    outcome: plan_mod.Outcome,
    binding: tuple[explain.Binding, str] | None,
    stats: plan_mod.PlanStats,
    notes: tuple[str, ...],
    pruned: set[int],
) -> plan_mod.Plan:
    """The Plan holding ``x`` (candidate index -> count): launches, terminations
    (not-eligible, scale-in, rebalance: newest first), totals and the explanation."""
    launches: list[plan_mod.Launch] = []
    terms: list[plan_mod.Terminate] = []
    for inst in sorted(not_eligible, key=lambda s: (s.pool, s.instance_id)):
        terms.append(plan_mod.Terminate(inst.instance_id, inst.pool, "not-eligible"))
    for i in sorted(set(x) | set(running), key=lambda i: c.pools[i]):
        want = x.get(i, 0)
        have = running.get(i, [])
        if want > len(have):
            launches.append(plan_mod.Launch(c.pools[i], want - len(have)))
        elif want < len(have):
            after_scale_in = len(scaled.get(i, []))
            # instances are newest first; scale-in removed the first len(have)-after ones
            for k, inst in enumerate(have[: len(have) - want]):
                reason: plan_mod.TerminateReason = (
                    "scale-in" if k < len(have) - after_scale_in else "rebalance"
                )
                terms.append(plan_mod.Terminate(inst.instance_id, inst.pool, reason))
    cap = {m: 0.0 for m in model.Market}
    cost = exp = od_eq = 0.0
    for i, n in x.items():
        cap[c.pools[i].market] += float(c.w[i]) * n
        cost += float(c.price[i]) * n
        exp += float(c.cost[i]) * n
        od_eq += float(c.od[i]) * n
    total = sum(cap.values())
    if not launches and not terms:
        outcome = "NoChange" if outcome != "Degraded" else outcome
    return plan_mod.Plan(
        outcome=outcome,
        unit=policy.unit,
        target=policy.target,
        targets={c.pools[i]: n for i, n in sorted(x.items(), key=lambda kv: c.pools[kv[0]])},
        launches=tuple(launches),
        terminations=tuple(terms),
        cost_per_hour=cost,
        expected_cost_per_hour=exp,
        on_demand_equivalent_per_hour=od_eq,
        capacity_by_market={m: v for m, v in cap.items() if v > 0},
        explanation=explain.explanation(policy, c, x, notes, pruned, total),
        binding_constraint=binding[1] if binding else None,
        binding=binding[0] if binding else None,
        stats=stats,
    )

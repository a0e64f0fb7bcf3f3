"""Move payback: the realised saving of each voluntary move over the horizon minus its
switching cost, on tiny hand-made price histories (every figure computed by hand)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from spotfleet_engine import backtest, catalog, hysteresis, market, model, plan, strategies
from spotfleet_engine.backtest import interruptions, prices, report
from spotfleet_engine.risk import advisor

T0 = datetime(2021, 1, 1, tzinfo=UTC)
H = 3600
NO_RECLAIMS = interruptions.InterruptionConfig(hazard_scale=0.0, spike_reclaim_probability=0.0)
A = model.Pool("m5.large", "us-east-1a", model.Market.SPOT)
B = model.Pool("m5.large", "us-east-1b", model.Market.SPOT)
POLICY = model.Policy(
    region="us-east-1",
    target=4,  # vCPU: two m5.large
    zones=("us-east-1a", "us-east-1b"),
    requirements=model.Requirements(allowed_types=frozenset({"m5.large"})),
    horizon_hours=2.0,
)
CAT = catalog.load_bundled("us-east-1")
ADV = market.load_bundled_advisor("us-east-1")
SWITCH = hysteresis.SWITCH_HOURS


def _history(paths: dict[str, list[tuple[int, float]]]) -> market.PriceHistory:
    """Price points (seconds after T0, USD/h) of m5.large per zone."""
    return prices.history_from_rows(
        {
            "timestamp": (T0 + timedelta(seconds=s)).isoformat(),
            "availability_zone": zone,
            "instance_type": "m5.large",
            "product_description": "Linux/UNIX",
            "spot_price": f"{p:.4f}",
        }
        for zone, pts in paths.items()
        for s, p in pts
    )


@dataclass(frozen=True)
class _Scripted:
    """Launches ``first`` instances in A at the first decision; at hour 1 terminates
    ``drop`` of them for ``reason`` and launches ``then`` instances in B."""

    first: int = 2
    drop: int = 2
    then: int = 2
    reason: plan.TerminateReason = "rebalance"
    name: str = "spotfleet"
    risk: advisor.AdvisorBandRisk = field(default_factory=advisor.AdvisorBandRisk)

    def decide(self, policy, catalog, market, fleet, risk, now):  # type: ignore[no-untyped-def]
        launches: tuple[plan.Launch, ...] = ()
        terms: tuple[plan.Terminate, ...] = ()
        if now == T0:
            launches = (plan.Launch(A, self.first),)
        elif now == T0 + timedelta(hours=1):
            in_a = [i for i in fleet.instances if i.pool == A][: self.drop]
            terms = tuple(plan.Terminate(i.instance_id, A, self.reason) for i in in_a)
            launches = (plan.Launch(B, self.then),) if self.then else ()
        return plan.Plan(
            "Feasible", policy.unit, policy.target, {A: 2}, launches=launches, terminations=terms
        )


def _run(
    hist: market.PriceHistory,
    strat: _Scripted,
    hours: float = 4.0,
    policy: model.Policy = POLICY,
    baselines: bool = False,
) -> backtest.ReplayResult:
    others = strategies.baselines(advisor.AdvisorBandRisk()) if baselines else []
    return backtest.run(
        policy,
        CAT,
        hist,
        [*others, strat],
        start=T0,
        end=T0 + timedelta(hours=hours),
        advisor=ADV,
        config=NO_RECLAIMS,
    )


# A stays dear (0.20 USD/h), B stays cheap (0.05 USD/h)
STEADY = _history({"us-east-1a": [(0, 0.20)], "us-east-1b": [(0, 0.05)]})
# at 01:10 A falls to 0.05 and B rises to 0.30: the move at 01:00 into B (then 0.10) is
# undone by mean reversion
REVERTING = _history(
    {
        "us-east-1a": [(0, 0.20), (H + 600, 0.05)],
        "us-east-1b": [(0, 0.10), (H + 600, 0.30)],
    }
)


@pytest.mark.parametrize(
    ("then", "scale"),
    [(2, 1.0), (4, 0.5)],  # 4 launched for 2 moved: the replacement is scaled by M/L = 1/2
)
def test_a_move_from_a_dear_pool_to_a_cheap_one_pays_back(then: int, scale: float) -> None:
    res = _run(STEADY, _Scripted(then=then))
    s = res.by_name("spotfleet")
    # window [01:00, 03:00] (horizon 2 h): keeping 2 in A vs the launches in B
    kept = 2 * 0.20 * 2.0
    replacement = scale * then * 0.05 * 2.0
    switching = scale * SWITCH * then * 0.05
    expected = kept - replacement - switching
    assert expected == pytest.approx(0.5)
    assert s.voluntary_terminations == 2
    assert s.moves == 1 and s.moves_paid_back == 1
    assert s.move_paybacks == pytest.approx([expected], abs=1e-12)
    assert s.move_payback_usd == pytest.approx(expected, abs=1e-12)


def test_a_window_cut_by_the_end_of_the_replay_still_counts() -> None:
    # horizon 24 h, replay ends at 04:00: the window is [01:00, 04:00]
    res = _run(STEADY, _Scripted(), policy=replace(POLICY, horizon_hours=24.0))
    s = res.by_name("spotfleet")
    expected = 2 * 0.20 * 3.0 - 2 * 0.05 * 3.0 - SWITCH * 2 * 0.05
    assert s.moves == 1 and s.moves_paid_back == 1
    assert s.move_payback_usd == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.8)


def test_a_move_into_a_pool_that_gets_dearer_right_after_does_not_pay_back() -> None:
    res = _run(REVERTING, _Scripted())
    s = res.by_name("spotfleet")
    # window [01:00, 03:00]; both prices change at 01:10 (1/6 h in)
    kept = 2 * (0.20 / 6 + 0.05 * 11 / 6)
    replacement = 2 * (0.10 / 6 + 0.30 * 11 / 6)
    switching = SWITCH * 2 * 0.10  # B's price at 01:00
    expected = kept - replacement - switching
    assert expected == pytest.approx(-1.083333333, abs=1e-8)
    assert s.moves == 1 and s.moves_paid_back == 0
    assert s.move_payback_usd == pytest.approx(expected, abs=1e-12)
    row = next(r for r in report.rows(res) if r["strategy"] == "spotfleet")
    assert row["moves_paid_back_pct"] == 0.0
    assert row["move_payback_usd"] == pytest.approx(round(expected, 2))


def test_a_scale_in_is_not_a_move_and_a_move_that_launches_nothing_counts() -> None:
    scale_in = _run(STEADY, _Scripted(first=3, drop=1, then=0, reason="scale-in"))
    s = scale_in.by_name("spotfleet")
    assert s.voluntary_terminations == 0
    assert s.moves == 0 and s.moves_paid_back == 0 and s.move_payback_usd == 0.0
    assert s.move_paybacks == []
    row = next(r for r in report.rows(scale_in) if r["strategy"] == "spotfleet")
    assert row["moves"] == 0 and row["moves_paid_back_pct"] is None
    assert row["move_payback_usd"] == 0.0
    # the same termination as a rebalance with no launch: replacement and switching 0
    gone = _run(STEADY, _Scripted(first=3, drop=1, then=0, reason="rebalance"))
    g = gone.by_name("spotfleet")
    assert g.moves == 1 and g.moves_paid_back == 1
    assert g.move_payback_usd == pytest.approx(1 * 0.20 * 2.0, abs=1e-12)


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "backtest.py"
    spec = importlib.util.spec_from_file_location("bench_backtest_under_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_report_rows_and_the_bench_table_carry_the_move_columns() -> None:
    res = _run(STEADY, _Scripted(), baselines=True)
    rows = {r["strategy"]: r for r in report.rows(res)}
    assert rows["spotfleet"]["moves"] == 1
    assert rows["spotfleet"]["moves_paid_back_pct"] == 100.0
    assert rows["spotfleet"]["move_payback_usd"] == pytest.approx(0.5)
    assert {k: rows["oracle"][k] for k in ("moves", "moves_paid_back_pct", "move_payback_usd")} == {
        "moves": None,
        "moves_paid_back_pct": None,
        "move_payback_usd": None,
    }
    assert report.to_dict(res)["strategies"] == report.rows(res)
    bench = _bench()
    text = bench.table("tiny", res)
    head = text.splitlines()[1]
    assert head.split()[-5:] == ["moves", "paid", "%", "payback", "$"]
    sf_line = next(line for line in text.splitlines() if line.startswith("spotfleet "))
    assert sf_line.split()[-3:] == ["1", "100.0", "+0.50"]
    oracle_line = next(line for line in text.splitlines() if line.startswith("oracle "))
    assert oracle_line.split()[-3:] == ["-", "-", "-"]
    g = bench.goals(res)
    assert g["spotfleet_moves"] == 1
    assert g["spotfleet_moves_paid_back_pct"] == 100.0
    assert g["spotfleet_move_payback_usd"] == pytest.approx(0.5)
    assert g["moves_paid_back_ge_80pct"] is True and g["move_payback_sum_positive"] is True
    bad = bench.goals(_run(REVERTING, _Scripted(), baselines=True))
    assert bad["spotfleet_moves_paid_back_pct"] == 0.0
    assert bad["moves_paid_back_ge_80pct"] is False
    assert bad["move_payback_sum_positive"] is False


def test_bench_seed_means_average_moves_and_payback() -> None:
    bench = _bench()
    names = ["lowest-price", "capacity-optimized", "price-capacity-optimized", "diversified"]

    def seed(moves: int, pay: float) -> dict[str, object]:
        row = {"penalised_cost": 10.0, "interruptions": 1.0, "moves": 0, "move_payback_usd": 0.0}
        sf = row | {"penalised_cost": 9.0, "moves": moves, "move_payback_usd": pay}
        oracle = row | {"moves": None, "moves_paid_back_pct": None, "move_payback_usd": None}
        return {n: dict(row) for n in names} | {"spotfleet": sf, "oracle": oracle, "goals": {}}

    mean = bench.seed_means({0: seed(3, 1.5), 1: seed(5, -0.5)})
    assert mean["spotfleet"]["moves"] == 4.0
    assert mean["spotfleet"]["move_payback_usd"] == pytest.approx(0.5)
    assert mean["oracle"]["moves"] is None and mean["oracle"]["move_payback_usd"] is None


def test_the_cli_table_shows_the_move_columns_untruncated() -> None:
    import io

    from rich.console import Console

    from spotfleet_cli import consoles
    from spotfleet_cli.commands import backtest as cli

    res = _run(STEADY, _Scripted(), baselines=True)
    buf = io.StringIO()
    Console(file=buf, width=consoles.PIPE_WIDTH).print(cli.render_table(res))
    text = buf.getvalue()
    assert "…" not in text
    for head in ("moves", "paid back %", "move payback $"):
        assert head in text

    def cells(name: str) -> list[str]:
        line = next(x for x in text.splitlines() if x.startswith(f"│ {name} "))
        return [c.strip() for c in line.split("│")]

    assert cells("spotfleet")[-4:-1] == ["1", "100.0", "+0.50"]
    assert cells("oracle")[-4:-1] == ["-", "-", "-"]
    assert cells("lowest-price")[-4:-1] == ["0", "-", "+0.00"]


@pytest.mark.parametrize("history", ["2015", "2023"])
def test_the_bench_replays_the_other_bundled_histories_with_policies_fitted_to_them(
    history: str,
) -> None:
    bench = _bench()
    h = bench.HISTORIES[history]
    hist = h.load()
    assert hist.start <= h.start < h.end <= hist.end
    # the standard policies have no eligible pool there (why the bench fits its own)
    cat = catalog.load_bundled("us-east-1")
    grid = prices.decision_grid(h.start, h.start + timedelta(hours=2), timedelta(hours=1))
    for std in bench.POLICIES.values():
        assert not prices.build_universe(std, cat, hist, grid).spot
    (name,) = h.policies
    u = prices.build_universe(h.policies[name], cat, hist, grid)
    assert len({p.zone for p in u.spot}) >= 2 and len(u.spot) >= h.policies[name].min_pools
    res, _wall = bench.run_one(name, h.policies[name], h.start, h.start + timedelta(days=2),
                               history=history)  # fmt: skip
    rows = {r["strategy"]: r for r in report.rows(res)}
    assert set(rows) >= {"lowest-price", "capacity-optimized", "spotfleet", "oracle", "on-demand"}
    assert rows["spotfleet"]["cost"] > 0
    assert rows["oracle"]["penalised_cost"] <= rows["spotfleet"]["penalised_cost"] + 1e-6

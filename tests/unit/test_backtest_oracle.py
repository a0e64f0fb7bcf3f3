"""The hindsight oracle (``backtest.oracle``) on its own: its fast solver equals HiGHS."""

from __future__ import annotations

import numpy as np
import pytest

from spotfleet_engine import model
from spotfleet_engine.backtest import oracle


def test_oracle_greedy_equals_the_lp() -> None:
    rng = np.random.default_rng(0)
    pools = [model.Pool(f"t{i}.large", "z", model.Market.SPOT) for i in range(12)]
    od = [model.Pool(f"t{i}.large", z, model.Market.ON_DEMAND) for i in range(4) for z in "abc"]
    orc = oracle.HindsightOracle()
    for trial in range(60):
        w = {f"t{i}.large": float(rng.choice([2, 4, 8, 16])) for i in range(12)}
        odp = {t: float(rng.uniform(0.05, 1.0)) * v for t, v in w.items()}
        bill = [odp[p.instance_type] * float(rng.uniform(0.1, 1.2)) for p in pools]
        reclaim = [b * float(rng.uniform(0, 1)) if rng.uniform() < 0.3 else None for b in bill]
        pol = model.Policy(
            region="r",
            target=float(rng.integers(8, 200)),
            on_demand_base=float(rng.choice([0, 4, 16])),
            on_demand_percentage_above_base=float(rng.choice([0, 10, 50])),
            max_pool_share_pct=float(rng.choice([10, 25, 50, 100])),
        )
        args = (pol, 1.0, pools, bill, reclaim, od, odp.__getitem__, w.__getitem__, 1.0, 0.3)
        g = orc.interval(*args)
        lp = orc.interval(*args, exact_lp=True)
        assert g.cost == pytest.approx(lp.cost, rel=1e-6, abs=1e-9), trial


def test_the_oracle_keeps_the_policys_on_demand_share() -> None:
    """On-demand costs half of spot this interval, yet the oracle may hold no more
    on-demand than the policy's split allows (one instance of rounding above it),
    like every strategy that obeys the policy: spot for the rest."""
    pools = [model.Pool(f"t{i}.large", "z", model.Market.SPOT) for i in range(4)]
    od = [model.Pool(f"t{i}.large", z, model.Market.ON_DEMAND) for i in range(4) for z in "ab"]
    w = {f"t{i}.large": 2.0 for i in range(4)}
    odp = {t: 0.1 for t in w}  # 0.05 USD per unit-hour
    bill = [0.2] * 4  # spot: 0.10 USD per unit-hour, no reclaim
    orc = oracle.HindsightOracle()
    for base, pct in ((0.0, 0.0), (8.0, 20.0), (0.0, 50.0), (40.0, 0.0)):
        pol = model.Policy(
            region="r",
            target=40.0,
            on_demand_base=base,
            on_demand_percentage_above_base=pct,
            max_pool_share_pct=50.0,
        )
        for exact in (False, True):
            iv = orc.interval(
                pol, 1.0, pools, bill, [None] * 4, od, odp.__getitem__, w.__getitem__, 1.0, 0.15,
                exact_lp=exact,
            )  # fmt: skip
            on_demand = sum(u for p, u in iv.units.items() if p.market is model.Market.ON_DEMAND)
            capacity = sum(iv.units.values()) + iv.shortfall_unit_h
            q = pct / 100.0
            allowed = base * (1 - q) + q * capacity + (2.0 if base or pct else 0.0)
            assert on_demand <= allowed + 1e-6, (base, pct, exact, on_demand, allowed)
            assert on_demand >= base * (1 - q) + q * 40.0 - 1e-6  # and at least the split
            assert iv.shortfall_unit_h == pytest.approx(0.0, abs=1e-9)  # spot is cheaper

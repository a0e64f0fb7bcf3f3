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

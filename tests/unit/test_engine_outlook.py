"""outlook: the reversion estimate, and the USD test of a move pricing pools by it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotfleet_engine import candidates, catalog, market, model, outlook, planner
from tests.unit.test_engine_planner import PoolRisk

NOW = datetime(2021, 4, 15, 12, tzinfo=UTC)
N = outlook.LOOKBACK_HOURS + 1


def _series(steps: dict[int, float], start: float = 0.040) -> np.ndarray:
    """Hourly prices oldest first (index 0 = now - 72 h), changing at the given indices."""
    s = np.full(N, start)
    for k, p in sorted(steps.items()):
        s[k:] = p
    return s


def test_a_spike_that_comes_back_is_reversion_and_a_step_that_stays_is_not() -> None:
    flat = _series({})
    assert outlook.persistence([flat, flat], 24) == 1.0  # no variation: no evidence
    back = _series({32: 0.050, 34: 0.040})  # up for 2 h, 40 h ago, then back
    beta_back = outlook.persistence([flat, back], 24)
    assert 0.0 <= beta_back < 0.2
    stays = _series({32: 0.050})
    assert outlook.persistence([flat, stays], 24) == pytest.approx(1.0)  # it stays
    with_nan = back.copy()
    with_nan[0] = np.nan  # a pool without the whole lookback is skipped
    assert outlook.persistence([with_nan], 24) == 1.0


def test_hourly_samples_the_price_in_force_at_each_hour() -> None:
    pts = [
        market.PricePoint(NOW - timedelta(hours=2, minutes=30), 0.1),
        market.PricePoint(NOW - timedelta(minutes=30), 0.2),
    ]
    s = outlook.hourly(pts, NOW.timestamp(), 4)
    assert np.isnan(s[0])  # now - 3 h: before the first point
    assert s[1:].tolist() == [0.1, 0.1, 0.2]


def _market(c_steps: Sequence[tuple[float, float]]) -> market.MarketSnapshot:
    """c5.large in three zones: 1a steady at $0.040, 1b at $0.040 until it drops to $0.030
    now, 1c at $0.040 with the changes ``c_steps`` ((hours ago, price), oldest first)."""
    old = NOW - timedelta(hours=80)
    pp = market.PricePoint
    return market.MarketSnapshot(
        "us-east-1",
        NOW,
        {
            ("c5.large", "us-east-1a"): [pp(old, 0.040)],
            ("c5.large", "us-east-1b"): [pp(old, 0.040), pp(NOW, 0.030)],
            ("c5.large", "us-east-1c"): [pp(old, 0.040)]
            + [pp(NOW - timedelta(hours=h), p) for h, p in c_steps],
        },
    )


@pytest.mark.parametrize(
    ("c_steps", "moves"),
    [
        (((40.0, 0.050), (38.0, 0.040)), False),  # prices here come back: a drop will too
        (((40.0, 0.050),), True),  # prices here stay where they move
    ],
)
def test_a_move_into_a_pool_that_just_dropped_waits_where_prices_come_back(
    c_steps: Sequence[tuple[float, float]], moves: bool
) -> None:
    """A move into 1b, 25 % cheaper since this hour, passes minSavingsPercent at today's
    prices. Where the pools' own last days show a move coming back within hours (1c's
    spike), 1b is expected to cost about $0.039 over the horizon, which does not pay for
    the switch, so the fleet stays; where 1c's move stayed, it moves (before the outlook
    it moved in both markets)."""
    cat = catalog.load_bundled().restricted_to({"c5.large"})
    pol = model.Policy(
        region="us-east-1",
        target=64,
        unit=model.CapacityUnit.VCPU,
        requirements=model.Requirements(allowed_types=frozenset({"c5.large"})),
        max_pool_share_pct=100.0,
        max_replacements_per_hour=100,
        objective="lowestCost",
    )
    here = model.Pool("c5.large", "us-east-1a", model.Market.SPOT)
    there = model.Pool("c5.large", "us-east-1b", model.Market.SPOT)
    fleet = model.Fleet(
        tuple(model.FleetInstance(f"i-{k}", here, NOW - timedelta(hours=k + 1)) for k in range(32))
    )
    snap = _market(c_steps)
    c = candidates.build(pol, cat, snap, PoolRisk({}), NOW)
    expect = outlook.expected_prices(c, snap, NOW, pol.horizon_hours)
    i_there = c.pools.index(there)
    if moves:
        assert expect[i_there] == pytest.approx(0.030)
    else:
        assert 0.038 < expect[i_there] < 0.040
    assert expect[c.pools.index(here)] == pytest.approx(0.040)
    p = planner.decide(pol, cat, snap, fleet, PoolRisk({}), NOW)
    gone = [t for t in p.terminations if t.reason == "rebalance"]
    if moves:
        assert len(gone) == 32 and p.targets == {there: 32}
        assert any("rebalance saves" in n for n in p.explanation.notes)
    else:
        assert gone == [] and p.targets == {here: 32}
        assert any("prices at their outlook" in n for n in p.explanation.notes)

"""The combined risk model on the real bundled market: the formula against its two
parts, the short-history rule, on-demand pools, the protocol, and the bundled loader."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from spotfleet_engine import catalog, market, model
from spotfleet_engine.risk import advisor, combined, protocol, xgb

NOW = datetime(2021, 5, 12, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def snap() -> market.MarketSnapshot:
    return market.snapshot_at(market.load_bundled_history(), NOW)


@pytest.fixture(scope="module")
def cat() -> catalog.Catalog:
    return catalog.load_bundled()


@pytest.fixture(scope="module")
def spike() -> xgb.XGBoostRisk:
    return xgb.load_bundled()


def _spot_pools(snap: market.MarketSnapshot, n: int = 200) -> list[model.Pool]:
    keys = sorted(snap.spot_history)[:n]
    return [model.Pool(t, z, model.Market.SPOT) for t, z in keys]


def test_combined_is_one_minus_the_product_of_survivals(
    snap: market.MarketSnapshot, cat: catalog.Catalog, spike: xgb.XGBoostRisk
) -> None:
    pools = _spot_pools(snap)
    risk = combined.CombinedRisk(spike)
    got = risk.interruption_probability(pools, snap, cat, NOW)
    ps = spike.interruption_probability(pools, snap, cat, NOW)
    pb = advisor.AdvisorBandRisk(horizon_hours=spike.horizon_hours).interruption_probability(
        pools, snap, cat, NOW
    )
    assert len(got) == len(pools)
    for g, s, b in zip(got, ps, pb, strict=True):
        assert g == pytest.approx(1.0 - (1.0 - s) * (1.0 - b), rel=1e-12, abs=1e-15)
        assert max(s, b) <= g + 1e-15 <= s + b + 1e-12
    # the band term matters: some pool's combined risk is well above its spike risk
    assert max(g - s for g, s in zip(got, ps, strict=True)) > 1e-3


def test_pools_without_enough_history_get_the_band_alone(
    snap: market.MarketSnapshot, cat: catalog.Catalog, spike: xgb.XGBoostRisk
) -> None:
    pools = _spot_pools(snap, 20)
    young_key = (pools[0].instance_type, pools[0].zone)
    hist = dict(snap.spot_history)
    # keep only the last 6 h of the first pool's history: below the 24 h minimum
    hist[young_key] = (market.PricePoint(NOW - timedelta(hours=6), hist[young_key][-1].price),)
    young = replace(snap, spot_history=hist)
    absent = model.Pool("m5.large", "us-east-1z", model.Market.SPOT)
    risk = combined.CombinedRisk(spike)
    got = risk.interruption_probability([pools[0], absent, pools[1]], young, cat, NOW)
    band = advisor.AdvisorBandRisk(horizon_hours=spike.horizon_hours)
    expect_band = band.interruption_probability([pools[0], absent], young, cat, NOW)
    assert got[0] == pytest.approx(expect_band[0])
    assert got[1] == pytest.approx(expect_band[1])
    # the old pool still combines both terms
    s1 = spike.interruption_probability([pools[1]], young, cat, NOW)[0]
    b1 = band.interruption_probability([pools[1]], young, cat, NOW)[0]
    assert got[2] == pytest.approx(1.0 - (1.0 - s1) * (1.0 - b1))


def test_on_demand_pools_get_zero_and_order_is_kept(
    snap: market.MarketSnapshot, cat: catalog.Catalog, spike: xgb.XGBoostRisk
) -> None:
    spot = _spot_pools(snap, 5)
    od = [model.Pool(p.instance_type, p.zone, model.Market.ON_DEMAND) for p in spot]
    mixed = [x for pair in zip(spot, od, strict=True) for x in pair]
    risk = combined.CombinedRisk(spike)
    got = risk.interruption_probability(mixed, snap, cat, NOW)
    alone = risk.interruption_probability(list(reversed(spot)), snap, cat, NOW)
    assert got[1::2] == [0.0] * 5
    assert got[0::2] == list(reversed(alone))
    assert all(0.0 < p < 1.0 for p in got[0::2])


def test_spike_model_of_the_wrong_length_is_an_error(
    snap: market.MarketSnapshot, cat: catalog.Catalog
) -> None:
    class Short:
        name = "short"
        horizon_hours = 24.0

        def interruption_probability(
            self,
            pools: object,
            market: object,
            catalog: object,
            now: object,
        ) -> list[float]:
            return [0.1]

    risk = combined.CombinedRisk(Short())
    with pytest.raises(ValueError, match="returned 1 for 3 pools"):
        risk.interruption_probability(_spot_pools(snap, 3), snap, cat, NOW)


def test_bundled_combined_model_meets_the_protocol(
    snap: market.MarketSnapshot, cat: catalog.Catalog
) -> None:
    risk = combined.load_bundled()
    assert isinstance(risk, protocol.RiskModel)
    assert risk.horizon_hours == 24.0
    assert "advisor-band" in risk.name and "xgboost" in risk.name.lower()
    pools = _spot_pools(snap)
    got = risk.interruption_probability(pools, snap, cat, NOW)
    # every spot pool carries at least the lowest band's 24 h probability
    floor = advisor.band_probability(0, 24.0)
    assert min(got) >= floor - 1e-15
    assert max(got) <= 1.0
    # deterministic: the same call twice gives the same numbers
    assert risk.interruption_probability(pools, snap, cat, NOW) == got

"""MarketSnapshot's per-policy view and decision inputs."""

from __future__ import annotations

import datetime as dt

from spotfleet_engine import market as market_mod
from spotfleet_engine import model

AT = dt.datetime(2021, 5, 1, tzinfo=dt.UTC)


def snapshot(
    history: dict[tuple[str, str], tuple[market_mod.PricePoint, ...]],
) -> market_mod.MarketSnapshot:
    return market_mod.MarketSnapshot(
        region="us-east-1",
        observed_at=AT,
        spot_history=history,
        advisor={"m5.large": market_mod.AdvisorEntry(1, 60.0)},
    )


def test_a_view_shares_the_pool_index_and_carries_the_policys_view() -> None:
    h = (market_mod.PricePoint(AT, 0.03),)
    snap = snapshot({("m5.large", "us-east-1a"): h, ("c5.large", "us-east-1b"): h})
    pools = snap.spot_pools()
    dry = model.Pool("m5.large", "us-east-1a", model.Market.SPOT)
    view = snap.with_view(frozenset({dry}), {dry: 0.3})
    assert view.spot_pools() is pools  # computed once per snapshot, not once per policy
    assert view.unavailable == {dry} and view.penalties == {dry: 0.3}
    assert snap.unavailable == frozenset() and view.spot_history is snap.spot_history


def test_inputs_change_only_with_the_types_asked_about() -> None:
    m5 = (market_mod.PricePoint(AT, 0.03),)
    c5 = (market_mod.PricePoint(AT, 0.04),)
    a = snapshot({("m5.large", "us-east-1a"): m5, ("c5.large", "us-east-1a"): c5})
    moved = (*c5, market_mod.PricePoint(AT + dt.timedelta(hours=1), 0.05))
    b = snapshot({("m5.large", "us-east-1a"): m5, ("c5.large", "us-east-1a"): moved})
    assert a.inputs_for(["m5.large"]) == b.inputs_for(["m5.large"])
    assert a.inputs_for(["m5.large", "c5.large"]) != b.inputs_for(["m5.large", "c5.large"])
    assert a.inputs_for(["r5.large"]) == ((("r5.large", None, None)),)

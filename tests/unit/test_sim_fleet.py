"""Allocation strategies of the stand-in cloud's instant fleets (pure)."""

from __future__ import annotations

import pytest

from spotfleet_sim import fleet


def _cand(i: int, zone: str, spot: float | None, score: int = 5, **kw: object) -> fleet.Candidate:
    return fleet.Candidate(
        index=i,
        template_spec={},
        override={},
        instance_type=str(kw.pop("itype", "m5.large")),
        zone=zone,
        subnet_id=None,
        image_id="ami-1",
        spot_price=spot,
        score=score,
        **kw,  # type: ignore[arg-type]
    )


POOLS = [
    _cand(0, "a", 0.050, score=9),
    _cand(1, "b", 0.030, score=6),
    _cand(2, "c", 0.040, score=9),
    _cand(3, "d", None, score=3),
]


def never(_: fleet.Candidate) -> None:
    return None


def test_lowest_price_fills_the_cheapest_pool_and_unknown_prices_go_last() -> None:
    assert [c.zone for c in fleet.order(POOLS, fleet.SPOT, "lowest-price")] == ["b", "c", "a", "d"]
    alloc = fleet.allocate(POOLS, fleet.SPOT, "lowest-price", 3, never)
    assert [(c.zone, n) for c, n in alloc.launches] == [("b", 3)]
    assert alloc.errors == [] and alloc.units == 3


def test_lowest_price_over_n_pools_spreads_round_robin() -> None:
    alloc = fleet.allocate(POOLS, fleet.SPOT, "lowest-price", 5, never, pools_to_use=2)
    assert [(c.zone, n) for c, n in alloc.launches] == [("b", 3), ("c", 2)]


def test_capacity_strategies_rank_by_score() -> None:
    assert [c.zone for c in fleet.order(POOLS, fleet.SPOT, "capacity-optimized")] == [
        "a",
        "c",
        "b",
        "d",
    ]
    # price-capacity-optimized: best score first, the cheaper of equals wins
    assert [c.zone for c in fleet.order(POOLS, fleet.SPOT, "price-capacity-optimized")] == [
        "c",
        "a",
        "b",
        "d",
    ]


def test_diversified_uses_every_usable_pool() -> None:
    alloc = fleet.allocate(POOLS, fleet.SPOT, "diversified", 6, never)
    assert [(c.zone, n) for c, n in alloc.launches] == [("a", 2), ("b", 2), ("c", 1), ("d", 1)]


def test_refused_pools_are_reported_and_skipped() -> None:
    def refuse(c: fleet.Candidate) -> tuple[str, str] | None:
        return ("InsufficientInstanceCapacity", c.zone) if c.zone in ("b", "c") else None

    alloc = fleet.allocate(POOLS, fleet.SPOT, "lowest-price", 2, refuse)
    assert [(c.zone, code) for c, code, _ in alloc.errors] == [
        ("b", "InsufficientInstanceCapacity"),
        ("c", "InsufficientInstanceCapacity"),
    ]
    assert [(c.zone, n) for c, n in alloc.launches] == [("a", 2)]
    nothing = fleet.allocate(POOLS, fleet.SPOT, "diversified", 2, lambda c: ("X", "no"))
    assert nothing.launches == [] and len(nothing.errors) == 4 and nothing.units == 0


def test_weights_count_units_not_instances() -> None:
    pools = [_cand(0, "a", 0.2, weight=4.0), _cand(1, "b", 0.1, weight=1.0)]
    # per unit, a costs 0.05 and b 0.10: a wins, and 10 units take 3 instances of weight 4
    alloc = fleet.allocate(pools, fleet.SPOT, "lowest-price", 10, never)
    assert [(c.zone, n) for c, n in alloc.launches] == [("a", 3)]
    assert alloc.units == 12


def test_on_demand_strategies() -> None:
    pools = [
        _cand(0, "a", None, on_demand_price=0.2, priority=2.0),
        _cand(1, "b", None, on_demand_price=0.1, priority=1.0),
        _cand(2, "c", None, on_demand_price=0.3, priority=0.0),
    ]
    assert fleet.order(pools, fleet.ON_DEMAND, "lowest-price")[0].zone == "b"
    assert fleet.order(pools, fleet.ON_DEMAND, "prioritized")[0].zone == "c"


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="allocation strategy"):
        fleet.order(POOLS, fleet.SPOT, "cheapest-please")

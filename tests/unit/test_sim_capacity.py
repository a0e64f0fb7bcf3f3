"""The capacity book (queries never change it; scheduled faults fire on request) and
allocation under pool limits and account quotas (pure)."""

from __future__ import annotations

import pytest

from spotfleet_sim import capacity, fleet

POOL = capacity.PoolKey("m5.large", "us-east-1a", fleet.SPOT)
OTHER = capacity.PoolKey("m5.large", "us-east-1b", fleet.SPOT)


def test_queries_do_not_change_the_book() -> None:
    book = capacity.CapacityBook()
    book.schedule(capacity.DRY_NEXT_SPOT, 2)
    book.limit(OTHER, 3)
    before = (book.unavailable(), book.limits(), book.scheduled())
    for _ in range(3):
        assert book.room(POOL) is None and not book.is_dry(POOL)
        assert book.room(OTHER) == 3
        assert "us-east-1a" in book.zones_with("m5.large", fleet.SPOT, "us-east-1")
        assert "us-east-1a" in book.ice_message(OTHER, "us-east-1")
    assert (book.unavailable(), book.limits(), book.scheduled()) == before


def test_a_scheduled_fault_fires_once_per_request_it_is_armed_for() -> None:
    book = capacity.CapacityBook()
    assert not book.due(capacity.DRY_NEXT_SPOT)
    book.schedule(capacity.DRY_NEXT_SPOT, 2)
    assert [book.due(capacity.DRY_NEXT_SPOT) for _ in range(3)] == [True, True, False]
    assert book.scheduled() == {capacity.DRY_NEXT_SPOT: 0}
    with pytest.raises(ValueError):
        book.schedule("dry_next_lunch", 1)


def test_limits_count_down_and_marks_lift_them() -> None:
    book = capacity.CapacityBook()
    book.limit(POOL, 2)
    book.take(POOL, 1)
    assert book.room(POOL) == 1
    book.take(POOL, 5)
    assert book.room(POOL) == 0 and book.is_dry(POOL)
    assert "us-east-1a" not in book.zones_with("m5.large", fleet.SPOT, "us-east-1")
    book.take(OTHER, 4)  # unlimited pools do not count
    assert book.room(OTHER) is None
    book.mark([POOL], available=True)
    assert book.room(POOL) is None and book.limits() == {}
    book.mark([POOL], available=False)
    assert book.unavailable() == [POOL] and book.room(POOL) == 0
    book.clear()
    assert book.unavailable() == [] and book.room(POOL) is None


def test_pools_from_json_expands_any_market() -> None:
    keys = capacity.pools_from_json([{"instance_type": "c5.large", "zone": "z", "market": "*"}])
    assert [k.market for k, _e in keys] == [fleet.SPOT, fleet.ON_DEMAND]
    with pytest.raises(ValueError):
        capacity.pools_from_json([{"instance_type": "c5.large", "zone": "z", "market": "x"}])
    with pytest.raises(ValueError):
        capacity.pools_from_json([{"zone": "z"}])


def _cand(i: int, zone: str, price: float, itype: str = "m5.large") -> fleet.Candidate:
    return fleet.Candidate(i, {}, {}, itype, zone, None, "ami-1", spot_price=price)


def _never(_: fleet.Candidate) -> None:
    return None


def test_a_pool_that_runs_short_is_filled_part_way_and_reported() -> None:
    pools = [_cand(0, "a", 0.01), _cand(1, "b", 0.02), _cand(2, "c", 0.03)]
    caps = fleet.Caps(room=lambda c: {"a": 2, "b": 1}.get(c.zone), short=lambda c: ("ICE", c.zone))
    alloc = fleet.allocate(pools, fleet.SPOT, "lowest-price", 5, _never, caps=caps)
    assert [(c.zone, n) for c, n in alloc.launches] == [("a", 2), ("b", 1), ("c", 2)]
    assert [(c.zone, code) for c, code, _m in alloc.errors] == [("a", "ICE"), ("b", "ICE")]
    assert alloc.units == 5


def test_a_quota_stops_each_pool_whose_next_instance_would_exceed_it() -> None:
    pools = [_cand(0, "a", 0.01, "m5.2xlarge"), _cand(1, "b", 0.02, "m5.large")]
    cost = {"m5.2xlarge": 8.0, "m5.large": 2.0}
    caps = fleet.Caps(
        quota_left=10.0, quota_cost=lambda c: cost[c.instance_type], quota_error=("Q", "q")
    )
    alloc = fleet.allocate(pools, fleet.SPOT, "lowest-price", 4, _never, caps=caps)
    assert [(c.zone, n) for c, n in alloc.launches] == [("a", 1), ("b", 1)]
    assert [(c.zone, code) for c, code, _m in alloc.errors] == [("a", "Q"), ("b", "Q")]
    assert alloc.units == 2
    # without caps: the old behaviour (one pool, all of it)
    free = fleet.allocate(pools, fleet.SPOT, "lowest-price", 4, _never)
    assert [(c.zone, n) for c, n in free.launches] == [("a", 4)] and free.errors == []

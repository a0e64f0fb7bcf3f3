"""The stand-in cloud's timeline: the reported clock never passes the wall clock, and the
history<->reported map stays consistent through speed changes, jumps and re-maps."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from spotfleet_sim import timeline

START = datetime(2021, 4, 1, tzinfo=UTC)


def _consistent(t: timeline.Timeline) -> timeline.Instant:
    """Check the invariants at this instant; returns it."""
    view = t.view()
    now = view.now
    assert now.reported <= time.time()
    # the reported now maps onto the market's now and back
    assert view.to_history(now.reported) == pytest.approx(now.history, abs=1e-3)
    assert view.to_reported(now.history) == pytest.approx(now.reported, abs=1e-6)
    # monotone over the past week of history, and never after now
    points = [now.history - k * 3600.0 for k in range(0, 24 * 7, 5)]
    reported = [view.to_reported(h) for h in points]
    assert reported == sorted(reported, reverse=True)
    assert all(r <= now.reported for r in reported)
    return now


def test_speed_one_is_a_constant_offset_from_history() -> None:
    t = timeline.Timeline(START, 1.0)
    now = _consistent(t)
    view = t.view()
    offset = now.reported - now.history
    for back in (0.0, 60.0, 86400.0, 30 * 86400.0):
        assert view.to_reported(now.history - back) == pytest.approx(now.history - back + offset)


def test_a_fast_market_is_compressed_into_real_time_not_run_ahead() -> None:
    t = timeline.Timeline(START, 1.0)
    switch = t.set_speed(100_000.0)  # a day per second of wall time
    time.sleep(0.05)
    now = _consistent(t)
    assert now.history - switch.history > 1000.0  # the market moved thousands of seconds
    assert now.reported - switch.reported < now.history - switch.history
    view = t.view()
    # history after the switch is reported at 1/speed of its spacing
    mid = switch.history + (now.history - switch.history) / 2
    expected = switch.reported + (mid - switch.history) / 100_000.0
    assert view.to_reported(mid) == pytest.approx(expected, abs=1e-6)
    # and before the switch at its real spacing
    assert view.to_reported(switch.history - 600) == pytest.approx(switch.reported - 600)


def test_freezing_stops_both_clocks_and_a_jump_is_capped_at_the_wall_clock() -> None:
    t = timeline.Timeline(START, 1.0)
    frozen = t.set_speed(0.0)
    time.sleep(0.01)
    assert t.now() == frozen
    jumped = t.jump_to(datetime.fromtimestamp(frozen.reported, UTC) + timedelta(days=3))
    assert jumped.history == pytest.approx(frozen.history + 3 * 86400.0, abs=1e-3)
    assert jumped.reported <= time.time()
    _consistent(t)
    later = t.advance(7200)
    assert later.history == pytest.approx(jumped.history + 7200, abs=1e-3)
    assert later.reported >= jumped.reported
    view = t.view()
    # history inside the jump is reported within the jump, in order
    inside = [view.to_reported(frozen.history + k * 3600.0) for k in range(0, 72, 6)]
    assert inside == sorted(inside)
    assert frozen.reported <= inside[0] and inside[-1] <= jumped.reported
    assert view.to_history(later.reported) == pytest.approx(later.history, abs=1e-3)


def test_a_frozen_clock_keeps_its_lag_and_jumps_use_it_up() -> None:
    fake_wall = [time.time()]
    t = timeline.Timeline(START, 0.0, wall=lambda: fake_wall[0])
    start = t.now()
    fake_wall[0] += 100.0  # the wall clock runs on while the market is frozen
    step = t.advance(30)  # fits into the lag: reported moves by the full 30 s
    assert step.reported == pytest.approx(start.reported + 30)
    big = t.advance(500)  # more than the lag left: reported stops at the wall clock
    assert big.reported == pytest.approx(fake_wall[0])
    assert big.history == pytest.approx(start.history + 530)


def test_back_jumps_and_remaps_start_a_new_map() -> None:
    t = timeline.Timeline(START, 0.0)
    now = t.now()
    back = t.jump_to(datetime.fromtimestamp(now.reported - 3600, UTC))
    assert back.history == pytest.approx(now.history - 3600)
    assert back.reported == pytest.approx(now.reported - 3600)
    remapped = t.remap(START + timedelta(days=20))
    assert remapped.history == pytest.approx((START + timedelta(days=20)).timestamp())
    assert remapped.reported == pytest.approx(back.reported)
    assert t.view().to_reported(remapped.history - 86400) == pytest.approx(back.reported - 86400)
    with pytest.raises(ValueError):
        t.advance(-1)
    with pytest.raises(ValueError):
        t.set_speed(-2)

"""Sim time that never runs ahead of the wall clock, mapped onto the replayed price history.

Two clocks, one map between them:

- the **market clock** (history time: epoch seconds of the price data) runs at
  ``speed`` history seconds per wall second; it can be frozen (speed 0), jumped
  forward or back, or re-mapped onto another point of the data;
- the **reported clock** is what the stand-in cloud tells its clients: price
  ``Timestamp``s, EventBridge event times, the control API's ``now``. It runs at
  one second per wall second while the market runs (any speed > 0), stands still
  while the market is frozen, and is **never later than the wall clock**.

The map from history time to reported time is monotone and piecewise linear, kept
as segments ``(history, reported, speed)``. History before the first segment (the
past of the anchor) is shown at its real spacing; at speed ``s`` one reported
second covers ``s`` history seconds (``s`` > 1 compresses history, < 1 stretches
it). A jump forward moves the market by the requested amount but the reported
clock only as far as the wall clock allows, so the jumped history is squeezed
into whatever lag the reported clock had (possibly none: then it is all reported
at one instant). Segments are only appended, so a price change keeps its
reported timestamp, except on reset, on a re-map and on a jump backwards, which
start a new map.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from spotfleet_sim import clock


@dataclass(frozen=True, slots=True)
class Segment:
    """From history time ``history`` (epoch s), reported at ``reported`` (epoch s), on
    ``speed`` history seconds per reported second (0: frozen; ``inf``: a jump that took
    no reported time)."""

    history: float
    reported: float
    speed: float


@dataclass(frozen=True, slots=True)
class Instant:
    """One consistent reading of both clocks (epoch seconds) and the market speed."""

    history: float
    reported: float
    speed: float

    @property
    def history_dt(self) -> datetime:
        return datetime.fromtimestamp(self.history, UTC)

    @property
    def reported_dt(self) -> datetime:
        return datetime.fromtimestamp(self.reported, UTC)


class View:
    """An immutable copy of the map at one instant: converts between the two clocks."""

    def __init__(self, segments: tuple[Segment, ...], now: Instant, version: int) -> None:
        self.segments = segments
        self.now = now
        self.version = version
        self._h = [s.history for s in segments]
        self._r = [s.reported for s in segments]

    def to_reported(self, history: float) -> float:
        """Reported time (epoch s) of history time ``history``; never later than ``now``."""
        i = bisect.bisect_right(self._h, history) - 1
        if i < 0:
            first = self.segments[0]
            return min(first.reported + (history - first.history), self.now.reported)
        seg = self.segments[i]
        if seg.speed == 0 or math.isinf(seg.speed):
            at = seg.reported
        else:
            at = seg.reported + (history - seg.history) / seg.speed
        return min(at, self.now.reported)

    def to_history(self, reported: float) -> float:
        """History time (epoch s) at reported time ``reported``: the latest history point
        reported at or before it; reported times after ``now`` map to the market's now."""
        if reported >= self.now.reported:
            return self.now.history
        i = bisect.bisect_right(self._r, reported) - 1
        if i < 0:
            first = self.segments[0]
            return first.history + (reported - first.reported)
        seg = self.segments[i]
        end = self._h[i + 1] if i + 1 < len(self.segments) else self.now.history
        if math.isinf(seg.speed):
            return end
        return min(seg.history + (reported - seg.reported) * seg.speed, end)


class Timeline:
    """The market clock plus the history->reported map; thread-safe.

    ``wall`` is the wall clock (epoch seconds); tests of this module may pass their own.
    """

    def __init__(
        self, history_start: datetime, speed: float, wall: Callable[[], float] = time.time
    ) -> None:
        self._wall = wall
        self._lock = threading.RLock()
        self._market = clock.SimClock(history_start, speed)
        self._segments: list[Segment] = []
        self.version = 0
        self.reset(history_start, speed)

    # -- reading -------------------------------------------------------------
    def now(self) -> Instant:
        """Both clocks now. The reported clock is clamped to the wall clock (and the
        market with it) should the monotonic clock run faster than the wall clock."""
        with self._lock:
            return self._now()

    def _now(self) -> Instant:
        last = self._segments[-1]
        speed = self._market.speed
        history = self._market.now().timestamp()
        if speed == 0:
            return Instant(last.history, last.reported, 0.0)
        reported = last.reported + (history - last.history) / speed
        wall = self._wall()
        if reported > wall:
            reported = max(wall, last.reported)
            history = last.history + (reported - last.reported) * speed
        return Instant(history, reported, speed)

    def view(self) -> View:
        with self._lock:
            return View(tuple(self._segments), self._now(), self.version)

    @property
    def speed(self) -> float:
        return self._market.speed

    # -- moving ----------------------------------------------------------------
    def reset(self, history_start: datetime, speed: float) -> Instant:
        """Map the wall clock's now onto ``history_start`` and run at ``speed``."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        with self._lock:
            reported = self._wall()
            return self._restart(history_start.timestamp(), reported, speed)

    def remap(self, history_time: datetime) -> Instant:
        """Keep the reported now; put the market at ``history_time`` (a new map)."""
        with self._lock:
            now = self._now()
            return self._restart(history_time.timestamp(), now.reported, self._market.speed)

    def set_speed(self, speed: float) -> Instant:
        """Change the market speed from now on (0 freezes both clocks)."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        with self._lock:
            now = self._now()
            self._market.set(datetime.fromtimestamp(now.history, UTC), speed)
            self._append(Segment(now.history, now.reported, speed))
            return self._now()

    def advance(self, seconds: float) -> Instant:
        """Move the market forward by ``seconds`` of history; the reported clock moves as
        far as that without passing the wall clock."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            return self._jump(seconds)

    def jump_to(self, reported: datetime) -> Instant:
        """Set the reported clock to ``reported`` (capped at the wall clock); the market
        moves by the same amount, forward or back (back starts a new map)."""
        with self._lock:
            now = self._now()
            delta = reported.timestamp() - now.reported
            if delta >= 0:
                return self._jump(delta)
            return self._restart(now.history + delta, now.reported + delta, self._market.speed)

    # -- internals ---------------------------------------------------------------
    def _restart(self, history: float, reported: float, speed: float) -> Instant:
        self._market.set(datetime.fromtimestamp(history, UTC), speed)
        self._segments = [Segment(history, reported, speed)]
        self.version += 1
        return self._now()

    def _jump(self, seconds: float) -> Instant:
        now = self._now()
        speed = self._market.speed
        if seconds > 0:
            reported = min(now.reported + seconds, max(self._wall(), now.reported))
            took = reported - now.reported
            self._append(Segment(now.history, now.reported, seconds / took if took else math.inf))
            self._market.set(datetime.fromtimestamp(now.history + seconds, UTC))
            self._append(Segment(now.history + seconds, reported, speed))
        return self._now()

    def _append(self, seg: Segment) -> None:
        if self._segments and self._segments[-1].history == seg.history:
            self._segments[-1] = seg  # the last segment covered no history: replace it
        else:
            self._segments.append(seg)
        self.version += 1

"""A settable clock that runs at any speed: the stand-in cloud's market clock.

Its time is a UTC ``datetime``. It advances ``speed`` seconds per wall second from an
anchor; ``set`` moves the anchor; ``speed == 0`` freezes it. The layer runs it in
history time and reports times through :mod:`spotfleet_sim.timeline`, which keeps
what clients see from ever passing the wall clock.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class SimClock:
    """A thread-safe clock: ``now()`` = anchor + (monotonic elapsed) * speed."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._lock = threading.Lock()
        self._anchor_sim = _utc(start) if start is not None else datetime.now(UTC)
        self._anchor_wall = time.monotonic()
        self._speed = float(speed)

    def now(self) -> datetime:
        """Current sim time (UTC)."""
        with self._lock:
            elapsed = (time.monotonic() - self._anchor_wall) * self._speed
            return self._anchor_sim + timedelta(seconds=elapsed)

    @property
    def speed(self) -> float:
        """Sim seconds per wall second."""
        return self._speed

    def set(self, now: datetime | None = None, speed: float | None = None) -> datetime:
        """Jump to ``now`` and/or change ``speed``; returns the new sim time."""
        if speed is not None and speed < 0:
            raise ValueError("speed must be >= 0")
        current = self.now()
        with self._lock:
            self._anchor_sim = _utc(now) if now is not None else current
            self._anchor_wall = time.monotonic()
            if speed is not None:
                self._speed = float(speed)
            return self._anchor_sim

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds`` of sim time; returns the new sim time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        return self.set(self.now() + timedelta(seconds=seconds))


def _utc(at: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)

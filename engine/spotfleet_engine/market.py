"""What the engine knows of the spot market at one moment.

A :class:`MarketSnapshot` holds, per (instance type, zone), the spot price
history observed up to ``observed_at`` (never later: the engine cannot see the
future), the Spot Instance Advisor band per type, placement scores where known,
and the pools currently known to be out of capacity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from spotfleet_engine import model

#: Advisor interruption-frequency bands (AWS field ``r``), index -> (label, max percent per month).
ADVISOR_BANDS: tuple[tuple[str, float], ...] = (
    ("<5%", 5.0),
    ("5-10%", 11.0),
    ("10-15%", 16.0),
    ("15-20%", 22.0),
    (">20%", 100.0),
)


@dataclass(frozen=True, slots=True)
class PricePoint:
    """A spot price that took effect at ``at`` (USD per instance-hour)."""

    at: datetime
    price: float


@dataclass(frozen=True, slots=True)
class AdvisorEntry:
    """Spot Instance Advisor data for one type in one region."""

    band: int  # 0..4, index into ADVISOR_BANDS
    savings_pct: float  # advisor's savings vs on-demand, percent


@dataclass(frozen=True)
class MarketSnapshot:
    """Market state for one region as of ``observed_at``.

    ``spot_history[(type, zone)]`` is ascending by time, every point at or
    before ``observed_at``; its last point is the current price.
    ``placement_scores[(type, zone)]`` is AWS's 1..10 score where known.
    """

    region: str
    observed_at: datetime
    spot_history: Mapping[tuple[str, str], Sequence[PricePoint]]
    advisor: Mapping[str, AdvisorEntry] = field(default_factory=dict)
    placement_scores: Mapping[tuple[str, str], int] = field(default_factory=dict)
    unavailable: frozenset[model.Pool] = frozenset()

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        """Current spot price of the pool, or None when the market has none."""
        hist = self.spot_history.get((instance_type, zone))
        return hist[-1].price if hist else None

    def history(self, instance_type: str, zone: str) -> Sequence[PricePoint]:
        """Price history of the pool up to ``observed_at`` (empty when unknown)."""
        return self.spot_history.get((instance_type, zone), ())

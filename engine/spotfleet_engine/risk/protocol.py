"""The contract every risk model meets, so ``planner.decide`` can use any of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model


@runtime_checkable
class RiskModel(Protocol):
    """Estimates, per pool, the probability of an interruption (or a sharp
    reprice that forces one) within ``horizon_hours`` of ``now``.

    Contract: returns one calibrated probability in [0, 1] per input pool, in
    the same order; on-demand pools get 0.0; uses only market data at or
    before ``now``; pure (no I/O, no clock).
    """

    name: str
    horizon_hours: float

    def interruption_probability(
        self,
        pools: Sequence[model.Pool],
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> list[float]: ...

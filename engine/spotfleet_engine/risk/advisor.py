"""The baseline risk model: interruption probability from the Spot Instance Advisor band.

Band -> probability over the horizon. The advisor band is AWS's bucket of the
share of spot instances of a type interrupted per month in the region. We take
the band's midpoint as a monthly rate ``f`` (:data:`BAND_MONTHLY_RATE`:
<5% -> 2.5%, 5-10% -> 7.5%, 10-15% -> 12.5%, 15-20% -> 17.5%, >20% -> 25%)
and assume interruptions arrive uniformly in time (a constant hazard), so the
probability that one instance is interrupted within ``horizon_hours`` is

    p = 1 - (1 - f) ** (horizon_hours / 730)

(730 h = one average month). For a 24 h horizon that is 0.083% .. 0.94%.
A type the advisor does not list gets :data:`UNKNOWN_BAND` (10-15%), the
middle band: no evidence either way. On-demand pools get 0.0. The same rate
applies to every zone of a type: the advisor is per region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model

#: Monthly interruption rate assumed for each advisor band (index into ADVISOR_BANDS).
BAND_MONTHLY_RATE: tuple[float, ...] = (0.025, 0.075, 0.125, 0.175, 0.25)
#: Band used for types the advisor does not list.
UNKNOWN_BAND = 2
HOURS_PER_MONTH = 730.0


def band_probability(band: int, horizon_hours: float) -> float:
    """Probability of an interruption within ``horizon_hours`` for advisor ``band`` (0..4)."""
    rate = BAND_MONTHLY_RATE[min(max(band, 0), len(BAND_MONTHLY_RATE) - 1)]
    return float(1.0 - (1.0 - rate) ** (horizon_hours / HOURS_PER_MONTH))


@dataclass
class AdvisorBandRisk:
    """:class:`~spotfleet_engine.risk.protocol.RiskModel` from the advisor band alone
    (a plain dataclass: the protocol declares ``name``/``horizon_hours`` as attributes)."""

    horizon_hours: float = 24.0
    name: str = "advisor-band"

    def interruption_probability(
        self,
        pools: Sequence[model.Pool],
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> list[float]:
        """One probability per pool, in order (see the module docstring)."""
        by_band = [band_probability(b, self.horizon_hours) for b in range(5)]
        advisor = market.advisor
        out: list[float] = []
        for pool in pools:
            if pool.market is model.Market.ON_DEMAND:
                out.append(0.0)
                continue
            entry = advisor.get(pool.instance_type)
            band = entry.band if entry is not None else UNKNOWN_BAND
            out.append(by_band[min(max(band, 0), 4)])
        return out

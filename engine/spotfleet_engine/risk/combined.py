"""Combined interruption risk: a price spike or a reclaim at the advisor's rate.

Two events take spot capacity away: a sharp reprice (what the XGBoost model
predicts: a rise of >= 5 % within its horizon) and an ordinary reclaim at the
rate the Spot Instance Advisor reports for the type (what
:class:`~spotfleet_engine.risk.advisor.AdvisorBandRisk` gives). Treating them
as independent, the probability that a spot instance of a pool is interrupted
within the horizon is

    p = 1 - (1 - p_spike) x (1 - p_band)

both over the same horizon (the spike model's, 24 h for the bundled artifact).

A spot pool whose price history in the snapshot does not reach back
``min_history_hours`` before ``now`` (or is absent) has no spike score: the
XGBoost model itself falls back to the band probability there, and combining
that with the band again would count the band twice, so such a pool gets
``p_band`` alone. On-demand pools get 0.0. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_engine.risk import advisor as advisor_mod
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_engine.risk import xgb


@dataclass
class CombinedRisk:
    """:class:`~spotfleet_engine.risk.protocol.RiskModel`: ``1 - (1 - p_spike)(1 - p_band)``.

    ``spike`` is any RiskModel of sharp reprices (the XGBoost model); the band
    probability is taken over ``spike.horizon_hours``. ``min_history_hours``
    must match the spike model's own fallback rule (pools with less history get
    the band alone).
    """

    spike: risk_protocol.RiskModel
    min_history_hours: float = xgb.MIN_HISTORY_HOURS
    name: str = field(default="")
    horizon_hours: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.horizon_hours = float(self.spike.horizon_hours)
        if not self.name:
            self.name = f"combined({self.spike.name}+advisor-band)"
        self._band = [
            advisor_mod.band_probability(b, self.horizon_hours)
            for b in range(len(advisor_mod.BAND_MONTHLY_RATE))
        ]

    def band_probability(self, instance_type: str, market: market_mod.MarketSnapshot) -> float:
        """The advisor-band probability over the horizon (unlisted types: the middle band)."""
        entry = market.advisor.get(instance_type)
        band = entry.band if entry is not None else advisor_mod.UNKNOWN_BAND
        return self._band[min(max(band, 0), len(self._band) - 1)]

    def interruption_probability(
        self,
        pools: Sequence[model.Pool],
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> list[float]:
        """One probability per pool, in order (see the module docstring)."""
        p_spike = self.spike.interruption_probability(pools, market, catalog, now)
        if len(p_spike) != len(pools):
            raise ValueError(
                f"spike model {self.spike.name!r} returned {len(p_spike)} for {len(pools)} pools"
            )
        since = now - timedelta(hours=self.min_history_hours)
        history = market.spot_history
        out: list[float] = []
        for pool, ps in zip(pools, p_spike, strict=True):
            if pool.market is model.Market.ON_DEMAND:
                out.append(0.0)
                continue
            pb = self.band_probability(pool.instance_type, market)
            hist = history.get((pool.instance_type, pool.zone))
            if not hist or hist[0].at > since:
                out.append(pb)
                continue
            ps = min(max(float(ps), 0.0), 1.0)
            out.append(1.0 - (1.0 - ps) * (1.0 - pb))
        return out


def load_bundled(nthread: int = 1, scorer: xgb.Scorer = "auto") -> CombinedRisk:
    """The bundled XGBoost model combined with the advisor band."""
    return CombinedRisk(xgb.load_bundled(nthread=nthread, scorer=scorer))

"""The market layer: WSGI middleware in front of moto's server app, on one port.

:class:`MarketLayer` owns the stand-in cloud's state and wires its parts together;
the work is done elsewhere:

- :mod:`~spotfleet_sim.dispatch` routes each request (control API, faults, the layer's
  own operations, moto); :mod:`~spotfleet_sim.replies` shapes answers and logs them;
  :mod:`~spotfleet_sim.passthrough` hands calls to moto;
- :mod:`~spotfleet_sim.ops` has one module per EC2 operation the layer answers:
  DescribeSpotPriceHistory, GetSpotPlacementScores, CreateFleet (instant),
  RunInstances (guarded) and DescribeInstances (from :mod:`~spotfleet_sim.index`);
- :mod:`~spotfleet_sim.capacity` (unavailable and limited pools, scheduled faults),
  :mod:`~spotfleet_sim.quotas`, :mod:`~spotfleet_sim.idempotency`,
  :mod:`~spotfleet_sim.faults` (errors and hangs), :mod:`~spotfleet_sim.counters`;
- :mod:`~spotfleet_sim.timeline` (the market clock and the never-ahead-of-the-wall
  reported clock), :mod:`~spotfleet_sim.interruptions` (EventBridge events);
- :mod:`~spotfleet_sim.control` serves the control API under ``/_spotfleet/``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spotfleet_sim import (
    backend,
    calllog,
    capacity,
    counters,
    dispatch,
    faults,
    idempotency,
    index,
    interruptions,
    market,
    quotas,
    timeline,
)
from spotfleet_sim.ops import spot_price_history

StartResponse = Callable[..., Any]


@dataclass
class Options:
    """How the stand-in cloud starts (and what reset returns to)."""

    prices: Path | None = None  # CSV in DescribeSpotPriceHistory layout; None = bundled 2021
    price_region: str | None = None
    history_start: datetime | None = None  # history point the clock starts at
    speed: float = 1.0  # market (history) seconds per wall second
    notice_seconds: float = interruptions.DEFAULT_NOTICE_SECONDS
    seed: int = 0


class MarketLayer:
    """The WSGI app: ``MarketLayer(moto_app, Options())``."""

    def __init__(
        self, moto_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]], options: Options
    ) -> None:
        backend.install_fast_lookups()
        self.moto_app = moto_app
        self.options = options
        self.history = market.PriceHistory.load(options.prices, options.price_region)
        self._scores: market.PlacementScores | None = None
        self._advisor: market.Advisor | None = None
        self._on_demand: dict[str, dict[str, float]] = {}
        self._data_lock = threading.Lock()
        #: held by every call that changes moto's instances, and by the instance index
        self.state_lock = threading.RLock()
        self.log = calllog.CallLog()
        self.faults = faults.FaultBook(options.seed)
        self.hangs = faults.HangBook()
        self.capacity = capacity.CapacityBook()
        self.quotas = quotas.QuotaBook()
        self.tokens = idempotency.TokenCache()
        self.counters = counters.CallCounters()
        self.index = index.InstanceIndex()
        self.describe_index = True
        self.price_queries = spot_price_history.QueryCache()
        self.timeline = timeline.Timeline(self.history_start(), options.speed)
        self.interrupter = interruptions.Interrupter(
            self.timeline, self.log, self.advisor, self._reclaim, options.notice_seconds
        )

    # -- data (placement scores, advisor and on-demand prices load on first use) ----
    def scores(self) -> market.PlacementScores:
        with self._data_lock:
            if self._scores is None:
                self._scores = market.PlacementScores.load()
            return self._scores

    def advisor(self) -> market.Advisor:
        with self._data_lock:
            if self._advisor is None:
                self._advisor = market.Advisor.load()
            return self._advisor

    def on_demand(self, region: str) -> dict[str, float]:
        with self._data_lock:
            if region not in self._on_demand:
                self._on_demand[region] = market.on_demand_prices(region)
            return self._on_demand[region]

    # -- clock -------------------------------------------------------------------
    def default_history_start(self) -> datetime:
        first = datetime.fromtimestamp(self.history.first, UTC)
        last = datetime.fromtimestamp(self.history.last, UTC)
        return min(first + timedelta(days=30), last)

    def history_start(self) -> datetime:
        return self.options.history_start or self.default_history_start()

    def clock_json(self) -> dict[str, Any]:
        """``now`` (reported; never later than ``wall_now``), ``history_now`` (the point of
        the data it maps to), ``speed`` (market seconds per wall second), ``offset_seconds``
        (now - history_now, at this instant)."""
        now = self.timeline.now()
        return {
            "now": now.reported_dt.isoformat(),
            "speed": now.speed,
            "history_now": now.history_dt.isoformat(),
            "offset_seconds": now.reported - now.history,
            "history_first": datetime.fromtimestamp(self.history.first, UTC).isoformat(),
            "history_last": datetime.fromtimestamp(self.history.last, UTC).isoformat(),
            "wall_now": datetime.now(UTC).isoformat(),
        }

    # -- state ---------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the start: empty moto, no faults, hangs, quotas or counts, all pools
        available, clock re-anchored."""
        self.hangs.clear()
        with self.state_lock:
            backend.reset_all()
            self.index.clear()
            self.faults.clear(self.options.seed)
            self.capacity.clear()
            self.quotas.clear()
            self.tokens.clear()
            self.counters.clear()
            self.log.clear()
            self.price_queries.clear()
            self.describe_index = True
            self.timeline.reset(self.history_start(), self.options.speed)
            self.interrupter.reset(self.options.notice_seconds)

    def after_change(
        self, account: str, region: str, touched: list[str] | tuple[()] | None
    ) -> None:
        """Refresh the instance index after a call that may have changed instances
        (``()``: only new ones; None: all) and send the state changes it saw."""
        with self.state_lock:
            changes = self.index.refresh(account, region, touched)
            self.interrupter.state_changed(changes)

    def _reclaim(self, account: str, region: str, instance_id: str) -> None:
        with self.state_lock:
            backend.terminate_for_spot(account, region, instance_id)
            self.after_change(account, region, [instance_id])

    # -- WSGI ------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        reply = dispatch.serve(self, environ)
        start_response(reply.status_line(), reply.headers)
        return [reply.body]

"""What the engine knows of the spot market at one moment.

A :class:`MarketSnapshot` holds, per (instance type, zone), the spot price
history observed up to ``observed_at`` (never later: the engine cannot see the
future), the Spot Instance Advisor band per type, placement scores where known,
and the pools currently known to be out of capacity.
"""

from __future__ import annotations

import bisect
import csv
import functools
import gzip
import importlib.resources
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt

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
    #: extra interruption probability over the horizon (0..1) of spot pools that were
    #: interrupted recently (the operator's own observations, decaying with age)
    penalties: Mapping[model.Pool, float] = field(default_factory=dict)

    def spot_price(self, instance_type: str, zone: str) -> float | None:
        """Current spot price of the pool, or None when the market has none."""
        hist = self.spot_history.get((instance_type, zone))
        return hist[-1].price if hist else None

    def history(self, instance_type: str, zone: str) -> Sequence[PricePoint]:
        """Price history of the pool up to ``observed_at`` (empty when unknown)."""
        return self.spot_history.get((instance_type, zone), ())

    @functools.cached_property
    def _spot_pools(self) -> tuple[tuple[model.Pool, float], ...]:
        return tuple(
            (model.Pool(t, z, model.Market.SPOT), h[-1].price)
            for (t, z), h in sorted(self.spot_history.items())
            if h
        )

    def spot_pools(self) -> tuple[tuple[model.Pool, float], ...]:
        """Every spot pool with a current price, sorted by pool (computed once per snapshot)."""
        return self._spot_pools

    @functools.cached_property
    def _by_type(self) -> Mapping[str, tuple[tuple[str, Sequence[PricePoint], int | None], ...]]:
        out: dict[str, list[tuple[str, Sequence[PricePoint], int | None]]] = {}
        for (t, z), h in sorted(self.spot_history.items()):
            out.setdefault(t, []).append((z, h, self.placement_scores.get((t, z))))
        return {t: tuple(v) for t, v in out.items()}

    def inputs_for(self, types: Iterable[str]) -> tuple[object, ...]:
        """What a decision over ``types`` reads of this snapshot's own pools: per type, its
        advisor entry and each zone's price history and placement score. Comparable with
        ``==``; a history that did not change between two snapshots is the same object,
        so comparing unchanged markets is cheap. (The risk model's zone and family
        features also read other types: callers that reuse a decision on this key bound
        how long they do.)"""
        by_type = self._by_type
        return tuple((t, self.advisor.get(t), by_type.get(t)) for t in types)

    def with_view(
        self, unavailable: frozenset[model.Pool], penalties: Mapping[model.Pool, float]
    ) -> MarketSnapshot:
        """This snapshot with one policy's view of unavailable pools and interruption
        penalties, sharing the indexes computed on it (they depend on prices only)."""
        out = replace(self, unavailable=unavailable, penalties=penalties)
        for name in ("_spot_pools", "_by_type"):
            if name in self.__dict__:
                out.__dict__[name] = self.__dict__[name]
        return out


# --------------------------------------------------------------------------
# Bundled data loaders (the only I/O in this module; each parses once, cached).
# --------------------------------------------------------------------------

SPOT_PRICES_2021_FILE = "spot_prices_us-east-1_2021-03-02_to_2021-05-31_linux.csv.gz"
ADVISOR_FILE = "spot_advisor_linux_3snapshots.csv.gz"
OFFERINGS_AZ_ID_FILE = "ec2_instance_type_offerings_azid_moto-5.2.5.csv.gz"
#: The placement-score model: AWS's 1..10 score of a type in a zone that offers it, from
#: the type's Spot Instance Advisor interruption band in the region (newest snapshot):
#: <5 % -> 9, 5-10 % -> 7, 10-15 % -> 5, 15-20 % -> 4, >20 % -> 2. It stands in for
#: measured scores (SpotLake's, CC BY-NC 4.0, are not shipped: data/README.md).
BAND_TO_PLACEMENT_SCORE: Mapping[int, int] = {0: 9, 1: 7, 2: 5, 3: 4, 4: 2}


def _rows(name: str) -> Iterator[dict[str, str]]:
    ref = importlib.resources.files("spotfleet_engine").joinpath("data", name)
    with ref.open("rb") as raw, gzip.open(raw, "rt", newline="") as text:
        yield from csv.DictReader(text)


@dataclass(frozen=True)
class PoolSeries:
    """One pool's price changes: ``times`` epoch seconds (int64, ascending,
    unique), ``prices`` USD per instance-hour (float64), same length."""

    times: npt.NDArray[np.int64]
    prices: npt.NDArray[np.float64]

    def index_at(self, now: datetime) -> int:
        """Index of the price in force at ``now`` (last change at or before it), or -1."""
        return int(np.searchsorted(self.times, int(now.timestamp()), side="right")) - 1


def price_problem(text: str) -> str | None:
    """Why a spot price field is unusable, or None when it is a usable price: a
    finite number above 0 USD/h. Sentinels such as ``-1.0``, zero, NaN, infinities
    and text that is no number are refused (a negative price once made the
    hindsight oracle's bill negative)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return "not a number"
    if not np.isfinite(value):
        return "not finite"
    if value <= 0.0:
        return "zero or negative"
    return None


@dataclass(frozen=True)
class PriceHistory:
    """Spot price history of one region, per (instance type, zone), parsed once.

    ``start``/``end`` are the first and last observation in the file (UTC).
    ``rejected_rows`` counts the rows the loader dropped, by :func:`price_problem`.
    """

    region: str
    series: Mapping[tuple[str, str], PoolSeries]
    start: datetime
    end: datetime
    rejected_rows: Mapping[str, int] = field(default_factory=dict)

    def price_at(self, instance_type: str, zone: str, now: datetime) -> float | None:
        """Price in force at ``now`` or None when the pool had none yet."""
        s = self.series.get((instance_type, zone))
        if s is None:
            return None
        i = s.index_at(now)
        return float(s.prices[i]) if i >= 0 else None


@functools.lru_cache(maxsize=1)
def load_bundled_history() -> PriceHistory:
    """The bundled 2021-03-02..2021-05-31 us-east-1 Linux/UNIX spot history (cached).

    Duplicate timestamps within a pool keep the last row of the file; rows whose
    price is unusable (:func:`price_problem`) are dropped and counted.
    """
    acc: dict[tuple[str, str], dict[int, float]] = {}
    parse_cache: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for r in _rows(SPOT_PRICES_2021_FILE):
        problem = price_problem(r["spot_price"])
        if problem is not None:
            rejected[problem] = rejected.get(problem, 0) + 1
            continue
        ts = r["timestamp"]
        sec = parse_cache.get(ts)
        if sec is None:
            sec = int(datetime.fromisoformat(ts).timestamp())
            parse_cache[ts] = sec
        acc.setdefault((r["instance_type"], r["availability_zone"]), {})[sec] = float(
            r["spot_price"]
        )
    series: dict[tuple[str, str], PoolSeries] = {}
    lo, hi = None, None
    for key in sorted(acc):
        points = sorted(acc[key].items())
        t = np.fromiter((p[0] for p in points), dtype=np.int64, count=len(points))
        v = np.fromiter((p[1] for p in points), dtype=np.float64, count=len(points))
        series[key] = PoolSeries(times=t, prices=v)
        lo = int(t[0]) if lo is None else min(lo, int(t[0]))
        hi = int(t[-1]) if hi is None else max(hi, int(t[-1]))
    assert lo is not None and hi is not None
    return PriceHistory(
        region="us-east-1",
        series=series,
        start=datetime.fromtimestamp(lo, UTC),
        end=datetime.fromtimestamp(hi, UTC),
        rejected_rows=rejected,
    )


def epoch_hours(when: datetime | date) -> float:
    """Hours since the Unix epoch of a UTC time (naive means UTC) or of a date's 00:00 UTC."""
    if not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day, tzinfo=UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() / 3600.0


def snapshot_in_force(taken: Sequence[float], t_hours: float) -> int | None:
    """The one rule for which advisor snapshot is in force at ``t_hours`` (hours since
    the epoch), for the backtest, the operator, training and evaluation alike: the
    latest snapshot taken at or before it (a snapshot dated ``D`` counts from ``D``
    00:00 UTC), and none before the first, never a later one. Returns its index in
    ``taken`` (ascending) or None."""
    i = bisect.bisect_right(taken, t_hours) - 1
    return i if i >= 0 else None


@dataclass(frozen=True)
class AdvisorHistory:
    """Spot Instance Advisor snapshots of one region, oldest first."""

    region: str
    snapshots: tuple[tuple[date, Mapping[str, AdvisorEntry]], ...]

    def date_at(self, now: datetime) -> date | None:
        """Date of the snapshot in force at ``now`` (:func:`snapshot_in_force`), or None."""
        i = snapshot_in_force([epoch_hours(d) for d, _ in self.snapshots], epoch_hours(now))
        return None if i is None else self.snapshots[i][0]

    def at(self, now: datetime) -> Mapping[str, AdvisorEntry]:
        """The snapshot in force at ``now`` (:func:`snapshot_in_force`); empty before
        the first snapshot (no type has a known band then)."""
        i = snapshot_in_force([epoch_hours(d) for d, _ in self.snapshots], epoch_hours(now))
        return {} if i is None else self.snapshots[i][1]


@functools.lru_cache(maxsize=1)
def _advisor_all() -> dict[str, dict[date, dict[str, AdvisorEntry]]]:
    acc: dict[str, dict[date, dict[str, AdvisorEntry]]] = {}
    for r in _rows(ADVISOR_FILE):
        d = date.fromisoformat(r["snapshot_date"])
        acc.setdefault(r["region"], {}).setdefault(d, {})[r["instance_type"]] = AdvisorEntry(
            band=int(r["interruption_range_index"]),
            savings_pct=float(r["savings_pct_vs_ondemand"]),
        )
    return acc


@functools.lru_cache(maxsize=32)
def load_bundled_advisor(region: str = "us-east-1") -> AdvisorHistory:
    """The bundled advisor snapshots (2021-02-10, 2024-02-28, 2025-06-28) of ``region``."""
    by_date = _advisor_all().get(region, {})
    return AdvisorHistory(region=region, snapshots=tuple((d, by_date[d]) for d in sorted(by_date)))


@functools.lru_cache(maxsize=32)
def load_bundled_placement_scores(region: str = "us-east-1") -> Mapping[tuple[str, str], int]:
    """Modelled placement scores of ``region`` keyed by (type, AZ ID), AWS's 1..10 scale
    (:data:`BAND_TO_PLACEMENT_SCORE`): every (type, AZ ID) the region offers (moto 5.2.5's
    offerings) whose type has an advisor band in the newest snapshot of the region.

    Keys use AZ *IDs* ("use1-az4"), not names: AWS maps names ("us-east-1a")
    to IDs differently in every account, so they can only be joined with a
    price history through that account's mapping (``snapshot_at(zone_ids=...)``).
    """
    snaps = _advisor_all().get(region, {})
    if not snaps:
        return {}
    newest = snaps[max(snaps)]
    out: dict[tuple[str, str], int] = {}
    for r in _rows(OFFERINGS_AZ_ID_FILE):
        if r["region"] != region:
            continue
        entry = newest.get(r["instance_type"])
        if entry is not None:
            out[(r["instance_type"], r["location"])] = BAND_TO_PLACEMENT_SCORE[entry.band]
    return out


def snapshot_at(
    history: PriceHistory,
    now: datetime,
    *,
    advisor: AdvisorHistory | None = None,
    lookback: timedelta = timedelta(days=7),
    zone_ids: Mapping[str, str] | None = None,
    placement_scores: Mapping[tuple[str, str], int] | None = None,
    unavailable: frozenset[model.Pool] = frozenset(),
) -> MarketSnapshot:
    """The market as seen at ``now`` (never later data).

    Per pool: every price change in ``(now - lookback, now]`` plus the change
    in force at the window start (so the current price is always known);
    pools with no price at or before ``now`` are absent. ``advisor`` defaults
    to the bundled advisor of the history's region, taken at ``now``.
    Placement scores stay empty unless ``zone_ids`` (this account's zone name
    -> AZ ID mapping) is given, then ``placement_scores`` (default: the
    modelled scores, :func:`load_bundled_placement_scores`) are joined through it;
    the bundled 2021 history comes with no such mapping, so by default there are none.
    """
    t_now = int(now.timestamp())
    t_from = int((now - lookback).timestamp())
    hist: dict[tuple[str, str], tuple[PricePoint, ...]] = {}
    for key, s in history.series.items():
        hi = int(np.searchsorted(s.times, t_now, side="right"))
        if hi == 0:
            continue
        lo = max(int(np.searchsorted(s.times, t_from, side="right")) - 1, 0)
        hist[key] = tuple(
            PricePoint(datetime.fromtimestamp(int(t), UTC), float(p))
            for t, p in zip(s.times[lo:hi].tolist(), s.prices[lo:hi].tolist(), strict=True)
        )
    adv = (advisor or load_bundled_advisor(history.region)).at(now)
    scores: dict[tuple[str, str], int] = {}
    if zone_ids is not None:
        source = (
            placement_scores
            if placement_scores is not None
            else load_bundled_placement_scores(history.region)
        )
        for t, z in hist:
            az_id = zone_ids.get(z)
            if az_id is not None and (t, az_id) in source:
                scores[(t, z)] = source[(t, az_id)]
    return MarketSnapshot(
        region=history.region,
        observed_at=now,
        spot_history=hist,
        advisor=adv,
        placement_scores=scores,
        unavailable=unavailable,
    )

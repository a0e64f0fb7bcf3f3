"""Real spot market data the stand-in cloud replays: prices and advisor bands; and
placement scores modelled from them.

Price history comes from a CSV in the ``DescribeSpotPriceHistory`` layout
(``timestamp,region,availability_zone,instance_type,product_description,spot_price``;
gzip or plain); by default the bundled 2021 us-east-1 Linux file in
``spotfleet_engine/data``. Advisor bands come from the bundled Spot Instance Advisor
snapshots (latest snapshot per type); placement scores are modelled from those bands for
every (type, zone ID) moto's offerings list (no measured scores are shipped: SpotLake's
are non-commercial), so they do not vary with time.

Times here are history times (epoch seconds of the data); the layer reports them
through its timeline (:mod:`spotfleet_sim.timeline`), never later than the wall
clock. Prices are kept as the source strings (USD per instance-hour) so responses
repeat them exactly.
"""

from __future__ import annotations

import bisect
import csv
import fnmatch
import gzip
import importlib.resources
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from moto.ec2.models import availability_zones_and_regions

DEFAULT_PRICES = "spot_prices_us-east-1_2021-03-02_to_2021-05-31_linux.csv.gz"
ADVISOR = "spot_advisor_linux_3snapshots.csv.gz"
ON_DEMAND = "ec2_catalog_ondemand_spotavg_by_region_2024-04.csv.gz"

#: The placement-score model (the same as spotfleet_engine.market.BAND_TO_PLACEMENT_SCORE):
#: AWS's 1..10 score of a type in a zone that offers it, from the type's advisor band.
BAND_TO_SCORE = {0: 9, 1: 7, 2: 5, 3: 4, 4: 2}

#: Advisor band index -> upper bound of monthly interruption frequency, percent (AWS's ranges).
ADVISOR_BAND_MAX_PCT = (5.0, 11.0, 16.0, 22.0, 100.0)


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One ``SpotPrice`` entry; ``at`` is a history timestamp (epoch seconds, UTC)."""

    at: float
    instance_type: str
    zone: str
    product: str
    price: str


def _read_text(path: Path | None, bundled: str) -> str:
    """A CSV's text: ``path`` (gzip or plain) or the bundled file of that name."""
    if path is None:
        ref = importlib.resources.files("spotfleet_engine").joinpath("data", bundled)
        raw = ref.read_bytes()
    else:
        raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def _open_text(path: Path | None, bundled: str) -> Iterator[dict[str, str]]:
    yield from csv.DictReader(io.StringIO(_read_text(path, bundled), newline=""))


class PriceHistory:
    """Price changes per pool (type, zone, product description), ascending by time."""

    def __init__(self, region: str, rows: Iterable[PriceRow]) -> None:
        series: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        for row in rows:
            series.setdefault((row.instance_type, row.zone, row.product), []).append(
                (row.at, row.price)
            )
        self._init(region, series)

    def _init(
        self, region: str, series: dict[tuple[str, str, str], list[tuple[float, str]]]
    ) -> None:
        self.region = region
        self._times: dict[tuple[str, str, str], list[float]] = {}
        self._prices: dict[tuple[str, str, str], list[str]] = {}
        for key, points in series.items():
            points.sort()
            self._times[key] = [p[0] for p in points]
            self._prices[key] = [p[1] for p in points]
        if not self._times:
            raise ValueError("price history is empty")
        self.first = min(t[0] for t in self._times.values())
        self.last = max(t[-1] for t in self._times.values())

    @classmethod
    def load(cls, path: Path | None = None, region: str | None = None) -> PriceHistory:
        """Load a CSV (the bundled 2021 us-east-1 file when ``path`` is None).

        Rows of other regions than ``region`` (default: the first row's) are dropped.
        """
        reader = csv.reader(io.StringIO(_read_text(path, DEFAULT_PRICES), newline=""))
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        missing = {"timestamp", "availability_zone", "instance_type", "spot_price"} - set(col)
        if missing:
            raise ValueError(f"price CSV lacks columns {sorted(missing)}")
        i_ts, i_zone = col["timestamp"], col["availability_zone"]
        i_type, i_price = col["instance_type"], col["spot_price"]
        i_region, i_product = col.get("region"), col.get("product_description")
        chosen = region
        series: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        parse = datetime.fromisoformat
        for rec in reader:
            if not rec:
                continue
            row_region = (rec[i_region] if i_region is not None else "") or region or "us-east-1"
            if chosen is None:
                chosen = row_region
            if row_region != chosen:
                continue
            at = parse(rec[i_ts].replace("Z", "+00:00"))
            epoch = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
            product = (rec[i_product] if i_product is not None else "") or "Linux/UNIX"
            series.setdefault((rec[i_type], rec[i_zone], product), []).append((epoch, rec[i_price]))
        history = cls.__new__(cls)
        history._init(chosen or "us-east-1", series)
        return history

    def pools(self) -> list[tuple[str, str, str]]:
        """Every (type, zone, product) with data."""
        return sorted(self._times)

    def price_at(
        self, instance_type: str, zone: str, at: float, product: str = "Linux/UNIX"
    ) -> float | None:
        """Price in effect at history time ``at`` (USD/h), or None before the first point."""
        key = (instance_type, zone, product)
        times = self._times.get(key)
        if not times:
            return None
        i = bisect.bisect_right(times, at) - 1
        return float(self._prices[key][i]) if i >= 0 else None

    def query(
        self,
        start: float,
        end: float,
        types: Sequence[str] = (),
        zones: Sequence[str] = (),
        products: Sequence[str] = (),
    ) -> list[PriceRow]:
        """AWS semantics: every change in (start, end] plus the price in effect at ``start``.

        Patterns in ``types``/``zones``/``products`` may use ``*`` and ``?``; an empty
        sequence matches everything. Result is newest first, then by type and zone.
        """
        out: list[PriceRow] = []
        if end < start:
            return out
        for key in self._times:
            itype, zone, product = key
            if not (_match(itype, types) and _match(zone, zones) and _match(product, products)):
                continue
            times, prices = self._times[key], self._prices[key]
            lo = bisect.bisect_right(times, start) - 1
            lo = max(lo, 0)
            hi = bisect.bisect_right(times, end)
            for i in range(lo, hi):
                out.append(PriceRow(times[i], itype, zone, product, prices[i]))
        out.sort(key=lambda r: (-r.at, r.instance_type, r.zone, r.product))
        return out


def _match(value: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def zone_ids(region: str) -> dict[str, str]:
    """Zone name -> zone ID for ``region`` (moto's mapping, e.g. us-east-1a -> use1-az6)."""
    zones = availability_zones_and_regions.RegionsAndZonesBackend.zones.get(region, [])
    return {z.name: z.zone_id for z in zones}


class PlacementScores:
    """AWS-scale (1..10) placement score per (region, zone ID, type), modelled: every
    (type, zone ID) moto's offerings list, scored by the type's newest advisor band in
    the region (:data:`BAND_TO_SCORE`)."""

    def __init__(self, scores: dict[tuple[str, str, str], int]) -> None:
        self._scores = scores

    @classmethod
    def load(cls) -> PlacementScores:
        bands = Advisor.load()
        base = importlib.resources.files("moto").joinpath(
            "ec2", "resources", "instance_type_offerings", "availability-zone-id"
        )
        scores: dict[tuple[str, str, str], int] = {}
        for f in sorted(base.iterdir(), key=lambda p: p.name):
            if not f.name.endswith(".json.gz"):
                continue
            region = f.name[: -len(".json.gz")]
            for o in json.loads(gzip.decompress(f.read_bytes())):
                band = bands.band(region, o["InstanceType"])
                if band is not None:
                    scores[(region, o["Location"], o["InstanceType"])] = BAND_TO_SCORE[band]
        return cls(scores)

    def score(self, region: str, zone_id: str, instance_type: str) -> int | None:
        """Score 1..10, or None when the type is not offered there or has no band."""
        return self._scores.get((region, zone_id, instance_type))

    def regions(self) -> list[str]:
        """Regions with any score, sorted."""
        return sorted({r for (r, _z, _t) in self._scores})

    def zone_ids(self, region: str) -> list[str]:
        """Zone IDs with any score in ``region``, sorted."""
        return sorted({z for (r, z, _t) in self._scores if r == region})


class Advisor:
    """Spot Instance Advisor band (0..4) per (region, type), latest snapshot."""

    def __init__(self, bands: dict[tuple[str, str], int]) -> None:
        self._bands = bands

    @classmethod
    def load(cls) -> Advisor:
        latest: dict[tuple[str, str], tuple[str, int]] = {}
        for rec in _open_text(None, ADVISOR):
            if rec.get("os", "Linux") != "Linux":
                continue
            key = (rec["region"], rec["instance_type"])
            snap = rec["snapshot_date"]
            if key not in latest or snap > latest[key][0]:
                latest[key] = (snap, int(rec["interruption_range_index"]))
        return cls({k: v[1] for k, v in latest.items()})

    def band(self, region: str, instance_type: str) -> int | None:
        return self._bands.get((region, instance_type))

    def hazard_per_second(self, region: str, instance_type: str) -> float:
        """Interruption rate (per second) from the band's upper bound per 30-day month.

        Unknown types get the middle band. ``1 - exp(-rate * month) = max_pct / 100``.
        """
        band = self.band(region, instance_type)
        pct = ADVISOR_BAND_MAX_PCT[2 if band is None else band]
        p = min(pct / 100.0, 0.999)
        return -math.log(1.0 - p) / (30 * 86400.0)


def on_demand_prices(region: str) -> dict[str, float]:
    """Linux on-demand USD/h per type in ``region`` (bundled 2024-04 catalog)."""
    out: dict[str, float] = {}
    for rec in _open_text(None, ON_DEMAND):
        if rec["region"] == region and rec["ondemand_usd_per_hour"]:
            try:
                out[rec["instance_type"]] = float(rec["ondemand_usd_per_hour"])
            except ValueError:
                continue
    return out

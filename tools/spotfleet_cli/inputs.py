"""Every input the tools read, loaded in one place: SpotPolicy manifests, risk models,
spot price CSVs and Spot Instance Advisor data.

Each loader raises :class:`InputError` with a message that names the file and what
is wrong with it; commands print it and exit with code 2.
"""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from spotfleet_engine import market
from spotfleet_engine.backtest import prices
from spotfleet_engine.risk import dataset, features
from spotfleet_engine.risk import protocol as risk_protocol
from spotfleet_operator import api, riskmodels


class InputError(Exception):
    """An input the command cannot use; the message names the file and the problem."""


# ---- files -----------------------------------------------------------------


def bundled_path(name: str) -> Path:
    """Filesystem path of a data file bundled with the engine (installed as files)."""
    return Path(str(importlib.resources.files("spotfleet_engine").joinpath("data", name)))


def open_text(path: Path) -> IO[str]:
    """The text of ``path``, transparently gunzipped when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8"))


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a CSV file (gzip or plain) as dicts keyed by its header."""
    with open_text(path) as fh:
        yield from csv.DictReader(fh)


# ---- manifests -------------------------------------------------------------


def load_policy_manifest(path: Path) -> api.ParsedPolicy:
    """The first SpotPolicy document of a YAML or JSON file (several documents allowed;
    other kinds are skipped), parsed and defaulted. InputError names the bad field."""
    try:
        with open_text(path) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    except yaml.YAMLError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    policies = [d for d in docs if isinstance(d, dict) and d.get("kind") == api.KIND]
    if not policies:
        raise InputError(f"{path}: no {api.KIND} document")
    parsed = api.parse_policy(policies[0])
    if isinstance(parsed, api.InvalidSpec):
        raise InputError(f"{path}: invalid {api.KIND}: {parsed.message}")
    return parsed


# ---- risk models -------------------------------------------------------------


def load_risk(name: str, horizon_hours: float | None = None) -> risk_protocol.RiskModel:
    """A risk model by name (see :func:`spotfleet_operator.riskmodels.load`); the same
    loader the operator uses, with its errors as InputError."""
    try:
        return riskmodels.load(name, horizon_hours)
    except riskmodels.RiskModelError as exc:
        raise InputError(str(exc)) from exc


# ---- spot prices -------------------------------------------------------------


def load_history(paths: Sequence[Path], region: str) -> market.PriceHistory:
    """The price history of ``region`` from DescribeSpotPriceHistory-style CSVs, or the
    bundled 2021 us-east-1 history when none are given."""
    if not paths:
        hist = market.load_bundled_history()
        if hist.region != region:
            raise InputError(f"the bundled history is {hist.region}; the policy is in {region}")
        return hist

    def all_rows() -> Iterator[dict[str, str]]:
        for p in paths:
            yield from csv_rows(p)

    try:
        return prices.history_from_rows(all_rows(), region=region)
    except (KeyError, ValueError) as exc:
        raise InputError(f"cannot read prices: {type(exc).__name__}: {exc}") from exc


def hours_of(ts: str) -> float:
    """ISO-8601 timestamp (naive = UTC) -> hours since the Unix epoch."""
    t = datetime.fromisoformat(ts.strip().replace("Z", "+00:00").replace(" ", "T"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp() / 3600.0


def _linux(row: Mapping[str, str]) -> bool:
    """A price row of Linux/UNIX (rows without a ``product_description``/``os`` are)."""
    return (row.get("product_description") or row.get("os") or "Linux/UNIX").startswith("Linux")


_ZONE = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]$")


def price_regions(paths: Sequence[Path]) -> set[str]:
    """The regions of the Linux rows of price CSVs: each row's ``region`` column, else
    its zone's region (``eu-west-1a`` -> ``eu-west-1``); zones of no known shape are
    not counted."""
    found: set[str] = set()
    for path in paths:
        for r in csv_rows(path):
            if not _linux(r):
                continue
            if r.get("region"):
                found.add(r["region"])
            elif m := _ZONE.match(r.get("availability_zone", "")):
                found.add(m.group(1))
    return found


def source_region(paths: Sequence[Path], region: str | None) -> str:
    """The region to score ``paths`` in: ``region`` when given (InputError when the
    files hold no row of it), else the files' own single region (InputError when they
    hold several); us-east-1 when they do not say."""
    found = price_regions(paths)
    names = ", ".join(str(p) for p in paths)
    if region is not None:
        if found and region not in found:
            raise InputError(
                f"{names}: the price rows are in {', '.join(sorted(found))}, not in --region "
                f"{region}"
            )
        return region
    if len(found) > 1:
        raise InputError(
            f"{names}: price rows of several regions ({', '.join(sorted(found))}); "
            "choose one with --region"
        )
    return next(iter(found), "us-east-1")


def load_prices(
    paths: Sequence[Path], region: str | None = "us-east-1"
) -> tuple[features.PriceEvents, float, float]:
    """DescribeSpotPriceHistory-style CSVs (gzip or plain) as the risk model's price events.

    Needs columns ``timestamp``, ``availability_zone``, ``instance_type``,
    ``spot_price``; keeps Linux rows when a ``product_description``/``os`` column
    exists, and ``region`` rows when given. Returns (events, first hour, last hour).
    """
    acc: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for path in paths:
        for r in csv_rows(path):
            if not _linux(r):
                continue
            zone = r["availability_zone"]
            if region is not None and r.get("region", region) != region:
                continue
            hs, ps = acc.setdefault((r["instance_type"], zone), ([], []))
            hs.append(hours_of(r["timestamp"]))
            ps.append(float(r["spot_price"]))
    if not acc:
        raise ValueError(f"no Linux spot price rows in {[str(p) for p in paths]}")
    series = [(k[0], k[1], v[0], v[1]) for k, v in sorted(acc.items())]
    ev = features.events_from_series(series)
    return ev, float(ev.hours.min()), float(ev.hours.max())


# ---- advisor -----------------------------------------------------------------


@dataclass(frozen=True)
class AdvisorRecord:
    """One Spot Instance Advisor entry: the band (0..4) and savings of one Linux type."""

    snapshot: datetime  # UTC midnight of the snapshot date
    instance_type: str
    band: int
    savings_pct: float


def _date_in_name(name: str) -> str | None:
    m = re.search(r"(\d{4}-\d{2}-\d{2})", name)
    return m.group(1) if m else None


def _utc_date(text: str) -> datetime:
    d = date.fromisoformat(text.strip()[:10])
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def advisor_records(paths: Sequence[Path], region: str) -> list[AdvisorRecord]:
    """Linux advisor entries of ``region`` from the flattened CSV (``snapshot_date,
    region, instance_type, interruption_range_index, savings_pct_vs_ondemand``; other
    columns ignored) or AWS's raw ``spot-advisor-data.json`` (dated by a
    ``YYYY-MM-DD`` in its file name, else by the file's modification time)."""
    out: list[AdvisorRecord] = []
    for path in paths:
        try:
            if path.name.endswith((".json", ".json.gz")):
                with open_text(path) as fh:
                    doc: dict[str, Any] = json.load(fh)
                stamp = _date_in_name(path.name)
                when = (
                    _utc_date(stamp) if stamp else datetime.fromtimestamp(path.stat().st_mtime, UTC)
                )
                linux = doc.get("spot_advisor", {}).get(region, {}).get("Linux", {})
                for itype, entry in linux.items():
                    out.append(AdvisorRecord(when, itype, int(entry["r"]), float(entry["s"])))
            else:
                for r in csv_rows(path):
                    if r["region"] != region or r.get("os", "Linux") != "Linux":
                        continue
                    out.append(
                        AdvisorRecord(
                            _utc_date(r["snapshot_date"]),
                            r["instance_type"],
                            int(r["interruption_range_index"]),
                            float(r["savings_pct_vs_ondemand"]),
                        )
                    )
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read advisor {path}: {type(exc).__name__}: {exc}") from exc
    return out


def load_advisor_history(path: Path | None, region: str) -> market.AdvisorHistory:
    """Advisor snapshots as the engine's :class:`market.AdvisorHistory` (the bundled ones
    when ``path`` is None)."""
    if path is None:
        return market.load_bundled_advisor(region)
    acc: dict[date, dict[str, market.AdvisorEntry]] = {}
    for rec in advisor_records([path], region):
        acc.setdefault(rec.snapshot.date(), {})[rec.instance_type] = market.AdvisorEntry(
            band=rec.band, savings_pct=rec.savings_pct
        )
    if not acc:
        raise InputError(f"{path}: no advisor rows for {region}")
    return market.AdvisorHistory(region, tuple((d, acc[d]) for d in sorted(acc)))


def load_advisor_snapshots(
    paths: Sequence[Path], region: str = "us-east-1"
) -> dataset.AdvisorSnapshots:
    """Advisor snapshots as the risk dataset's mapping (hours since the epoch -> type ->
    (band, savings %))."""
    out: dict[float, dict[str, tuple[int, float]]] = {}
    for rec in advisor_records(paths, region):
        snap = out.setdefault(rec.snapshot.timestamp() / 3600.0, {})
        snap[rec.instance_type] = (rec.band, rec.savings_pct)
    return out

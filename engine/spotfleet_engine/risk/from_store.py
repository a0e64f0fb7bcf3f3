"""Training on the user's own market: price rows as the store holds them -> the same
features, labels, time-ordered split and calibration as ``spotfleet train``, and the
promotion gate a candidate model must pass.

Pure: takes rows (plain tuples), a catalog and advisor snapshots; never a database (the
toolbox reads the store and hands the rows here).

The split holds out the **last** weeks of the history: the test window is the last
``test_days`` of labelled rows, the validation window (early stopping, Platt
calibration) the ``val_days`` before it, training everything earlier (after the
trailing-window warm-up). No label window crosses a boundary (:class:`train.Split`).

The gate (:func:`verdict`): promote only when, on those held-out test weeks, the model's
average precision beats both single-signal baselines (advisor band, 72-h trailing
volatility) and its ECE is within ``max_ece``; otherwise the reasons are listed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine.risk import dataset, features, labels, train

#: Hours of history before the first training row (the longest trailing window).
WARMUP_H = 168.0
DEFAULT_TEST_DAYS = 7.0
DEFAULT_VAL_DAYS = 7.0
DEFAULT_MAX_ECE = 0.05
#: The baselines a candidate must beat on average precision.
GATE_BASELINES = ("advisor_band", "trailing_volatility_72h")

#: One stored price point: (instance type, zone, hours since the epoch, USD/h).
PriceRow = tuple[str, str, float, float]


def events_of(rows: Iterable[PriceRow]) -> tuple[features.PriceEvents, float, float, str]:
    """Price events from stored points; (events, first hour, last hour, SHA-256 of the
    points in canonical order: the artifact's record of what it was trained on)."""
    acc: dict[tuple[str, str], dict[float, float]] = {}
    for itype, zone, t, price in rows:
        if price > 0 and math.isfinite(price):
            acc.setdefault((itype, zone), {})[float(t)] = float(price)
    if not acc:
        raise ValueError("no price points")
    digest = hashlib.sha256()
    series = []
    for (itype, zone), pts in sorted(acc.items()):
        hours = sorted(pts)
        prices = [pts[h] for h in hours]
        for h, p in zip(hours, prices, strict=True):
            digest.update(f"{itype},{zone},{h:.6f},{p!r}\n".encode())
        series.append((itype, zone, hours, prices))
    ev = features.events_from_series(series)
    return ev, float(ev.hours.min()), float(ev.hours.max()), digest.hexdigest()


def last_weeks_split(
    first: float,
    last: float,
    horizon_h: float,
    test_days: float = DEFAULT_TEST_DAYS,
    val_days: float = DEFAULT_VAL_DAYS,
) -> train.Split:
    """Test = the last ``test_days`` of labelled rows, validation the ``val_days`` before,
    training the rest after the warm-up. Raises ValueError when the history is too short
    to hold all three."""
    labelled_end = last - horizon_h
    test_start = labelled_end - 24.0 * test_days
    val_start = test_start - 24.0 * val_days
    if val_start - horizon_h <= first + WARMUP_H:
        need = (WARMUP_H + horizon_h * 2) / 24.0 + test_days + val_days
        have = (last - first) / 24.0
        raise ValueError(
            f"{have:.1f} days of history; training on the last-weeks split needs more than "
            f"{need:.1f} (warm-up {WARMUP_H / 24:g} d, validation {val_days:g} d, test "
            f"{test_days:g} d, label horizon {horizon_h:g} h)"
        )
    return train.Split(
        train_end=val_start,
        val_start=val_start,
        val_end=test_start,
        test_start=test_start,
        horizon_h=horizon_h,
    )


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate is promoted, and why (every check with its figures)."""

    promote: bool
    reasons: tuple[str, ...]
    checks: Mapping[str, bool] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"promote": self.promote, "reasons": list(self.reasons), "checks": dict(self.checks)}


def verdict(test: Mapping[str, Mapping[str, Any]], max_ece: float = DEFAULT_MAX_ECE) -> Verdict:
    """The promotion gate on the held-out test results (:func:`train.evaluate`'s output)."""
    if not test or "xgboost" not in test:
        return Verdict(False, ("no held-out test rows: nothing to judge the model on",))
    m = test["xgboost"]
    ap, ece = float(m["average_precision"]), float(m["ece"])
    reasons: list[str] = []
    checks: dict[str, bool] = {}
    if not math.isfinite(ap) or float(m.get("base_rate", 0.0)) <= 0.0:
        return Verdict(False, ("the test weeks hold no positive rows: AP is undefined",))
    for name in GATE_BASELINES:
        base = float(test[name]["average_precision"])
        ok = ap > base
        checks[f"ap_beats_{name}"] = ok
        reasons.append(
            f"AP {ap:.4f} {'>' if ok else '<='} {name} AP {base:.4f}"
            + ("" if ok else f": does not beat the {name} baseline")
        )
    ok = math.isfinite(ece) and ece <= max_ece
    checks["ece_within_bound"] = ok
    reasons.append(
        f"ECE {ece:.4f} {'<=' if ok else '>'} bound {max_ece:g}"
        + ("" if ok else ": calibration outside the bound")
    )
    return Verdict(all(checks.values()), tuple(reasons), checks)


def train_from_rows(
    rows: Sequence[PriceRow],
    catalog: catalog_mod.Catalog,
    advisor: dataset.AdvisorSnapshots,
    region: str,
    horizon_h: float = labels.DEFAULT_HORIZON_H,
    threshold: float = labels.DEFAULT_THRESHOLD,
    test_days: float = DEFAULT_TEST_DAYS,
    val_days: float = DEFAULT_VAL_DAYS,
    rounds: int = train.DEFAULT_ROUNDS,
    seed: int = 0,
    nthread: int = 2,
    data: Sequence[Mapping[str, str]] = (),
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(artifact, validation results, test results) of a model trained on stored price
    points of one region, by :func:`train.train_model` on :func:`last_weeks_split`."""
    ev, first, last, digest = events_of(rows)
    split = last_weeks_split(first, last, horizon_h, test_days, val_days)
    built = dataset.build_rows(
        ev, catalog, advisor, first + WARMUP_H, last, last, horizon_h=horizon_h, threshold=threshold
    )
    entries = [
        {
            "role": "prices",
            "file": f"store:price_observations:{region}",
            "sha256": digest,
            "points": str(len(rows)),
        },
        *[dict(d) for d in data],
    ]
    return train.train_model(
        built,
        split,
        {"kind": "price_spike", "horizon_hours": horizon_h, "threshold": threshold},
        entries,
        rounds=rounds,
        seed=seed,
        nthread=nthread,
    )

"""The XGBoost interruption-risk model: artifact format, loading, fast scoring, the protocol.

The artifact is one JSON document (``data/risk_model.json`` is the bundled one):
the booster (XGBoost UBJSON, gzip, base64), the feature list, the label
definition, the Platt calibration, the training/validation/test windows, the
test metrics and the SHA-256 of every data file used. :func:`load_bundled` is
the only I/O here (``importlib.resources``).

Scoring: features for every pool of the market snapshot are built at once
(:func:`spotfleet_engine.risk.features.feature_matrix`), then one
``inplace_predict`` on a float32 array gives the margins; calibrated
probability = sigmoid(a x margin + b).
"""

from __future__ import annotations

import base64
import gzip
import importlib.resources
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_engine.risk import features

ARTIFACT_FORMAT = "spotfleet-risk-model"
ARTIFACT_VERSION = 1
BUNDLED_ARTIFACT = "risk_model.json"

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def encode_booster(booster: xgb.Booster) -> str:
    """Booster -> base64 of gzipped UBJSON (deterministic: gzip mtime 0)."""
    raw = bytes(booster.save_raw("ubj"))
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def decode_booster(text: str, nthread: int = 1) -> xgb.Booster:
    """Inverse of :func:`encode_booster`; the booster predicts with ``nthread`` threads."""
    raw = gzip.decompress(base64.b64decode(text))
    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(raw))
    booster.set_param({"nthread": nthread})
    return booster


def hours(dt: datetime) -> float:
    """Aware datetime -> hours since the Unix epoch."""
    return dt.timestamp() / 3600.0


class XGBoostRisk:
    """:class:`~spotfleet_engine.risk.protocol.RiskModel` backed by a trained artifact.

    Probability that a spot pool's price rises by >= ``threshold`` within
    ``horizon_hours`` (the reprice that makes spot capacity go away); on-demand
    pools get 0.0. A spot pool with no price history in the snapshot is scored
    from its static features alone.
    """

    def __init__(self, artifact: Mapping[str, Any], nthread: int = 1) -> None:
        if artifact.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"not a {ARTIFACT_FORMAT} artifact")
        if int(artifact.get("version", -1)) != ARTIFACT_VERSION:
            raise ValueError(f"unsupported artifact version {artifact.get('version')!r}")
        if tuple(artifact["features"]) != features.FEATURE_NAMES:
            raise ValueError("artifact feature list differs from this engine's features")
        self.artifact = dict(artifact)
        self.name: str = str(artifact["name"])
        self.horizon_hours: float = float(artifact["label"]["horizon_hours"])
        self.threshold: float = float(artifact["label"]["threshold"])
        cal = artifact["calibration"]
        self.cal_a = float(cal["a"])
        self.cal_b = float(cal["b"])
        self.booster = decode_booster(str(artifact["booster"]), nthread=nthread)
        self._cache_key: tuple[int, float] | None = None
        self._cache_ref: object | None = None
        self._cache: dict[tuple[str, str], float] = {}

    @property
    def metrics(self) -> Mapping[str, Any]:
        """The test metrics recorded at training time."""
        return dict(self.artifact["metrics"])

    def predict_features(self, x: F32) -> F64:
        """Calibrated probabilities for feature rows (float32, :data:`FEATURE_NAMES` columns)."""
        if x.shape[0] == 0:
            return np.zeros(0)
        margin = np.asarray(self.booster.inplace_predict(x, predict_type="margin"), np.float64)
        out: F64 = 0.5 * (1.0 + np.tanh(0.5 * (self.cal_a * margin + self.cal_b)))
        return out

    def market_features(
        self,
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
        extra: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[tuple[str, str]], F32]:
        """Feature rows at ``now`` for every pool in ``market`` (then ``extra`` pools
        without history). Points after ``now`` are ignored."""
        t_now = hours(now)
        keys = sorted(market.spot_history)
        series: list[tuple[str, str, list[float], list[float]]] = []
        for itype, zone in keys:
            pts = [pp for pp in market.spot_history[(itype, zone)] if pp.at <= now]
            series.append((itype, zone, [hours(pp.at) for pp in pts], [pp.price for pp in pts]))
        known = set(keys)
        extra_keys = [k for k in dict.fromkeys(extra) if k not in known]
        for itype, zone in extra_keys:
            series.append((itype, zone, [], []))
        ev = features.events_from_series(series)
        advisor = {n: (e.band, e.savings_pct) for n, e in market.advisor.items()}
        static = features.static_table(
            ev,
            catalog.types,
            catalog.on_demand_usd_per_hour,
            {n: len(z) for n, z in catalog.zones.items()},
            advisor,
        )
        pool = np.arange(ev.n_pools, dtype=np.int64)
        x = features.feature_matrix(ev, static, pool, np.full(ev.n_pools, t_now))
        return [*keys, *extra_keys], x

    def interruption_probability(
        self,
        pools: Sequence[model.Pool],
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> list[float]:
        """One calibrated probability per pool, in order; on-demand pools 0.0.

        Scores every pool of the snapshot at once and remembers the result for
        the same snapshot object and ``now``, so repeated calls are cheap.
        """
        key = (id(market), hours(now))
        wanted = [(p.instance_type, p.zone) for p in pools if p.market is model.Market.SPOT]
        missing = [k for k in wanted if k not in self._cache]
        if key != self._cache_key or self._cache_ref is not market or missing:
            names, x = self.market_features(market, catalog, now, extra=wanted)
            prob = self.predict_features(x)
            self._cache = {k: float(v) for k, v in zip(names, prob, strict=True)}
            self._cache_key = key
            self._cache_ref = market
        return [
            self._cache[(p.instance_type, p.zone)] if p.market is model.Market.SPOT else 0.0
            for p in pools
        ]


def load(doc: Mapping[str, Any] | str | bytes, nthread: int = 1) -> XGBoostRisk:
    """A model from an artifact (parsed JSON, or its text)."""
    if isinstance(doc, str | bytes):
        doc = json.loads(doc)
    assert isinstance(doc, Mapping)
    return XGBoostRisk(doc, nthread=nthread)


def load_bundled(nthread: int = 1) -> XGBoostRisk:
    """The model bundled in the package (``spotfleet_engine/data/risk_model.json``)."""
    ref = importlib.resources.files("spotfleet_engine").joinpath("data", BUNDLED_ARTIFACT)
    return load(ref.read_text(encoding="utf-8"), nthread=nthread)

"""The XGBoost interruption-risk model: artifact format, loading, fast scoring, the protocol.

The artifact is one JSON document (``data/risk_model.json`` is the bundled one):
the booster (XGBoost UBJSON, gzip, base64), the feature list, the label
definition, the Platt calibration, the training/validation/test windows, the
test metrics and the SHA-256 of every data file used. :func:`load_bundled` is
the only I/O here (``importlib.resources``).

Scoring: features for every pool of the market snapshot are built at once
(:mod:`spotfleet_engine.risk.serving`, the same rows as the training path),
then the compiled trees (:mod:`spotfleet_engine.risk.forest`, a numba kernel,
one thread; the same margins as xgboost's ``inplace_predict``, checked on probe
rows at load, else xgboost's predictor) give the margins of the pools asked
about on a float32 array; calibrated probability = sigmoid(a x margin + b).
Features and probabilities are kept per (snapshot history, advisor, catalog,
now) in a small LRU, so every later call on the same market is a lookup.
Spot pools without :attr:`XGBoostRisk.min_history_hours` of history get the
advisor-band probability (:func:`spotfleet_engine.risk.advisor.band_probability`).
"""

from __future__ import annotations

import base64
import gzip
import importlib.resources
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine import model
from spotfleet_engine.risk import advisor as advisor_mod
from spotfleet_engine.risk import features, forest, serving

if TYPE_CHECKING:
    import xgboost as xgb

ARTIFACT_FORMAT = "spotfleet-risk-model"
ARTIFACT_VERSION = 1
BUNDLED_ARTIFACT = "risk_model.json"
#: Default history a spot pool needs before the model scores it (hours before
#: ``now`` covered by its price history); shorter -> advisor-band probability.
MIN_HISTORY_HOURS = 24.0
#: Markets (snapshot history x advisor x catalog x now) whose scores are kept.
CACHE_SIZE = 4

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
#: How the margins are computed: ``auto`` (the numba kernel, checked against xgboost at
#: load, else xgboost's predictor), ``numpy`` (the artifact's compiled forest evaluated
#: by numpy: neither xgboost nor numba is loaded; what the operator uses) or ``xgboost``.
Scorer = Literal["auto", "numpy", "xgboost"]


def encode_booster(booster: xgb.Booster) -> str:
    """Booster -> base64 of gzipped UBJSON (deterministic: gzip mtime 0)."""
    raw = bytes(booster.save_raw("ubj"))
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def decode_booster(text: str, nthread: int = 1) -> xgb.Booster:
    """Inverse of :func:`encode_booster`; the booster predicts with ``nthread`` threads."""
    import xgboost as xgb

    raw = gzip.decompress(base64.b64decode(text))
    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(raw))
    booster.set_param({"nthread": nthread})
    return booster


def hours(dt: datetime) -> float:
    """Aware datetime -> hours since the Unix epoch."""
    return dt.timestamp() / 3600.0


@dataclass
class _Market:
    """One market's features (one row per snapshot pool) and probabilities: per
    snapshot pool (NaN until predicted), then per asked pool absent from the snapshot
    (advisor band); ``index`` numbers both."""

    index: dict[tuple[str, str], int]
    x: F32
    prob: F64


class XGBoostRisk:
    """:class:`~spotfleet_engine.risk.protocol.RiskModel` backed by a trained artifact.

    Probability that a spot pool's price rises by >= ``threshold`` within
    ``horizon_hours`` (the reprice that makes spot capacity go away); on-demand
    pools get 0.0. A spot pool whose history in the snapshot does not reach
    back ``min_history_hours`` before ``now`` (including pools absent from the
    snapshot) gets the advisor-band probability of its type instead: the model
    has nothing but static features to go on for those.
    """

    def __init__(
        self,
        artifact: Mapping[str, Any],
        nthread: int = 1,
        min_history_hours: float = MIN_HISTORY_HOURS,
        scorer: Scorer = "auto",
    ) -> None:
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
        self.min_history_hours = float(min_history_hours)
        cal = artifact["calibration"]
        self.cal_a = float(cal["a"])
        self.cal_b = float(cal["b"])
        self.nthread = nthread
        self.booster: xgb.Booster | None = None
        #: the compiled trees when they reproduce xgboost's margins on probe rows, else
        #: None (then xgboost's own predictor scores)
        self.forest: forest.Forest | None = None
        if scorer == "numpy":
            if "forest" not in artifact:
                raise ValueError("the artifact carries no compiled forest: retrain it")
            self.forest = forest.from_doc(artifact["forest"])
            self.scorer = "numpy"
        else:
            self.booster = decode_booster(str(artifact["booster"]), nthread=nthread)
            if scorer == "auto":
                self.forest = forest.compile_checked(self.booster)
            self.scorer = "xgboost" if self.forest is None else "forest"
        self._band_prob = [
            advisor_mod.band_probability(b, self.horizon_hours)
            for b in range(len(advisor_mod.BAND_MONTHLY_RATE))
        ]
        self._static: serving.IdentityLRU[serving.StaticCache] = serving.IdentityLRU(CACHE_SIZE)
        self._markets: serving.IdentityLRU[_Market] = serving.IdentityLRU(CACHE_SIZE)
        self._seconds = serving.PointMemo()  # PricePoint -> seconds, price across markets
        self._lock = threading.Lock()  # the caches are shared by every caller

    @property
    def metrics(self) -> Mapping[str, Any]:
        """The test metrics recorded at training time."""
        return dict(self.artifact["metrics"])

    def predict_features(self, x: F32) -> F64:
        """Calibrated probabilities for feature rows (float32, :data:`FEATURE_NAMES` columns)."""
        if x.shape[0] == 0:
            return np.zeros(0)
        if self.scorer == "numpy":
            assert self.forest is not None
            margin = self.forest.margin_numpy(x).astype(np.float64)
        elif self.forest is not None:
            margin = self.forest.margin(x, threads=self.nthread).astype(np.float64)
        else:
            assert self.booster is not None
            margin = np.asarray(self.booster.inplace_predict(x, predict_type="margin"), np.float64)
        return self.calibrate(margin)

    def calibrate(self, margin: F64) -> F64:
        """Platt calibration of raw margins: sigmoid(a x margin + b)."""
        out: F64 = 0.5 * (1.0 + np.tanh(0.5 * (self.cal_a * margin + self.cal_b)))
        return out

    def clear_cache(self) -> None:
        """Forget every cached market and static table (the next call recomputes)."""
        with self._lock:
            self._static.clear()
            self._markets.clear()
            self._seconds = serving.PointMemo()

    def fallback_probability(self, instance_type: str, market: market_mod.MarketSnapshot) -> float:
        """The advisor-band probability of a spot pool of ``instance_type`` (unlisted: the
        middle band), used for pools without enough history."""
        entry = market.advisor.get(instance_type)
        band = entry.band if entry is not None else advisor_mod.UNKNOWN_BAND
        return self._band_prob[min(max(band, 0), len(self._band_prob) - 1)]

    def _static_for(
        self, market: market_mod.MarketSnapshot, catalog: catalog_mod.Catalog
    ) -> serving.StaticCache:
        key = (catalog, market.advisor)
        static = self._static.get(key)
        if static is None:
            static = serving.StaticCache(catalog, market.advisor)
            self._static.put(key, static)
        return static

    def market_features(
        self,
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> tuple[tuple[tuple[str, str], ...], F32, F64]:
        """Feature rows at ``now`` for every pool in ``market`` (sorted by (type, zone)),
        and each pool's first hour of history at or before ``now`` (NaN: none).
        Points after ``now`` are ignored."""
        with self._lock:
            return self._market_features(market, catalog, now)

    def _market_features(
        self,
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> tuple[tuple[tuple[str, str], ...], F32, F64]:
        se = serving.snapshot_events(market.spot_history, now, self._seconds)
        static = self._static_for(market, catalog).table(se.events.types)
        n = se.events.n_pools
        pool = np.arange(n, dtype=np.int64)
        x = features.feature_matrix(se.events, static, pool, np.full(n, hours(now)))
        return se.keys, x, se.first_hour

    def _market(
        self, market: market_mod.MarketSnapshot, catalog: catalog_mod.Catalog, now: datetime
    ) -> _Market:
        t_now = hours(now)
        objs = (market.spot_history, market.advisor, catalog)
        hit = self._markets.get(objs, (t_now,))
        if hit is not None:
            return hit
        keys, x, first = self._market_features(market, catalog, now)
        prob = np.full(len(keys), np.nan)
        # not enough history (NaN first hour compares False): the advisor band
        for i in np.flatnonzero(~(first <= t_now - self.min_history_hours)).tolist():
            prob[i] = self.fallback_probability(keys[i][0], market)
        entry = _Market({k: i for i, k in enumerate(keys)}, x, prob)
        self._markets.put(objs, entry, (t_now,))
        return entry

    def interruption_probability(
        self,
        pools: Sequence[model.Pool],
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> list[float]:
        """One calibrated probability per pool, in order; on-demand pools 0.0.

        Builds the features of every pool of the snapshot once per market
        (the same ``spot_history``, ``advisor`` and ``catalog`` objects and
        ``now``), predicts only the pools asked about not yet predicted, and
        keeps the results, so repeated calls on one market are lookups. The
        snapshot's history must not be mutated after it is first scored.
        Thread-safe (one call at a time per model).
        """
        with self._lock:
            return self._probabilities(pools, market, catalog, now)

    def _probabilities(
        self,
        pools: Sequence[model.Pool],
        market: market_mod.MarketSnapshot,
        catalog: catalog_mod.Catalog,
        now: datetime,
    ) -> list[float]:
        m = self._market(market, catalog, now)
        index = m.index
        spot = model.Market.SPOT
        rows = np.fromiter(
            (index.get((p.instance_type, p.zone), -1) if p.market is spot else -2 for p in pools),
            dtype=np.int64,
            count=len(pools),
        )
        absent = np.flatnonzero(rows == -1)
        if absent.size:  # spot pools not in the snapshot: advisor band, remembered too
            extra: list[float] = []
            for i in absent.tolist():
                p = pools[i]
                key = (p.instance_type, p.zone)
                row = index.get(key)
                if row is None:
                    row = index[key] = len(index)
                    extra.append(self.fallback_probability(p.instance_type, market))
                rows[i] = row
            m.prob = np.concatenate([m.prob, extra])
        safe = np.maximum(rows, 0)
        if not m.prob.size:
            return [0.0] * len(pools)
        todo = np.unique(safe[(rows >= 0) & np.isnan(m.prob[safe])])
        if todo.size:  # rows with features (pools of the snapshot) not yet predicted
            m.prob[todo] = self.predict_features(np.ascontiguousarray(m.x[todo]))
        out = m.prob[safe]
        out[rows == -2] = 0.0
        result: list[float] = out.tolist()
        return result


def load(
    doc: Mapping[str, Any] | str | bytes, nthread: int = 1, scorer: Scorer = "auto"
) -> XGBoostRisk:
    """A model from an artifact (parsed JSON, or its text)."""
    if isinstance(doc, str | bytes):
        doc = json.loads(doc)
    assert isinstance(doc, Mapping)
    return XGBoostRisk(doc, nthread=nthread, scorer=scorer)


def load_bundled(nthread: int = 1, scorer: Scorer = "auto") -> XGBoostRisk:
    """The model bundled in the package (``spotfleet_engine/data/risk_model.json``)."""
    ref = importlib.resources.files("spotfleet_engine").joinpath("data", BUNDLED_ARTIFACT)
    return load(ref.read_text(encoding="utf-8"), nthread=nthread, scorer=scorer)


def forest_section(booster: xgb.Booster) -> dict[str, Any] | None:
    """The artifact's compiled-forest section for ``booster`` (None when it does not
    compile): the flat trees and xgboost's margins on the probe rows."""
    try:
        compiled = forest.compile_booster(booster)
    except ValueError:
        return None
    probe = forest.probe_rows(compiled)
    margins = np.asarray(booster.inplace_predict(probe, predict_type="margin"), np.float32)
    return forest.to_doc(compiled, margins)

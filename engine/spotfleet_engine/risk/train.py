"""Training and evaluation of the spike model and its baselines on a strictly time-ordered split.

Pure: takes :class:`~spotfleet_engine.risk.dataset.Rows`, returns dictionaries.
Train on rows whose label window ends before ``train_end``; tune (early stopping)
and calibrate (Platt) on the validation window; measure once on the test
window. The validation rows' label windows end before ``test_start``, so no
24-h label crosses a boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from spotfleet_engine.risk import dataset, features, metrics
from spotfleet_engine.risk import xgb as xgb_mod

F64 = npt.NDArray[np.float64]

#: Hyper-parameters chosen on the validation weeks only (docs/risk.md lists what was tried).
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "aucpr",
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.03,
    "min_child_weight": 10,
    "subsample": 0.8,
    "colsample_bytree": 0.5,
    "reg_lambda": 10.0,
    "max_bin": 64,
    "scale_pos_weight": 2.0,
}
#: At most this many rounds, truncated to the best validation-AP round among them:
#: validation AUC peaks near 60-120 rounds and falls after while AP still creeps up.
DEFAULT_ROUNDS = 120
EARLY_STOPPING = 100

#: The single-signal baselines and the feature each one uses.
SINGLE_SIGNAL_BASELINES: dict[str, str] = {
    "advisor_band": "advisor_band",
    "trailing_volatility_72h": "rvol_72h",
}


@dataclass(frozen=True)
class Split:
    """Window boundaries in hours since the epoch."""

    train_end: float
    val_start: float
    val_end: float
    test_start: float
    horizon_h: float

    def parts(self, rows: dataset.Rows) -> tuple[dataset.Rows, dataset.Rows, dataset.Rows]:
        """(train, validation, test) rows; every label window stays inside its part."""
        h = self.horizon_h
        train = rows.select(rows.t + h <= self.train_end)
        val = rows.select((rows.t >= self.val_start) & (rows.t + h <= self.val_end))
        test = rows.select(rows.t >= self.test_start)
        return train, val, test

    def to_json(self) -> dict[str, float]:
        """JSON-ready form."""
        return {
            "train_end": self.train_end,
            "val_start": self.val_start,
            "val_end": self.val_end,
            "test_start": self.test_start,
            "horizon_h": self.horizon_h,
        }


class _Progress(xgb.callback.TrainingCallback):
    def __init__(self, fn: Callable[[int], None]) -> None:
        super().__init__()
        self.fn = fn

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.fn(epoch + 1)
        return False


def fit_booster(
    train: dataset.Rows,
    val: dataset.Rows,
    params: Mapping[str, Any] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    early_stopping: int = EARLY_STOPPING,
    seed: int = 0,
    nthread: int = 2,
    on_round: Callable[[int], None] | None = None,
) -> xgb.Booster:
    """XGBoost fitted on ``train``, early-stopped on validation average precision,
    truncated to the best round. Deterministic for fixed seed and nthread."""
    p = {**DEFAULT_PARAMS, **(params or {}), "seed": seed, "nthread": nthread}
    names = list(features.FEATURE_NAMES)
    dtr = xgb.DMatrix(train.x, train.y, feature_names=names, nthread=nthread)
    dva = xgb.DMatrix(val.x, val.y, feature_names=names, nthread=nthread)
    callbacks = [_Progress(on_round)] if on_round else []
    booster = xgb.train(
        p,
        dtr,
        num_boost_round=rounds,
        evals=[(dva, "validation")],
        early_stopping_rounds=early_stopping,
        verbose_eval=False,
        callbacks=callbacks,
    )
    # the best validation-AP round, but at least half the rounds: on a small
    # validation set AP can peak at the first tree by chance
    best = max(int(booster.best_iteration) + 1, rounds // 2)
    out: xgb.Booster = booster[: min(best, booster.num_boosted_rounds())]
    return out


@dataclass(frozen=True)
class Baselines:
    """Fitted baselines: one logistic per single signal, and one on all features."""

    single: Mapping[str, metrics.Logistic]
    linear: metrics.Logistic

    def predict(self, x: npt.NDArray[np.float32]) -> dict[str, F64]:
        """Probabilities of every baseline for feature rows ``x``."""
        out: dict[str, F64] = {}
        for name, feat in SINGLE_SIGNAL_BASELINES.items():
            j = features.FEATURE_NAMES.index(feat)
            out[name] = self.single[name].predict(x[:, j : j + 1])
        out["logistic_regression"] = self.linear.predict(x)
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "single": {k: v.to_json() for k, v in self.single.items()},
            "logistic_regression": self.linear.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Baselines:
        """Inverse of :meth:`to_json`."""
        return cls(
            {k: metrics.Logistic.from_json(v) for k, v in doc["single"].items()},
            metrics.Logistic.from_json(doc["logistic_regression"]),
        )


def fit_baselines(train: dataset.Rows) -> Baselines:
    """Fit the baselines on the training rows (never on validation or test)."""
    single = {}
    for name, feat in SINGLE_SIGNAL_BASELINES.items():
        j = features.FEATURE_NAMES.index(feat)
        single[name] = metrics.fit_logistic(train.x[:, j : j + 1], train.y, l2=1e-3)
    linear = metrics.fit_logistic(train.x, train.y, l2=1.0, max_iter=300)
    return Baselines(single, linear)


def evaluate(
    model: xgb_mod.XGBoostRisk, baselines: Baselines, rows: dataset.Rows
) -> dict[str, dict[str, Any]]:
    """Metrics (:func:`metrics.summary`) of the model and every baseline on ``rows``."""
    out = {"xgboost": metrics.summary(rows.y, model.predict_features(rows.x))}
    for name, p in baselines.predict(rows.x).items():
        out[name] = metrics.summary(rows.y, p)
    return out


def headline(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The artifact's ``metrics`` keys from :func:`evaluate`'s output on the test rows."""
    best = max(SINGLE_SIGNAL_BASELINES, key=lambda k: results[k]["average_precision"])
    m = results["xgboost"]
    return {
        "auc": m["auc"],
        "average_precision": m["average_precision"],
        "ece": m["ece"],
        "brier": m["brier"],
        "best_baseline": best,
        "best_baseline_average_precision": results[best]["average_precision"],
    }


def build_artifact(
    booster: xgb.Booster,
    calibration: tuple[float, float],
    baselines: Baselines,
    split: Split,
    label: Mapping[str, Any],
    params: Mapping[str, Any],
    seed: int,
    nthread: int,
    data: list[dict[str, str]],
    name: str = "xgboost-price-spike",
) -> dict[str, Any]:
    """A versioned artifact without metrics (add them with :func:`with_metrics`)."""
    return {
        "format": xgb_mod.ARTIFACT_FORMAT,
        "version": xgb_mod.ARTIFACT_VERSION,
        "name": name,
        "label": dict(label),
        "features": list(features.FEATURE_NAMES),
        "training_window": split.to_json(),
        "params": {**DEFAULT_PARAMS, **params},
        "seed": seed,
        "nthread": nthread,
        "xgboost_version": xgb.__version__,
        "n_trees": booster.num_boosted_rounds(),
        "calibration": {"method": "platt", "a": calibration[0], "b": calibration[1]},
        "baselines": baselines.to_json(),
        "data": data,
        "metrics": {},
        "booster": xgb_mod.encode_booster(booster),
        **({"forest": f} if (f := xgb_mod.forest_section(booster)) is not None else {}),
    }


def train_model(
    rows: dataset.Rows,
    split: Split,
    label: Mapping[str, Any],
    data: list[dict[str, str]],
    params: Mapping[str, Any] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    nthread: int = 2,
    on_round: Callable[[int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Train, calibrate, fit baselines, measure. Returns (artifact, validation
    results, test results); the artifact's ``metrics`` holds the test headline
    plus every baseline's test figures."""
    stage = on_stage or (lambda _s: None)
    train, val, test = split.parts(rows)
    if not (train.y.sum() and val.y.sum()):
        raise ValueError("training and validation windows need positive rows")
    stage(f"boosting on {train.y.size:,} rows, early stopping on {val.y.size:,}")
    booster = fit_booster(train, val, params, rounds, seed=seed, nthread=nthread, on_round=on_round)
    margin = np.asarray(booster.inplace_predict(val.x, predict_type="margin"), np.float64)
    cal = metrics.fit_platt(1.0 / (1.0 + np.exp(-margin)), val.y)
    stage("fitting baselines on the training rows")
    baselines = fit_baselines(train)
    artifact = build_artifact(
        booster, cal, baselines, split, label, params or {}, seed, nthread, data
    )
    model = xgb_mod.XGBoostRisk(artifact, nthread=nthread)
    stage("measuring on validation and test")
    val_res = evaluate(model, baselines, val)
    test_res = evaluate(model, baselines, test) if test.y.size else {}
    artifact["metrics"] = (
        {
            **headline(test_res),
            "test_rows": int(test.y.size),
            "test_positives": int(test.y.sum()),
            "baselines": {
                k: {m: v[m] for m in ("auc", "average_precision", "brier", "ece")}
                for k, v in test_res.items()
                if k != "xgboost"
            },
            "validation": {
                k: {m: v[m] for m in ("auc", "average_precision", "brier", "ece")}
                for k, v in val_res.items()
            },
        }
        if test_res
        else {}
    )
    return artifact, val_res, test_res

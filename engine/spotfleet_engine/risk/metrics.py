"""Scores for probabilistic forecasts of a rare event, and two small fitted maps.

Pure numpy/scipy (no scikit-learn at run time): ROC AUC, average precision
(the step-wise area under the precision-recall curve, as scikit-learn defines
it), Brier score, a calibration table on fixed probability bins and the expected
calibration error over the same bins; Platt scaling and an L2 logistic
regression used for calibration and for the linear baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

F64 = npt.NDArray[np.float64]

#: Probability bin edges of the calibration table (fine at the low end: the class is rare).
CALIBRATION_EDGES: tuple[float, ...] = (
    0.0,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.4,
    0.7,
    1.0,
)


def roc_auc(y: F64, p: F64) -> float:
    """Area under the ROC curve (ties count one half); NaN without both classes."""
    y = np.asarray(y, dtype=np.float64)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: F64, p: F64) -> float:
    """Sum over distinct thresholds of (recall step) x precision; NaN without positives."""
    yb = np.asarray(y, dtype=np.float64) > 0.5
    if not yb.any():
        return float("nan")
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ps = np.asarray(p)[order]
    ys = yb[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    last = np.r_[np.flatnonzero(np.diff(ps)), ys.size - 1]  # end of each tie block
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y: F64, p: F64) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((np.asarray(p) - np.asarray(y)) ** 2))


def calibration_table(y: F64, p: F64) -> list[dict[str, float]]:
    """Per bin of :data:`CALIBRATION_EDGES`: count, mean predicted probability,
    observed positive rate (empty bins are left out)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    edges = np.asarray(CALIBRATION_EDGES)
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, edges.size - 2)
    out = []
    for k in range(edges.size - 1):
        sel = b == k
        n = int(sel.sum())
        if n:
            out.append(
                {
                    "lo": float(edges[k]),
                    "hi": float(edges[k + 1]),
                    "n": float(n),
                    "mean_predicted": float(p[sel].mean()),
                    "observed_rate": float(y[sel].mean()),
                }
            )
    return out


def ece(y: F64, p: F64) -> float:
    """Expected calibration error: count-weighted mean |predicted - observed| over the
    bins of :func:`calibration_table`."""
    rows = calibration_table(y, p)
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["mean_predicted"] - r["observed_rate"]) for r in rows) / total)


def summary(y: F64, p: F64) -> dict[str, Any]:
    """AUC, average precision, Brier, ECE, base rate, row count and calibration table."""
    return {
        "auc": roc_auc(y, p),
        "average_precision": average_precision(y, p),
        "brier": brier(y, p),
        "ece": ece(y, p),
        "base_rate": float(np.mean(y)),
        "rows": int(np.size(y)),
        "calibration": calibration_table(y, p),
    }


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def logit(p: F64) -> F64:
    """log(p / (1 - p)), clipped away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    out: F64 = np.log(q / (1.0 - q))
    return out


@dataclass(frozen=True)
class Logistic:
    """p = sigmoid(((x - center) / scale) @ coef + intercept); NaN inputs take ``center``."""

    center: F64
    scale: F64
    coef: F64
    intercept: float

    def predict(self, x: npt.NDArray[Any]) -> F64:
        """Probabilities for rows ``x`` (2-D)."""
        z = np.asarray(x, dtype=np.float64)
        z = np.where(np.isfinite(z), z, self.center)
        z = (z - self.center) / self.scale
        return _sigmoid(z @ self.coef + self.intercept)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Logistic:
        """Inverse of :meth:`to_json`."""
        return cls(
            np.asarray(doc["center"], dtype=np.float64),
            np.asarray(doc["scale"], dtype=np.float64),
            np.asarray(doc["coef"], dtype=np.float64),
            float(doc["intercept"]),
        )


def fit_logistic(x: npt.NDArray[Any], y: F64, l2: float = 1.0, max_iter: int = 500) -> Logistic:
    """L2-penalised logistic regression (penalty ``l2`` on standardised coefficients,
    per row-mean loss x n), fitted with L-BFGS; NaNs are imputed with the median."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(y, dtype=np.float64)
    center = np.nanmedian(x, axis=0)
    center = np.where(np.isfinite(center), center, 0.0)
    z = np.where(np.isfinite(x), x, center)
    scale = z.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (z - center) / scale
    d = z.shape[1]

    def loss(w: F64) -> tuple[float, F64]:
        eta = z @ w[:d] + w[d]
        # log(1 + e^eta) - y * eta, stable
        lse = np.logaddexp(0.0, eta)
        val = float(np.sum(lse - y * eta) + 0.5 * l2 * np.dot(w[:d], w[:d]))
        r = _sigmoid(eta) - y
        grad = np.empty(d + 1)
        grad[:d] = z.T @ r + l2 * w[:d]
        grad[d] = r.sum()
        return val, grad

    w0 = np.zeros(d + 1)
    prior = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    w0[d] = np.log(prior / (1 - prior))
    res = optimize.minimize(loss, w0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w = np.asarray(res.x, dtype=np.float64)
    return Logistic(center, scale, w[:d], float(w[d]))


def fit_platt(p: F64, y: F64) -> tuple[float, float]:
    """Platt scaling on the log-odds: calibrated = sigmoid(a * logit(p) + b)."""
    lr = fit_logistic(logit(p)[:, None], y, l2=1e-6)
    a = float(lr.coef[0] / lr.scale[0])
    b = float(lr.intercept - a * lr.center[0])
    return a, b


def apply_platt(p: F64, a: float, b: float) -> F64:
    """Apply :func:`fit_platt`'s map."""
    return _sigmoid(a * logit(p) + b)

"""Loading a risk model by name: the one loader the operator and the tools share."""

from __future__ import annotations

from pathlib import Path

from spotfleet_engine.risk import advisor
from spotfleet_engine.risk import protocol as risk_protocol


class RiskModelError(ValueError):
    """The named risk model cannot be loaded; the message names it and why."""


def load(
    name: str, horizon_hours: float | None = None, scorer: str = "auto"
) -> risk_protocol.RiskModel:
    """``advisor``: the advisor-band model (over ``horizon_hours`` when given);
    ``bundled``: the bundled XGBoost spike model combined with the advisor band
    (:mod:`spotfleet_engine.risk.combined`); anything else: the path of an XGBoost
    artifact, combined with the band the same way. No silent fallback: a model that
    cannot load raises :class:`RiskModelError`. ``scorer`` (see
    :data:`spotfleet_engine.risk.xgb.Scorer`): the operator passes ``numpy``, which keeps
    xgboost and numba out of its memory."""
    if name == "advisor":
        if horizon_hours is None:
            return advisor.AdvisorBandRisk()
        return advisor.AdvisorBandRisk(horizon_hours=horizon_hours)
    from spotfleet_engine.risk import combined, xgb

    how: xgb.Scorer = "numpy" if scorer == "numpy" else "xgboost" if scorer == "xgboost" else "auto"
    try:
        if name == "bundled":
            return combined.load_bundled(scorer=how)
        return combined.CombinedRisk(xgb.load(Path(name).read_text(encoding="utf-8"), scorer=how))
    except (OSError, ValueError) as exc:
        raise RiskModelError(f"cannot load risk model {name!r}: {exc}") from exc


def artifact_version(text: str | bytes) -> str:
    """The version of an artifact: the first 12 hex digits of its SHA-256."""
    import hashlib

    raw = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(raw).hexdigest()[:12]


def version_of(name: str) -> str:
    """The version the operator reports for the model ``name`` (what :func:`load` takes):
    ``advisor``, or the artifact's hash (the bundled file's for ``bundled``)."""
    if name == "advisor":
        return "advisor"
    try:
        if name == "bundled":
            import importlib.resources

            from spotfleet_engine.risk import xgb

            ref = importlib.resources.files("spotfleet_engine").joinpath(
                "data", xgb.BUNDLED_ARTIFACT
            )
            return artifact_version(ref.read_bytes())
        return artifact_version(Path(name).read_bytes())
    except OSError:
        return "unknown"


def from_artifact(text: str, scorer: str = "auto") -> risk_protocol.RiskModel:
    """A model from an artifact's JSON text (the store's promoted model), combined with
    the advisor band like :func:`load`."""
    from spotfleet_engine.risk import combined, xgb

    how: xgb.Scorer = "numpy" if scorer == "numpy" else "xgboost" if scorer == "xgboost" else "auto"
    try:
        return combined.CombinedRisk(xgb.load(text, scorer=how))
    except (ValueError, KeyError) as exc:
        raise RiskModelError(f"cannot load the store's risk model: {exc}") from exc

"""Interruption-risk models: the protocol, an advisor-band baseline, and the XGBoost model."""

from spotfleet_engine.risk.advisor import AdvisorBandRisk as AdvisorBandRisk
from spotfleet_engine.risk.protocol import RiskModel

__all__ = ["RiskModel"]

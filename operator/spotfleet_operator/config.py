"""OperatorConfig: every setting from flags or SPOTFLEET_* environment variables,
validated once at start-up, reporting every error at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pydantic

ENV_PREFIX = "SPOTFLEET_"


class ConfigError(ValueError):
    """Invalid configuration; the message lists every bad setting by name."""


class OperatorConfig(pydantic.BaseModel):
    """Operator settings. Durations are seconds."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    namespaces: tuple[str, ...] = pydantic.Field(
        default=(), description="Namespaces to watch; empty means all namespaces."
    )
    reconcile_interval_seconds: float = pydantic.Field(default=60.0, gt=0, le=86_400)
    metrics_port: int = pydantic.Field(default=8080, ge=0, le=65_535)
    health_port: int = pydantic.Field(default=8081, ge=0, le=65_535)
    aws_endpoint_url: str | None = pydantic.Field(
        default=None, description="Send every AWS call here (the stand-in cloud); None: AWS."
    )
    aws_region: str = pydantic.Field(
        default="us-east-1",
        pattern=r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$",
        description="Region of the operator's own AWS calls (the interruption queue); "
        "each policy acts in its own spec.region.",
    )
    database_url: str = pydantic.Field(
        default="sqlite+aiosqlite:///spotfleet-audit.db",
        description="Audit store: postgresql://... or sqlite:///path.",
    )
    unavailable_pool_ttl_seconds: float = pydantic.Field(default=300.0, gt=0)
    market_lookback_hours: float = pydantic.Field(default=72.0, gt=0, le=24 * 90)
    market_cache_seconds: float = pydantic.Field(default=30.0, ge=0)
    failures_before_degraded: int = pydantic.Field(default=3, ge=1)
    interruption_queue_url: str | None = pydantic.Field(
        default=None, description="SQS queue fed by the EventBridge rule for EC2 spot events."
    )
    interruption_poll_seconds: float = pydantic.Field(default=5.0, gt=0)
    finalizer_max_attempts: int = pydantic.Field(
        default=20,
        ge=1,
        description="After this many failed cleanup attempts with permanent errors, release "
        "the finalizer with a Warning Event listing what was left.",
    )
    risk_model: str = pydantic.Field(
        default="bundled", description="'bundled' (XGBoost artifact), 'advisor', or a path."
    )
    watch_server_timeout_seconds: int = pydantic.Field(default=300, gt=0)
    watch_client_timeout_seconds: int = pydantic.Field(default=330, gt=0)
    log_level: str = pydantic.Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    @pydantic.model_validator(mode="after")
    def _timeouts(self) -> OperatorConfig:
        if self.watch_client_timeout_seconds <= self.watch_server_timeout_seconds:
            raise ValueError(
                "watch_client_timeout_seconds must exceed watch_server_timeout_seconds"
            )
        return self

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> OperatorConfig:
        """Settings from ``env`` (default os.environ, SPOTFLEET_<FIELD>), then ``overrides``
        (flags; None values ignored). Raises ConfigError naming every bad setting."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in env:
                value: Any = env[key]
                if name == "namespaces":
                    value = tuple(v.strip() for v in value.split(",") if v.strip())
                raw[name] = value
        for k, v in (overrides or {}).items():
            if v is not None:
                raw[k] = v
        try:
            return cls.model_validate(raw)
        except pydantic.ValidationError as e:
            lines = []
            for err in e.errors(include_url=False):
                field = ".".join(str(p) for p in err["loc"]) or "config"
                env_name = ENV_PREFIX + field.upper() if field in cls.model_fields else ""
                hint = f" ({env_name})" if env_name else ""
                lines.append(f"{field}{hint}: {err['msg']}")
            raise ConfigError("invalid operator configuration: " + "; ".join(lines)) from None

"""OperatorConfig: every setting of ``spotfleet run``, in one place.

Each field has a description with its unit and belongs to a group (``group`` in its
schema extra: how ``spotfleet run --help`` and docs/operator.md list them). A field
is set by the flag ``--<field-name-with-dashes>`` (or the short alias in
``flag``), else by the environment variable ``SPOTFLEET_<FIELD_NAME>``, else its
default. The configuration is validated once at start-up and every bad setting is
reported at once; nothing reads the environment after that (the Kopf registry is
built from this object).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pydantic

ENV_PREFIX = "SPOTFLEET_"

#: The groups, in the order the help lists them.
GROUPS: tuple[tuple[str, str], ...] = (
    ("scope", "What this operator (shard) watches"),
    ("reconcile", "Reconciling"),
    ("aws", "AWS"),
    ("interruptions", "Interruption notices"),
    ("kubernetes", "Kubernetes"),
    ("store", "Store (decisions, actions, interruptions, prices, ledger, models)"),
    ("jobs", "Store jobs (price ingestion, ledger roll-up, retention)"),
    ("serving", "Endpoints and logs"),
)


class ConfigError(ValueError):
    """Invalid configuration; the message lists every bad setting by name."""


def _f(default: Any, group: str, description: str, flag: str | None = None, **kw: Any) -> Any:
    extra: dict[str, Any] = {"group": group}
    if flag:
        extra["flag"] = flag
    return pydantic.Field(default=default, description=description, json_schema_extra=extra, **kw)


class OperatorConfig(pydantic.BaseModel):
    """Operator settings (durations in seconds unless a name says otherwise)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    # -- scope ---------------------------------------------------------------
    namespaces: tuple[str, ...] = _f(
        (), "scope", "Namespaces to watch (comma-separated in the environment); empty: all."
    )
    shard_label_selector: str | None = _f(
        None,
        "scope",
        "Reconcile only SpotPolicies whose labels match this selector (`key=value`, "
        "`key!=value`, `key` or `!key`, comma-separated): one shard of a sharded install.",
        pattern=r"^!?[A-Za-z0-9./_-]+((!?=)[A-Za-z0-9._-]*)?(,!?[A-Za-z0-9./_-]+((!?=)[A-Za-z0-9._-]*)?)*$",
    )
    peering_name: str | None = _f(
        None,
        "scope",
        "Kopf peering object name for high availability (one active operator per name, "
        "the others stand by); empty: standalone.",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    )

    # -- reconcile -----------------------------------------------------------
    reconcile_interval_seconds: float = _f(
        60.0,
        "reconcile",
        "Seconds between level-based reconciles of one policy (EC2 is the source of truth).",
        flag="--interval",
        gt=0,
        le=86_400,
    )
    decide_workers: int = _f(
        1,
        "reconcile",
        "Threads that run the planner (the MILP and the risk model), off the event loop.",
        ge=1,
        le=32,
    )
    max_concurrent_reconciles: int = _f(
        32, "reconcile", "Reconciles in flight at once, across all policies.", ge=1, le=1024
    )
    decision_reuse_seconds: float = _f(
        900.0,
        "reconcile",
        "Seconds a policy's last plan is reused while nothing it was made from changed (the "
        "prices and advisor of the pools it may use or runs in, fleet, avoided pools and "
        "spec); 0: solve every time. Bounds how late time and other markets (the risk "
        "model's hourly, zone and family features) reach an unchanged policy.",
        ge=0,
    )
    max_replans: int = _f(
        3, "reconcile", "Re-plans within one reconcile after capacity errors.", ge=0, le=20
    )
    failures_before_degraded: int = _f(
        3, "reconcile", "Consecutive failed reconciles before Degraded=True.", ge=1
    )
    retry_base_seconds: float = _f(
        5.0, "reconcile", "First retry delay after a failure, seconds (doubles each time).", gt=0
    )
    retry_max_seconds: float = _f(300.0, "reconcile", "Largest retry delay, seconds.", gt=0)
    unavailable_pool_ttl_seconds: float = _f(
        300.0,
        "reconcile",
        "Seconds a pool that answered a capacity error (or was interrupted) stays avoided.",
        gt=0,
    )
    doomed_instance_seconds: float = _f(
        600.0,
        "reconcile",
        "Seconds an instance with an interruption warning counts as gone (AWS gives two minutes).",
        gt=0,
    )
    finalizer_max_attempts: int = _f(
        20,
        "reconcile",
        "After this many failed cleanup attempts with permanent errors, release the "
        "finalizer with a Warning Event listing what was left.",
        ge=1,
    )
    risk_model: str = _f(
        "bundled", "reconcile", "'bundled' (XGBoost artifact), 'advisor', or an artifact path."
    )
    risk_model_from_store: bool = _f(
        False,
        "reconcile",
        "Load the risk model promoted in the store (`spotfleet train --from-store`) at "
        "start-up instead of --risk-model; when the store has none or cannot be read, "
        "--risk-model is used and a warning logged.",
    )

    # -- aws -----------------------------------------------------------------
    aws_endpoint_url: str | None = _f(
        None, "aws", "Send every AWS call here (the stand-in cloud); empty: AWS."
    )
    aws_region: str = _f(
        "us-east-1",
        "aws",
        "Region of the operator's own AWS calls (the interruption queue); each policy acts "
        "in its own spec.region.",
        pattern=r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$",
    )
    aws_workers: int = _f(
        8, "aws", "Threads for blocking AWS calls (a pool of its own).", ge=1, le=256
    )
    aws_call_timeout_seconds: float = _f(
        20.0,
        "aws",
        "Deadline of one AWS call including retries, seconds; a hung endpoint fails within it.",
        gt=0,
    )
    aws_max_attempts: int = _f(
        3, "aws", "Attempts per AWS call (botocore standard retry mode).", ge=1, le=10
    )
    market_lookback_hours: float = _f(
        72.0, "aws", "Hours of spot price history the market view holds.", gt=0, le=24 * 90
    )
    market_cache_seconds: float = _f(
        30.0, "aws", "Seconds one region's spot prices are reused before a refresh.", ge=0
    )
    fleet_sweep_seconds: float | None = _f(
        None,
        "aws",
        "Seconds one account+region's owned-instance sweep (one paginated DescribeInstances "
        "for every policy of the account) is reused; a policy's own launches and "
        "terminations update it at once, interruption notices too. Empty: the reconcile "
        "interval (parsing a sweep of 4,000 instances costs about 2 s of CPU).",
        ge=0,
    )

    @property
    def sweep_seconds(self) -> float:
        """How long a sweep is reused (``fleet_sweep_seconds``, else the interval)."""
        if self.fleet_sweep_seconds is None:
            return self.reconcile_interval_seconds
        return self.fleet_sweep_seconds

    orphan_scan_seconds: float = _f(
        300.0, "aws", "Seconds between scans for instances of deleted policies.", gt=0
    )

    # -- interruptions ---------------------------------------------------------
    interruption_queue_url: str | None = _f(
        None, "interruptions", "SQS queue fed by the EventBridge rule for EC2 spot events."
    )
    interruption_poll_seconds: float = _f(
        5.0, "interruptions", "Seconds between polls of an empty interruption queue.", gt=0
    )

    # -- kubernetes ------------------------------------------------------------
    kube_workers: int = _f(
        4, "kubernetes", "Concurrent calls to the Kubernetes API (status, Events, Secrets).", ge=1
    )
    kube_connections: int = _f(
        24,
        "kubernetes",
        "Connections to the Kubernetes API shared by Kopf and the operator (plus one per "
        "watched namespace for its watch); each costs a TLS buffer of 256 KiB.",
        ge=4,
        le=1024,
    )
    secret_cache_seconds: float = _f(
        60.0,
        "kubernetes",
        "Seconds a credentials Secret read is reused (re-read at once after AWS refuses it).",
        ge=0,
    )
    watch_server_timeout_seconds: int = _f(
        300, "kubernetes", "Server-side watch timeout, seconds (Kopf).", gt=0
    )
    watch_client_timeout_seconds: int = _f(
        330,
        "kubernetes",
        "Client-side watch timeout, seconds; must exceed the server's (silent freezes).",
        gt=0,
    )

    # -- store -----------------------------------------------------------------
    database_url: str = _f(
        "sqlite+aiosqlite:///spotfleet-audit.db",
        "store",
        "The store: postgresql://... (asyncpg) or sqlite:///path (aiosqlite); its schema is "
        "migrated to the newest revision at start-up.",
    )
    store_queue_size: int = _f(
        10_000,
        "store",
        "Store rows buffered in memory while the database is slow or down; beyond it rows "
        'are dropped and counted (spotfleet_store_rows_total{outcome="dropped"}).',
        ge=1,
    )
    store_retention_days: float = _f(
        90.0,
        "store",
        "Days decisions, actions, interruptions, prices and ledger rows are kept "
        "(0: forever; model versions are always kept).",
        ge=0,
    )

    # -- jobs ------------------------------------------------------------------
    price_ingestion_minutes: float = _f(
        15.0,
        "jobs",
        "Minutes between price-ingestion runs (DescribeSpotPriceHistory for every tenant "
        "and region in use, from the newest stored point); 0: off.",
        ge=0,
    )
    price_backfill_hours: float = _f(
        168.0,
        "jobs",
        "Hours of price history the first ingestion of an instance type fetches (EC2 "
        "keeps 90 days).",
        gt=0,
        le=24 * 90,
    )
    ledger_rollup_minutes: float = _f(
        60.0, "jobs", "Minutes between savings-ledger roll-ups; 0: off.", ge=0
    )
    ledger_lookback_hours: float = _f(
        24.0 * 7,
        "jobs",
        "Hours back the ledger roll-up reaches for a policy without ledger rows yet.",
        gt=0,
    )
    retention_minutes: float = _f(
        60.0, "jobs", "Minutes between retention prunes (store_retention_days); 0: off.", ge=0
    )
    job_timeout_seconds: float = _f(
        300.0, "jobs", "Longest one run of a store job may take, seconds.", gt=0
    )

    # -- serving ---------------------------------------------------------------
    metrics_port: int = _f(8080, "serving", "Prometheus /metrics port (0: off).", ge=0, le=65_535)
    health_port: int = _f(8081, "serving", "Liveness /healthz port (0: off).", ge=0, le=65_535)
    log_level: str = _f(
        "INFO", "serving", "DEBUG, INFO, WARNING or ERROR.", pattern="^(DEBUG|INFO|WARNING|ERROR)$"
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> OperatorConfig:
        if self.watch_client_timeout_seconds <= self.watch_server_timeout_seconds:
            raise ValueError(
                "watch_client_timeout_seconds must exceed watch_server_timeout_seconds"
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds must be at least retry_base_seconds")
        return self

    def retry_delay(self, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` consecutive failures (>= 1):
        the one backoff rule of the operator (exponential, capped)."""
        n = max(1, failures)
        return float(min(self.retry_max_seconds, self.retry_base_seconds * 2 ** min(n - 1, 16)))

    @classmethod
    def group_of(cls, name: str) -> str:
        extra = cls.model_fields[name].json_schema_extra
        return str(extra.get("group", "")) if isinstance(extra, dict) else ""

    @classmethod
    def flag_of(cls, name: str) -> str:
        extra = cls.model_fields[name].json_schema_extra
        if isinstance(extra, dict) and extra.get("flag"):
            return str(extra["flag"])
        return "--" + name.replace("_", "-")

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
            if key in env and env[key] != "":
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

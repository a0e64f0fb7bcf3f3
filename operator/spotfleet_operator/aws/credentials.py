"""Per-tenant AWS credentials, and one boto3 client per (credentials, region, service).

A policy names either a Secret in its own namespace (an access key pair) or an
STS role ARN (+ optional external id) assumed with the operator's own
credentials. Values are checked when read (a pasted value with a newline or other
control character is refused, naming the key, never the value), never logged,
and registered with the scrubber so no message the operator writes can carry them.

Clients are created once and reused: every client comes from ONE boto3 session, so
the service models are loaded and parsed once for the process (a session per tenant
cost about 21 MiB each); a client per tenant costs about 1.5 MiB. Assumed-role
clients are recreated shortly before their credentials expire.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.config

from spotfleet_operator import scrub

#: Keys accepted in a credentials Secret (first match wins).
ACCESS_KEY_NAMES = ("aws_access_key_id", "AWS_ACCESS_KEY_ID", "accessKeyId")
SECRET_KEY_NAMES = ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "secretAccessKey")
SESSION_TOKEN_NAMES = ("aws_session_token", "AWS_SESSION_TOKEN", "sessionToken")


def client_config(
    call_timeout_seconds: float, max_attempts: int, pool_size: int
) -> botocore.config.Config:
    """botocore settings: standard retries, and per-attempt timeouts that let every
    attempt of one call fit inside ``call_timeout_seconds``."""
    per_attempt = call_timeout_seconds / max_attempts
    return botocore.config.Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=min(5.0, per_attempt),
        read_timeout=per_attempt,
        max_pool_connections=pool_size,
    )


class CredentialsError(Exception):
    """Credentials are missing or malformed; the message names what, never the values."""


def _control_character(value: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in value)


@dataclass(frozen=True)
class StaticKeys:
    """An access key pair from a Secret. ``repr`` never shows the secret parts."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret_data(cls, data: dict[str, str], where: str) -> StaticKeys:
        """Build from decoded Secret data; ``where`` ("ns/name") goes into errors. Every
        value is registered with the scrubber before anything else can see it. Leading
        and trailing whitespace is trimmed; a value with a control character or inner
        whitespace (a pasted line break) is refused."""

        def pick(names: tuple[str, ...]) -> tuple[str, str] | None:
            for n in names:
                v = data.get(n)
                if v:
                    scrub.register(v)
                    return n, v.strip()
            return None

        akid, secret, token = (
            pick(ACCESS_KEY_NAMES),
            pick(SECRET_KEY_NAMES),
            pick(SESSION_TOKEN_NAMES),
        )
        missing = [n[0] for n, v in ((ACCESS_KEY_NAMES, akid), (SECRET_KEY_NAMES, secret)) if not v]
        if missing:
            raise CredentialsError(f"Secret {where} lacks key(s): {', '.join(missing)}")
        for picked in (akid, secret, token):
            if picked is not None and _control_character(picked[1]):
                raise CredentialsError(
                    f"Secret {where} key {picked[0]} contains a control character or "
                    "whitespace (a pasted line break?); fix the value"
                )
        assert akid is not None and secret is not None
        return cls(akid[1], secret[1], token[1] if token else None)

    def fingerprint(self) -> str:
        """A short one-way id for caching and logs (not reversible)."""
        h = hashlib.sha256(f"{self.access_key_id}\0{self.secret_access_key}".encode())
        if self.session_token:
            h.update(b"\0" + self.session_token.encode())
        return "keys:" + h.hexdigest()[:12]


@dataclass(frozen=True)
class AssumeRole:
    """Assume ``role_arn`` (optionally with ``external_id``) from the operator's own identity."""

    role_arn: str
    external_id: str | None = field(default=None, repr=False)
    session_name: str = "spotfleet"

    def fingerprint(self) -> str:
        ext = hashlib.sha256((self.external_id or "").encode()).hexdigest()[:8]
        return f"role:{self.role_arn}:{ext}"


TenantCredentials = StaticKeys | AssumeRole | None  # None: the operator's own identity


def fingerprint(creds: TenantCredentials) -> str:
    """The cache key of ``creds`` ("operator" for the operator's own identity)."""
    return creds.fingerprint() if creds is not None else "operator"


@dataclass
class _Cached:
    client: Any
    expires: dt.datetime | None


class ClientCache:
    """One boto3 client per (credentials fingerprint, region, service), all from one shared
    session. Thread-safe (clients are created under a lock; boto3 clients themselves are
    thread-safe). ``on_client`` is called once for each new client (metrics hooks)."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        config: botocore.config.Config | None = None,
        refresh_margin_s: int = 300,
        on_client: Callable[[str, Any], None] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.endpoint_url = endpoint_url
        self.config = config or botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10
        )
        self.refresh_margin = dt.timedelta(seconds=refresh_margin_s)
        self._on_client = on_client
        self._clock = clock
        self._lock = threading.RLock()  # re-entered: an assumed role's client needs STS's
        self._session = boto3.session.Session()
        self._cache: dict[tuple[str, str, str], _Cached] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def client(self, service: str, creds: TenantCredentials, region: str) -> Any:
        """The client for ``service`` acting as ``creds`` in ``region``."""
        key = (fingerprint(creds), region, service)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit and (hit.expires is None or hit.expires - self.refresh_margin > now):
                return hit.client
            cached = self._make(service, creds, region)
            self._cache[key] = cached
        if self._on_client is not None:
            self._on_client(service, cached.client)
        return cached.client

    def forget(self, creds: TenantCredentials) -> None:
        """Drop every client of ``creds`` (after AWS refused them)."""
        fp = fingerprint(creds)
        with self._lock:
            for key in [k for k in self._cache if k[0] == fp]:
                del self._cache[key]

    def _raw(self, service: str, region: str, **keys: Any) -> Any:
        return self._session.client(  # type: ignore[call-overload]
            service,
            region_name=region,
            endpoint_url=self.endpoint_url,
            config=self.config,
            **keys,
        )

    def _make(self, service: str, creds: TenantCredentials, region: str) -> _Cached:
        if creds is None:
            return _Cached(self._raw(service, region), None)
        if isinstance(creds, StaticKeys):
            return _Cached(
                self._raw(
                    service,
                    region,
                    aws_access_key_id=creds.access_key_id,
                    aws_secret_access_key=creds.secret_access_key,
                    aws_session_token=creds.session_token,
                ),
                None,
            )
        sts = self.client("sts", None, region) if service != "sts" else self._raw("sts", region)
        kwargs: dict[str, Any] = {"RoleArn": creds.role_arn, "RoleSessionName": creds.session_name}
        if creds.external_id:
            kwargs["ExternalId"] = creds.external_id
        c = sts.assume_role(**kwargs)["Credentials"]
        for v in (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]):
            scrub.register(v)
        expires = c["Expiration"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return _Cached(
            self._raw(
                service,
                region,
                aws_access_key_id=c["AccessKeyId"],
                aws_secret_access_key=c["SecretAccessKey"],
                aws_session_token=c["SessionToken"],
            ),
            expires,
        )

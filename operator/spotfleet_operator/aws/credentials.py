"""Per-tenant AWS credentials and one cached boto3 session per tenant.

A policy names either a Secret in its own namespace (an access key pair) or an
STS role ARN (+ optional external id) assumed with the operator's own
credentials. Secrets are never logged: :class:`StaticKeys` hides them in its
repr, and errors carry only the AWS error code and message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass, field

import boto3
import botocore.config

#: Keys accepted in a credentials Secret (first match wins).
ACCESS_KEY_NAMES = ("aws_access_key_id", "AWS_ACCESS_KEY_ID", "accessKeyId")
SECRET_KEY_NAMES = ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "secretAccessKey")
SESSION_TOKEN_NAMES = ("aws_session_token", "AWS_SESSION_TOKEN", "sessionToken")

RETRY_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
)


class CredentialsError(Exception):
    """Credentials are missing or malformed; the message names what, never the values."""


@dataclass(frozen=True)
class StaticKeys:
    """An access key pair from a Secret. ``repr`` never shows the secret parts."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret_data(cls, data: dict[str, str], where: str) -> StaticKeys:
        """Build from decoded Secret data; ``where`` ("ns/name") goes into errors."""

        def pick(names: tuple[str, ...]) -> str | None:
            for n in names:
                v = data.get(n)
                if v:
                    return v.strip()
            return None

        akid, secret = pick(ACCESS_KEY_NAMES), pick(SECRET_KEY_NAMES)
        missing = [n[0] for n, v in ((ACCESS_KEY_NAMES, akid), (SECRET_KEY_NAMES, secret)) if not v]
        if missing:
            raise CredentialsError(f"Secret {where} lacks key(s): {', '.join(missing)}")
        assert akid is not None and secret is not None
        return cls(akid, secret, pick(SESSION_TOKEN_NAMES))

    def fingerprint(self) -> str:
        """A short one-way id for caching and logs (not reversible)."""
        h = hashlib.sha256(f"{self.access_key_id}\0{self.secret_access_key}".encode())
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


@dataclass
class _Cached:
    session: boto3.session.Session
    expires: dt.datetime | None


class SessionCache:
    """One boto3 session per tenant (keyed by a credentials fingerprint), refreshed
    before an assumed role's credentials expire. Thread-safe (used from to_thread)."""

    def __init__(
        self, region: str, endpoint_url: str | None = None, refresh_margin_s: int = 300
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.refresh_margin = dt.timedelta(seconds=refresh_margin_s)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], _Cached] = {}

    def session(self, creds: TenantCredentials, region: str | None = None) -> boto3.session.Session:
        region = region or self.region
        key = (creds.fingerprint() if creds else "operator", region)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            hit = self._cache.get(key)
            if hit and (hit.expires is None or hit.expires - self.refresh_margin > now):
                return hit.session
        cached = self._make(creds, region)
        with self._lock:
            self._cache[key] = cached
        return cached.session

    def client(self, service: str, creds: TenantCredentials, region: str | None = None) -> object:
        """A client for ``service`` with standard retries and the configured endpoint."""
        return self.session(creds, region).client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url, config=RETRY_CONFIG
        )

    def _make(self, creds: TenantCredentials, region: str) -> _Cached:
        if creds is None:
            return _Cached(boto3.session.Session(region_name=region), None)
        if isinstance(creds, StaticKeys):
            return _Cached(
                boto3.session.Session(
                    aws_access_key_id=creds.access_key_id,
                    aws_secret_access_key=creds.secret_access_key,
                    aws_session_token=creds.session_token,
                    region_name=region,
                ),
                None,
            )
        base = boto3.session.Session(region_name=region)
        sts = base.client("sts", endpoint_url=self.endpoint_url, config=RETRY_CONFIG)
        if creds.external_id:
            out = sts.assume_role(
                RoleArn=creds.role_arn,
                RoleSessionName=creds.session_name,
                ExternalId=creds.external_id,
            )
        else:
            out = sts.assume_role(RoleArn=creds.role_arn, RoleSessionName=creds.session_name)
        c = out["Credentials"]
        return _Cached(
            boto3.session.Session(
                aws_access_key_id=c["AccessKeyId"],
                aws_secret_access_key=c["SecretAccessKey"],
                aws_session_token=c["SessionToken"],
                region_name=region,
            ),
            c["Expiration"],
        )

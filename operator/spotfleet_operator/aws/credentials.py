"""Per-tenant AWS credentials, and one boto3 client per (credentials, region, service).

A policy names either a Secret in its own namespace (an access key pair) or an
STS role ARN (+ optional external id) assumed with the operator's own
credentials. Values are checked when read (a pasted value with a newline or other
control character is refused, naming the key, never the value), never logged,
and registered with the scrubber so no message the operator writes can carry them.

Clients are created once and shared by every tenant: ONE boto3 session and one client
per (service, region); each call is signed with its tenant's keys, applied per call
(:class:`ClientCache`). A session per tenant cost about 21 MiB each, a client per
tenant about 1.4 MiB; a thousand tenants now cost what one does.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.session
import botocore.utils

from spotfleet_operator import scrub

T = TypeVar("T")

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


#: The tenant the current thread calls AWS for (set around each call, see :meth:`ClientCache.call`).
_CALLER: contextvars.ContextVar[botocore.credentials.ReadOnlyCredentials | None] = (
    contextvars.ContextVar("spotfleet_aws_caller", default=None)
)


class _PerCallCredentials(botocore.credentials.Credentials):
    """botocore credentials that are whichever tenant's the calling thread acts for: the
    signer asks for them at signing time, in the thread that makes the call. Without a
    tenant (the operator's own calls) they are the default credential chain's."""

    def __init__(self, fallback: Callable[[], botocore.credentials.Credentials | None]) -> None:
        self._fallback = fallback
        self.method = "spotfleet-per-call"

    def get_frozen_credentials(self) -> botocore.credentials.ReadOnlyCredentials:
        current = _CALLER.get()
        if current is not None:
            return current
        own = self._fallback()
        if own is None:
            raise botocore.exceptions.NoCredentialsError()
        frozen: botocore.credentials.ReadOnlyCredentials = own.get_frozen_credentials()
        return frozen

    # the plain attributes of Credentials, read through the current caller
    access_key = property(lambda self: self.get_frozen_credentials().access_key, lambda s, v: None)
    secret_key = property(lambda self: self.get_frozen_credentials().secret_key, lambda s, v: None)
    token = property(lambda self: self.get_frozen_credentials().token, lambda s, v: None)
    account_id = property(lambda self: None, lambda s, v: None)


class _PerCallProvider(botocore.credentials.CredentialProvider):
    METHOD = "spotfleet-per-call"
    CANONICAL_NAME = "custom-spotfleet-per-call"

    def __init__(self, creds: _PerCallCredentials) -> None:
        super().__init__()
        self._creds = creds

    def load(self) -> botocore.credentials.Credentials:
        return self._creds


@dataclass
class _Assumed:
    frozen: botocore.credentials.ReadOnlyCredentials
    expires: dt.datetime


def parse_timestamp(value: Any) -> dt.datetime:
    """An AWS response timestamp as an aware datetime: ISO 8601 by the standard library
    (naive means UTC), anything else (RFC 822, epoch seconds) by botocore's parser."""
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
    parsed: dt.datetime = botocore.utils.parse_timestamp(value)
    return parsed


class ClientCache:
    """ONE boto3 client per (service, region) for every tenant: a tenant's keys are applied
    per call (:meth:`call`), so a thousand tenants cost one set of clients, not a thousand
    (botocore builds a client class with every API method per client: about 1.4 MiB for
    EC2). Assumed roles are assumed with the operator's own identity and re-assumed before
    they expire. Thread-safe. ``on_client`` is called once for each new client."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        config: botocore.config.Config | None = None,
        refresh_margin_s: int = 300,
        on_client: Callable[[str, Any], None] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.endpoint_url = endpoint_url
        self.config = config or client_config(20.0, 3, 10)
        self.refresh_margin = dt.timedelta(seconds=refresh_margin_s)
        self._on_client = on_client
        self._clock = clock
        self._lock = threading.RLock()
        core = botocore.session.get_session()
        default = botocore.session.get_session()  # the operator's own credential chain
        own: list[botocore.credentials.Credentials | None] = []

        def fallback() -> botocore.credentials.Credentials | None:
            if not own:
                own.append(default.get_credentials())
            return own[0]

        core.get_component("credential_provider").insert_before(
            "env", _PerCallProvider(_PerCallCredentials(fallback))
        )
        # responses' timestamps (every instance's LaunchTime, every price point) parsed
        # with the standard library: dateutil was 12 % of the idle CPU at 300 policies
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        self._session = boto3.session.Session(botocore_session=core)
        self._clients: dict[tuple[str, str], Any] = {}
        self._assumed: dict[str, _Assumed] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def client(self, service: str, region: str) -> Any:
        """The one client for ``service`` in ``region`` (use it inside :meth:`call`)."""
        key = (service, region)
        with self._lock:
            hit = self._clients.get(key)
            if hit is not None:
                return hit
            c = self._session.client(  # type: ignore[call-overload]
                service, region_name=region, endpoint_url=self.endpoint_url, config=self.config
            )
            self._clients[key] = c
        if self._on_client is not None:
            self._on_client(service, c)
        return c

    def call(self, creds: TenantCredentials, region: str, fn: Callable[[], T]) -> T:
        """``fn()`` with every AWS call it makes (in this thread) signed as ``creds``."""
        frozen = self._frozen(creds, region)
        token = _CALLER.set(frozen)
        try:
            return fn()
        finally:
            _CALLER.reset(token)

    def forget(self, creds: TenantCredentials) -> None:
        """Drop what is cached for ``creds`` (an assumed role is assumed again)."""
        with self._lock:
            self._assumed.pop(fingerprint(creds), None)

    def _frozen(
        self, creds: TenantCredentials, region: str
    ) -> botocore.credentials.ReadOnlyCredentials | None:
        if creds is None:
            return None
        if isinstance(creds, StaticKeys):
            return botocore.credentials.ReadOnlyCredentials(
                creds.access_key_id, creds.secret_access_key, creds.session_token
            )
        fp = fingerprint(creds)
        now = self._clock()
        with self._lock:
            hit = self._assumed.get(fp)
            if hit is not None and hit.expires - self.refresh_margin > now:
                return hit.frozen
        kwargs: dict[str, Any] = {"RoleArn": creds.role_arn, "RoleSessionName": creds.session_name}
        if creds.external_id:
            kwargs["ExternalId"] = creds.external_id
        sts = self.client("sts", region)
        out = self.call(None, region, lambda: sts.assume_role(**kwargs))["Credentials"]
        for v in (out["AccessKeyId"], out["SecretAccessKey"], out["SessionToken"]):
            scrub.register(v)
        expires = out["Expiration"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        frozen = botocore.credentials.ReadOnlyCredentials(
            out["AccessKeyId"], out["SecretAccessKey"], out["SessionToken"]
        )
        with self._lock:
            self._assumed[fp] = _Assumed(frozen, expires)
        return frozen

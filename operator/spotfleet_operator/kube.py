"""The operator's own small Kubernetes client: credentials Secrets (cached), SpotPolicy
status patches, Events and a list of policy uids. Everything else goes through Kopf.

Async (aiohttp, Kopf's own HTTP library) over the same :class:`kopf.ConnectionInfo`
that Kopf logs in with (:func:`login`), so no second Kubernetes library is loaded.
Bodies are never logged: a Secret's data leaves this module only as the decoded
mapping returned to the caller. The client is handed around through Kopf's memo,
never a module global.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

from spotfleet_operator import api, scrub

log = logging.getLogger("spotfleet.kube")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def login(kubeconfig: str | None = None) -> kopf.ConnectionInfo:
    """Connection info from ``kubeconfig`` (else $KUBECONFIG, else ~/.kube/config), else
    the in-cluster service account. Supports what the operator's installs use: client
    certificates and tokens, inline or as files. Raises kopf.LoginError."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or ""
    paths = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    if not paths and Path("~/.kube/config").expanduser().exists():
        paths = [str(Path("~/.kube/config").expanduser())]
    if paths:
        return _from_kubeconfig(paths)
    token = SERVICE_ACCOUNT_DIR / "token"
    if token.exists():
        ca = SERVICE_ACCOUNT_DIR / "ca.crt"
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return kopf.ConnectionInfo(
            server=f"https://{host}:{port}",
            ca_path=str(ca) if ca.exists() else None,
            token=token.read_text(encoding="utf-8").strip() or None,
        )
    raise kopf.LoginError("no kubeconfig and no in-cluster service account")


def _from_kubeconfig(paths: Sequence[str]) -> kopf.ConnectionInfo:
    current: str | None = None
    contexts: dict[str, Any] = {}
    clusters: dict[str, Any] = {}
    users: dict[str, Any] = {}
    for p in paths:
        doc = yaml.safe_load(Path(p).read_text(encoding="utf-8")) or {}
        current = current or doc.get("current-context")
        for kind, acc in (("contexts", contexts), ("clusters", clusters), ("users", users)):
            for item in doc.get(kind) or []:
                acc.setdefault(item["name"], item.get(kind[:-1]) or {})
    if current is None or current not in contexts:
        raise kopf.LoginError("the kubeconfig sets no usable current-context")
    ctx = contexts[current]
    cluster, user = clusters[ctx["cluster"]], users[ctx["user"]]
    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=cluster.get("certificate-authority"),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=user.get("client-certificate"),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=user.get("client-key"),
        private_key_data=user.get("client-key-data"),
        token=user.get("token"),
        default_namespace=ctx.get("namespace"),
    )


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if info.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if info.ca_path:
        ctx.load_verify_locations(cafile=os.fspath(info.ca_path))
    elif info.ca_data:
        data = info.ca_data if isinstance(info.ca_data, str) else info.ca_data.decode()
        ctx.load_verify_locations(cadata=base64.b64decode(data).decode())
    cert, key = info.certificate_path, info.private_key_path
    if info.certificate_data and info.private_key_data:
        # ssl loads client keys from files only: write them to a private temporary directory
        tmp = Path(tempfile.mkdtemp(prefix="spotfleet-kube-"))
        for name, value in (("c.pem", info.certificate_data), ("k.pem", info.private_key_data)):
            raw = value if isinstance(value, bytes) else value.encode()
            (tmp / name).write_bytes(base64.b64decode(raw))
            (tmp / name).chmod(0o600)
        cert, key = tmp / "c.pem", tmp / "k.pem"
    if cert and key:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    return ctx


@dataclass(frozen=True)
class _CachedSecret:
    data: dict[str, str] | None
    at: float


class Kube:
    """Async calls to the Kubernetes API with at most ``workers`` in flight."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        workers: int = 4,
        secret_cache_seconds: float = 60.0,
        clock: Callable[[], float] = lambda: asyncio.get_running_loop().time(),
        timeout_seconds: float = 30.0,
        connections: int = 24,
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        self.info = info
        self._connections = connections
        self._observe = observe
        self._sem = asyncio.Semaphore(workers)
        self._secret_ttl = secret_cache_seconds
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._secrets: dict[tuple[str, str], _CachedSecret] = {}
        self._secret_reads: dict[tuple[str, str], asyncio.Future[dict[str, str] | None]] = {}
        #: Secret GETs sent (the cache's misses), for tests and benchmarks
        self.secret_gets = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "spotfleet"}
            headers.update(self.info.as_http_headers())
            # bounded: Kopf shares this session (kopf_session), and an unbounded pool grows
            # to one TLS connection per concurrent patch, 256 KiB of buffer each
            self._session = aiohttp.ClientSession(
                headers=headers,
                connector=aiohttp.TCPConnector(
                    ssl=_ssl_context(self.info), limit=self._connections
                ),
            )
        return self._session

    def kopf_session(self) -> kopf.AiohttpSession:
        """This client's connection pool, for Kopf's own API calls (one bounded pool)."""
        return kopf.AiohttpSession(
            server=self.info.server,
            default_namespace=self.info.default_namespace,
            aiohttp_session=self._client(),
        )

    def _url(self, path: str) -> str:
        return self.info.server.rstrip("/") + "/" + path.lstrip("/")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        kind: str = "other",
    ) -> Any:
        try:
            out = await self._send(method, path, body, content_type)
        except KubeError as e:
            if self._observe is not None:
                self._observe(kind, e.status)
            raise
        if self._observe is not None:
            self._observe(kind, 200)
        return out

    async def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None, content_type: str
    ) -> Any:
        data = json.dumps(scrub.scrub_tree(body)).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        async with self._sem:
            try:
                async with self._client().request(
                    method, self._url(path), data=data, headers=headers, timeout=self._timeout
                ) as r:
                    text = await r.text()
                    if r.status >= 400:
                        reason = ""
                        try:
                            reason = str(json.loads(text).get("message", ""))
                        except (ValueError, AttributeError):
                            reason = r.reason or ""
                        raise KubeError(r.status, f"{method} {path.split('?')[0]}: {reason}")
                    return json.loads(text) if text else None
            except (aiohttp.ClientError, TimeoutError) as e:
                raise KubeError(0, f"{method} {path.split('?')[0]}: {type(e).__name__}") from None

    # ---- Secrets ---------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """Decoded data of Secret ``namespace/name`` (None when absent), reused for
        ``secret_cache_seconds`` (an absence for 5 s at most); concurrent readers of one
        Secret share one GET.
        Callers pass the POLICY'S namespace: a policy can never name a Secret elsewhere."""
        key = (namespace, name)
        hit = self._secrets.get(key)
        if hit is not None:
            # an absent Secret may be created any moment: remember its absence briefly
            ttl = self._secret_ttl if hit.data is not None else min(self._secret_ttl, 5.0)
            if self._clock() - hit.at < ttl:
                return hit.data
        pending = self._secret_reads.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[dict[str, str] | None] = asyncio.get_running_loop().create_future()
        self._secret_reads[key] = fut
        try:
            data = await self._get_secret(namespace, name)
            self._secrets[key] = _CachedSecret(data, self._clock())
            fut.set_result(data)
            return data
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters re-raise it, nobody logs it as unhandled
            raise
        finally:
            del self._secret_reads[key]

    def forget_secret(self, namespace: str, name: str) -> None:
        """Drop a cached Secret (after AWS refused its keys): the next read goes to the API."""
        self._secrets.pop((namespace, name), None)

    async def _get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.secret_gets += 1
        try:
            obj = await self._request(
                "GET", f"api/v1/namespaces/{namespace}/secrets/{name}", kind="secret"
            )
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return {
            k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (obj.get("data") or {}).items()
        }

    # ---- SpotPolicies --------------------------------------------------------

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """One merge patch of the status subresource (None values delete fields)."""
        await self._request(
            "PATCH",
            f"apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.PLURAL}/{name}/status",
            {"status": status},
            content_type="application/merge-patch+json",
            kind="status",
        )

    async def policy_uids(self, namespaces: Sequence[str] = ()) -> set[str]:
        """UIDs of every SpotPolicy in ``namespaces`` (all when empty; that needs
        cluster-wide list permission), for orphan detection across every shard."""
        paths = (
            [f"apis/{api.GROUP}/{api.VERSION}/namespaces/{ns}/{api.PLURAL}" for ns in namespaces]
            if namespaces
            else [f"apis/{api.GROUP}/{api.VERSION}/{api.PLURAL}"]
        )
        uids: set[str] = set()
        for path in paths:
            cont = ""
            while True:
                out = await self._request("GET", path + "?limit=500" + cont, kind="list")
                uids |= {str(i["metadata"]["uid"]) for i in out.get("items", [])}
                token = (out.get("metadata") or {}).get("continue")
                if not token:
                    break
                cont = "&continue=" + token
        return uids

    # ---- Events ----------------------------------------------------------------

    async def post_event(
        self, ref: Mapping[str, str], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the object ``ref`` (apiVersion, kind, namespace, name, uid)."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ns = ref["namespace"]
        await self._request(
            "POST",
            f"api/v1/namespaces/{ns}/events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{ref['name']}.", "namespace": ns},
                "involvedObject": {
                    k: ref[k] for k in ("apiVersion", "kind", "name", "namespace", "uid")
                },
                "type": type_,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": "spotfleet"},
                "reportingComponent": "spotfleet.dev/operator",
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
            kind="event",
        )

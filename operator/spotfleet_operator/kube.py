"""The operator's own small Kubernetes client: Secrets of a policy's own namespace,
SpotPolicy reads and status writes. Everything else goes through Kopf.

Built on the synchronous ``kubernetes`` client, called off the event loop. The
client is an object handed around through Kopf's memo, never a module global.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from spotfleet_operator import api


def api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """A client for ``kubeconfig`` (or $KUBECONFIG, or the in-cluster service account)."""
    cfg = kubernetes.client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        kubernetes.config.load_kube_config(config_file=path, client_configuration=cfg)
    else:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    return kubernetes.client.ApiClient(cfg)


class Kube:
    """Reads Secrets and SpotPolicies, writes SpotPolicy status."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    async def read(self, namespace: str, name: str) -> dict[str, str] | None:
        """Decoded data of Secret ``namespace/name`` (None when absent). Callers pass the
        POLICY'S namespace: a policy can never name a Secret elsewhere."""

        def run() -> dict[str, str] | None:
            try:
                secret = self.core.read_namespaced_secret(name, namespace)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            return {
                k: base64.b64decode(v).decode("utf-8", "replace")
                for k, v in (secret.data or {}).items()
            }

        return await asyncio.to_thread(run)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """One merge patch of the status subresource (None values delete fields)."""

        def run() -> None:
            self.custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": status}
            )

        await asyncio.to_thread(run)

    async def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the policy, for code that runs outside a Kopf handler
        (Kopf's own ``kopf.event`` only posts from within handlers)."""
        meta = body["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body.get("apiVersion", api.API_VERSION),
                "kind": body.get("kind", api.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "spotfleet"},
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }

        def run() -> None:
            self.core.create_namespaced_event(meta["namespace"], event)

        await asyncio.to_thread(run)

    async def get_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            try:
                obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name
                )
                return obj
            except ApiException as e:
                if e.status == 404:
                    return None
                raise

        return await asyncio.to_thread(run)

    async def policy_uids(self, namespaces: tuple[str, ...] = ()) -> set[str]:
        """UIDs of every SpotPolicy in ``namespaces`` (all namespaces when empty; that
        needs cluster-wide list permission), for orphan detection."""

        def run() -> set[str]:
            if not namespaces:
                out = self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)
                return {str(i["metadata"]["uid"]) for i in out.get("items", [])}
            uids: set[str] = set()
            for ns in namespaces:
                out = self.custom.list_namespaced_custom_object(
                    api.GROUP, api.VERSION, ns, api.PLURAL
                )
                uids |= {str(i["metadata"]["uid"]) for i in out.get("items", [])}
            return uids

        return await asyncio.to_thread(run)

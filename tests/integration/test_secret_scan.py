"""The secret scan: across the whole integration suite, no credential value — access key,
secret key or session token, in whole or in any 12-character fragment — appears in any
log, Event, status, metric exposition or audit-store row captured, including from an
operator running at log level DEBUG. These tests run last (tests/conftest.py)."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotfleet_cli import localcluster
from tests.fixtures import cloud as cloud_fx
from tests.fixtures import operator as op_fx
from tests.fixtures.operator import base_spec, get_json, start_operator, wait_for_condition

pytestmark = pytest.mark.integration
FRAGMENT = 12
#: A pasted session token: a line break in the middle (the leak the issue found).
PASTED_TOKEN = (
    "IQoJb3JpZ2luX2VjEAAaCXVzLWVhc3QtMSJGMEQCIBqbGlzaGVkLXNjYW5uZXItdGVzdC10b2tlbi1vbmUK\n"
    "AiBOb3RBUmVhbFRva2VuQnV0TG9uZ0Vub3VnaFRvTG9va0xpa2VPbmUrKytzY2FubmVy"
)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    c = cloud_fx.start_cloud(tmp_path_factory.mktemp("scancloud"), "--notice-seconds", "2")
    try:
        yield c
    finally:
        cloud_fx._stop(c.process)


def _secret(ns: str, name: str, data: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": data,
        }
    )


def _policy(ns: str, name: str, secret: str) -> str:
    spec = base_spec()
    spec["credentials"] = {"secretRef": {"name": secret}}
    return json.dumps(
        {
            "apiVersion": "spotfleet.dev/v1alpha1",
            "kind": "SpotPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )


def test_an_operator_at_debug_with_a_pasted_token(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    namespace: str,
    tmp_path: Path,
) -> None:
    """At DEBUG, with a pasted token (refused when read) and keys AWS refuses (errors echo
    the request): the operator says what is wrong and the scan below finds nothing."""
    k = crds_installed
    refused_key = "AKIASCANREFUSED00001"
    k.kubectl("apply", "-f", "-", input=_secret(namespace, "pasted", {
        "aws_access_key_id": "AKIASCANPASTED000001",
        "aws_secret_access_key": "c2Nhbm5lci1zZWNyZXQta2V5LXBhc3RlZC0wMDAwMDE",
        "aws_session_token": PASTED_TOKEN,
    }))  # fmt: skip
    k.kubectl("apply", "-f", "-", input=_secret(namespace, "refused", {
        "aws_access_key_id": refused_key,
        "aws_secret_access_key": "c2Nhbm5lci1zZWNyZXQta2V5LXJlZnVzZWQtMDAwMDAy",
        "aws_session_token": "FwoGZXIvYXdzEBYaDHNjYW5uZXJyZWZ1c2VkdG9rZW4wMDAwMDAwMDAwMDAy",
    }))  # fmt: skip
    stand_in.client.inject_fault(
        "*", "AuthFailure", probability=1.0, access_key_id=refused_key,
        message=f"AWS was not able to validate the provided access credentials ({refused_key})",
    )  # fmt: skip
    op = start_operator(tmp_path, k.kubeconfig, stand_in.endpoint_url, "--log-level", "DEBUG")
    try:
        k.kubectl("apply", "-f", "-", input=_policy(namespace, "pasted", "pasted"))
        k.kubectl("apply", "-f", "-", input=_policy(namespace, "refused", "refused"))
        obj = wait_for_condition(
            k, namespace, "pasted", "CredentialsValid", op, reason="SecretInvalid"
        )
        msg = obj["status"]["conditions"]
        assert any("aws_session_token" in c["message"] for c in msg)  # names the key
        wait_for_condition(k, namespace, "refused", "CredentialsValid", op, reason="AccessDenied")
        assert " DEBUG " in op.log()  # it did log at DEBUG
    finally:
        stand_in.client.clear_faults()
        op.stop()


def _values(k: localcluster.LocalCluster) -> set[str]:
    """Every credential value in every Secret the session's control plane holds (namespaces
    are never emptied here: there is no namespace controller), and the pasted token."""
    out = {PASTED_TOKEN, *PASTED_TOKEN.splitlines()}
    for s in get_json(k, "secrets", "-A")["items"]:
        for key, raw in (s.get("data") or {}).items():
            if key.lower().startswith(("aws_", "accesskeyid", "secretaccesskey", "sessiontoken")):
                value = base64.b64decode(raw).decode("utf-8", "replace")
                out |= {value, value.strip(), *value.splitlines()}
    return {v for v in out if len(v.strip()) >= FRAGMENT and v.strip() != "testing"}


def _fragments(values: set[str]) -> set[str]:
    frags: set[str] = set()
    for v in values:
        frags |= {v[i : i + FRAGMENT] for i in range(len(v) - FRAGMENT + 1)}
    return {f for f in frags if "\n" not in f}


def _surfaces(k: localcluster.LocalCluster) -> Iterator[tuple[str, str]]:
    for op in op_fx.STARTED:
        if op.log_path.exists():
            yield f"log {op.log_path}", op.log()
        if op.last_metrics:
            yield f"metrics {op.log_path.name}", op.last_metrics
        if op.database is not None and op.database.exists():
            con = sqlite3.connect(op.database)
            try:
                for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                    rows: list[Any] = con.execute(f'SELECT * FROM "{table}"').fetchall()
                    yield f"store {op.database}:{table}", json.dumps(rows, default=str)
            finally:
                con.close()
    yield "events", json.dumps(get_json(k, "events", "-A")["items"])
    yield (
        "statuses",
        json.dumps([p.get("status") for p in get_json(k, "spotpolicies", "-A")["items"]]),
    )


def test_no_credential_value_appears_anywhere(crds_installed: localcluster.LocalCluster) -> None:
    k = crds_installed
    values = _values(k)
    assert len(values) >= 4  # the suite's tenants and this module's (a scan of nothing fails)
    frags = _fragments(values)
    scanned, found = 0, []
    for where, text in _surfaces(k):
        scanned += len(text)
        for f in frags:
            if f in text:
                found.append(f"{where}: ...{f}...")
                break
    assert len(op_fx.STARTED) >= 2 and scanned > 10_000
    assert found == [], "\n".join(found[:20])

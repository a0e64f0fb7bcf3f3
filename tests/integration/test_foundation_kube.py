"""Foundation: the real kube-apiserver + etcd serve the SpotPolicy CRD to the real kubectl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spotfleet_cli import localcluster

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_apiserver_is_real_and_authorises_with_rbac(
    control_plane: localcluster.LocalCluster,
) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    # RBAC is on: an unprivileged user is refused, the admin is allowed.
    denied = control_plane.kubectl(
        "auth", "can-i", "create", "namespaces", "--as", "nobody", check=False
    )
    assert denied.stdout.strip() == "no"
    allowed = control_plane.kubectl("auth", "can-i", "create", "namespaces")
    assert allowed.stdout.strip() == "yes"


def test_create_and_read_back_a_spotpolicy(
    crds_installed: localcluster.LocalCluster, namespace: str
) -> None:
    example = sorted((REPO / "examples").glob("*.yaml"))[0]
    manifest = yaml.safe_load(example.read_text())
    manifest["metadata"] = {"name": "foundation", "namespace": namespace}
    created = json.loads(
        crds_installed.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    )
    got = json.loads(
        crds_installed.kubectl(
            "get", "spotpolicy", "foundation", "-n", namespace, "-o", "json"
        ).stdout
    )
    # What the server returned, not what we sent: server-assigned identity and bookkeeping.
    assert got["metadata"]["uid"] == created["metadata"]["uid"] != ""
    assert got["metadata"]["generation"] == 1
    assert int(got["metadata"]["resourceVersion"]) > 0
    assert got["metadata"]["creationTimestamp"].endswith("Z")
    assert got["apiVersion"] == "spotfleet.dev/v1alpha1"
    assert got["kind"] == "SpotPolicy"
    assert got["spec"] == manifest["spec"]
    listed = crds_installed.kubectl("get", "spol", "-n", namespace, "-o", "name").stdout.split()
    assert listed == ["spotpolicy.spotfleet.dev/foundation"]

"""Fixtures of the e2e tier, one set PER MODULE: each module gets a control plane and a
stand-in cloud of its own, so what ``helm install`` creates (the CRD included) is the
chart's doing, and two modes of the chart never run operators side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spotfleet_cli import localcluster
from tests.e2e import support
from tests.fixtures import cloud as cloud_fx


@pytest.fixture(scope="session")
def image() -> str:
    """The operator image, built once for the session (tests/e2e/test_image.py runs it
    with podman, tests/e2e/test_node.py on a real node)."""
    return support.build_image()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.LocalCluster]:
    """A control plane of this module's own, so ``helm install`` is what creates the CRD."""
    try:
        for name in (*localcluster.BINARIES, "kubectl", "helm"):
            localcluster.find_binary(name)
    except localcluster.MissingBinaryError as e:
        pytest.fail(str(e), pytrace=False)
    yield from support.own_cluster(tmp_path_factory.mktemp("e2e-cluster"))


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    with cloud_fx.own_cloud(tmp_path_factory.mktemp("e2e-cloud"), "--notice-seconds", "2") as c:
        yield c


@pytest.fixture(scope="module")
def queue_url(stand_in: cloud_fx.Cloud) -> str:
    """The EventBridge rule -> SQS queue a user sets up once per account (docs/helm.md)."""
    return cloud_fx.interruption_queue(stand_in)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def helm(cluster: localcluster.LocalCluster, workdir: Path) -> support.Helm:
    return support.Helm(cluster.kubeconfig, workdir / "helm-home")

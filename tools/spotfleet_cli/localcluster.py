"""A real local Kubernetes control plane (etcd + kube-apiserver) without Docker.

Used by the tests and by ``spotfleet demo``. The binaries are the real ones,
built by ``hack/tools.sh`` into ``${XDG_CACHE_HOME:-~/.cache}/spotfleet/bin``;
this module only finds and starts them, on loopback, in a temporary directory,
with generated certificates, RBAC authorisation and an admin kubeconfig.
Both processes are stopped by PID on :meth:`LocalCluster.stop`.

With ``node_address`` the control plane is one a real node can join (the e2e node,
``tests/fixtures/node.py``): kube-apiserver listens on every address and advertises
that one (the ``kubernetes`` Service's endpoint, in its certificate too), the
ServiceAccount admission plugin gives pods their token volume, and kube-apiserver
reaches the kubelet (``kubectl logs``) with a client certificate of the cluster's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BINARIES = ("etcd", "kube-apiserver")


class MissingBinaryError(RuntimeError):
    """A control-plane binary is not installed; the message says how to get it."""


def bin_cache_dir() -> Path:
    """Where hack/tools.sh links the current binaries."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spotfleet" / "bin" / "current"


def find_binary(name: str) -> Path:
    """Locate a control-plane tool: $SPOTFLEET_BIN_DIR, the tools cache, the venv, then PATH."""
    candidates: list[Path] = []
    if env := os.environ.get("SPOTFLEET_BIN_DIR"):
        candidates.append(Path(env) / name)
    candidates.append(bin_cache_dir() / name)
    candidates.append(Path(sys.executable).parent / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    found = shutil.which(name)
    if found and name != "kubectl":
        return Path(found)
    raise MissingBinaryError(
        f"{name} not found (looked in {', '.join(str(c) for c in candidates)}). "
        "Run `bash hack/tools.sh` (or `make tools`) to build the control-plane binaries, "
        "and `make venv` for kubectl."
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _masters_client(
    cn: str, ca_name: x509.Name, ca_key: rsa.RSAPrivateKey
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new key and its client certificate for ``cn`` in group system:masters."""
    key = _key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    return key, _cert(name, key, ca_name, ca_key, client=True)


def stop_process(p: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM, up to ``grace_s`` for it to exit, then SIGKILL; nothing if it has exited."""
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)


@dataclass
class LocalCluster:
    """etcd + kube-apiserver on loopback: ``start()``, then ``stop()`` (or a context manager)."""

    workdir: Path | None = None
    log_dir: Path | None = None
    #: An address of this machine a node reaches it on ("" = loopback only, no pods).
    node_address: str = ""
    server: str = ""
    kubeconfig: Path = field(default_factory=Path)
    pids: list[int] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _apiserver_argv: list[str] = field(default_factory=list)
    _owns_workdir: bool = False

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 120.0) -> None:
        """Make certificates, start etcd and kube-apiserver, await /readyz, write a kubeconfig."""
        etcd_bin, apiserver_bin = (find_binary(n) for n in BINARIES)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="spotfleet-cluster-"))
            self._owns_workdir = True
        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        logs = self.log_dir or wd
        logs.mkdir(parents=True, exist_ok=True)
        pki = self._write_pki(wd / "pki")

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_log = open(logs / "etcd.log", "wb")  # noqa: SIM115 - kept open for the process
        self._spawn(
            [
                str(etcd_bin),
                "--data-dir", str(wd / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
            etcd_log,
        )  # fmt: skip
        api_log = open(logs / "kube-apiserver.log", "wb")  # noqa: SIM115
        self._apiserver_argv = [
                str(apiserver_bin),
                "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
                "--bind-address", "0.0.0.0" if self.node_address else "127.0.0.1",
                "--secure-port", str(api_port),
                "--tls-cert-file", str(pki / "apiserver.crt"),
                "--tls-private-key-file", str(pki / "apiserver.key"),
                "--client-ca-file", str(pki / "ca.crt"),
                "--authorization-mode", "RBAC",
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file", str(pki / "sa.pub"),
                "--service-account-signing-key-file", str(pki / "sa.key"),
                "--service-cluster-ip-range", "10.96.0.0/24",
                "--allow-privileged=true",
                "--v", "1",
        ]  # fmt: skip
        if self.node_address:
            self._apiserver_argv += [
                "--advertise-address", self.node_address,
                "--kubelet-client-certificate", str(pki / "kubelet-client.crt"),
                "--kubelet-client-key", str(pki / "kubelet-client.key"),
                "--kubelet-preferred-address-types", "InternalIP",
            ]  # fmt: skip
        else:  # no node runs pods: no token volumes to add (nor ServiceAccounts to need)
            self._apiserver_argv += ["--disable-admission-plugins", "ServiceAccount"]
        self._spawn(self._apiserver_argv, api_log)
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = wd / "kubeconfig"
        self._write_kubeconfig(pki)
        self._wait_ready(pki, timeout_s, logs)

    def restart_apiserver(self, down_seconds: float = 0.0, timeout_s: float = 120.0) -> None:
        """Stop kube-apiserver (etcd keeps running), wait ``down_seconds``, start it again
        with the same arguments and wait for /readyz: a control-plane restart."""
        assert self.workdir is not None and self._apiserver_argv
        api = self._procs.pop()  # started last
        self.pids.remove(api.pid)
        stop_process(api)
        time.sleep(down_seconds)
        logs = self.log_dir or self.workdir
        api_log = open(logs / "kube-apiserver.log", "ab")  # noqa: SIM115
        self._spawn(self._apiserver_argv, api_log)
        self._wait_ready(self.workdir / "pki", timeout_s, logs)

    def _spawn(self, argv: list[str], log: IO[bytes]) -> None:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        self.pids.append(proc.pid)

    def _write_pki(self, pki: Path) -> Path:
        pki.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "spotfleet-local-ca")])
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        srv_key = _key()
        srv = _cert(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            srv_key,
            ca_name,
            ca_key,
            sans=[
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                *(
                    [x509.IPAddress(ipaddress.ip_address(self.node_address))]
                    if self.node_address
                    else []
                ),
            ],
        )
        adm_key, adm = _masters_client("spotfleet-admin", ca_name, ca_key)
        sa_key = _key()
        pem = serialization.Encoding.PEM
        if self.node_address:
            kc_key, kc = _masters_client("kube-apiserver-kubelet-client", ca_name, ca_key)
            (pki / "kubelet-client.crt").write_bytes(kc.public_bytes(pem))
            (pki / "kubelet-client.key").write_bytes(_pem_key(kc_key))
        (pki / "ca.crt").write_bytes(ca.public_bytes(pem))
        (pki / "apiserver.crt").write_bytes(srv.public_bytes(pem))
        (pki / "apiserver.key").write_bytes(_pem_key(srv_key))
        (pki / "admin.crt").write_bytes(adm.public_bytes(pem))
        (pki / "admin.key").write_bytes(_pem_key(adm_key))
        (pki / "sa.key").write_bytes(_pem_key(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return pki

    def _write_kubeconfig(self, pki: Path) -> None:
        self.kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: spotfleet-local
  cluster:
    server: {self.server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: spotfleet-admin
  user:
    client-certificate: {pki / "admin.crt"}
    client-key: {pki / "admin.key"}
contexts:
- name: spotfleet-local
  context:
    cluster: spotfleet-local
    user: spotfleet-admin
    namespace: default
current-context: spotfleet-local
"""
        )

    def _wait_ready(self, pki: Path, timeout_s: float, logs: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for p in self._procs:
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"{p.args!r} exited with {p.returncode} during start-up; see {logs}"
                    )
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"kube-apiserver not ready after {timeout_s}s ({last}); see {logs}")

    def stop(self) -> None:
        """Stop kube-apiserver then etcd by PID; idempotent."""
        for p in reversed(self._procs):
            stop_process(p)
        self._procs.clear()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster; with ``check`` a failure raises
        :class:`KubectlError`, whose message carries kubectl's stderr."""
        argv = [str(find_binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, argv, done.stdout, done.stderr)
        return done


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; ``str()`` includes what it printed on stderr."""

    def __str__(self) -> str:
        args = " ".join(str(a) for a in self.cmd[3:])
        return f"kubectl {args} exited {self.returncode}: {str(self.stderr).strip()[-2000:]}"

"""Benchmark one operator on many client fleets, against a no-op Kopf operator.

For each size N (default 100, 300, 1,000) and each operator (the no-op Kopf baseline
``bench/noop_operator.py`` first, then ``spotfleet run``), on a fresh real control
plane (kube-apiserver + etcd) and a fresh stand-in cloud:

1. N small SpotPolicies spread over ``--namespaces`` tenant namespaces (one
   credentials Secret each: that many tenants, all in one AWS account) are applied;
2. the operator starts as its own process; the bench waits until every policy is
   ``Ready=True`` for its generation, sampling the process's RSS and CPU;
3. it then watches ``--idle-seconds`` of steady state.

Printed per run: time to all Ready, peak RSS (VmHWM), CPU seconds to all Ready, idle
CPU (cores), AWS calls per policy to converge and per policy per steady reconcile
(from the stand-in cloud's call log), Events posted, and the operator log's errors,
warnings, Tracebacks, orphaned timers and failed audit writes; then the ratios of
spotfleet to the no-op operator and the goals of the issue "One operator for a
thousand client fleets". ``--dry-run`` makes every policy ``dryRun: true`` (no
launches: the stand-in cloud only answers reads). The last line is one JSON object.

    .venv/bin/python bench/scale.py [--sizes 100,300,1000] [--idle-seconds 180]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spotfleet_cli import localcluster

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    roots = [str(REPO / d) for d in ("engine", "operator", "sim", "tools")]
    env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", PYTHONUNBUFFERED="1")
    env.update(AWS_DEFAULT_REGION="us-east-1")
    return env


@dataclass
class Proc:
    """A process's resource use, read from /proc."""

    pid: int

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0


@dataclass
class Run:
    operator: str
    policies: int
    ready_s: float | None = None
    peak_rss_mb: float = 0.0
    cpu_s_to_ready: float = 0.0
    idle_cpu_cores: float = 0.0
    calls_per_policy_converge: float = 0.0
    calls_per_policy_per_reconcile_steady: float = 0.0
    calls_by_operation_converge: dict[str, int] = field(default_factory=dict)
    events: int = 0
    log: dict[str, int] = field(default_factory=dict)
    sim_cpu_s: float = 0.0
    ready_count: int = 0
    operator_metrics: dict[str, float] = field(default_factory=dict)


def start_sim(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    out, err = workdir / "sim.stdout", workdir / "sim.stderr"
    proc = subprocess.Popen(
        [PY, "-m", "spotfleet_sim", "--port", "0", "--notice-seconds", "120"],
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        env=_env(),
        cwd=REPO,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"stand-in cloud exited: {err.read_text()[-2000:]}")
        for line in out.read_text().splitlines():
            if line.startswith("spotfleet-sim listening on "):
                return proc, line.rsplit(" ", 1)[1]
        time.sleep(0.1)
    raise SystemExit("stand-in cloud did not start")


def sim_calls(url: str, since: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/_spotfleet/log?since={since}", timeout=120) as r:
        records: list[dict[str, Any]] = json.loads(r.read())["records"]
    return records


class Api:
    """GETs against the control plane with the admin certificate."""

    def __init__(self, cluster: localcluster.LocalCluster) -> None:
        assert cluster.workdir is not None
        pki = cluster.workdir / "pki"
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.server = cluster.server

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.server + path, context=self.ctx, timeout=60) as r:
            return json.loads(r.read())

    def list_all(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            sep = "&" if "?" in path else "?"
            out = self.get(f"{path}{sep}limit=500{cont}")
            items += out.get("items", [])
            token = (out.get("metadata") or {}).get("continue")
            if not token:
                return items
            cont = "&continue=" + token


def ready_count(api: Api) -> int:
    n = 0
    for p in api.list_all("/apis/spotfleet.dev/v1alpha1/spotpolicies"):
        st = p.get("status") or {}
        gen = p["metadata"].get("generation")
        for c in st.get("conditions") or []:
            if (
                c["type"] == "Ready"
                and c["status"] == "True"
                and c.get("observedGeneration") == gen
            ):
                n += 1
                break
    return n


def policy_spec(dry_run: bool) -> dict[str, Any]:
    """A small client fleet: 8 vCPU, 2 on-demand, two pools at least."""
    return {
        "region": "us-east-1",
        "availabilityZones": ["us-east-1a", "us-east-1b", "us-east-1c"],
        "capacity": {"target": 8, "unit": "vcpu"},
        "onDemand": {"base": 2, "percentageAboveBase": 0},
        "instanceRequirements": {
            "vcpu": {"min": 2, "max": 4},
            "architectures": ["x86_64"],
            "burstable": "exclude",
        },
        "strategy": {"objective": "balanced", "diversification": {"minPools": 2}},
        "launch": {"imageId": "ami-0123456789abcdef0"},
        "credentials": {"secretRef": {"name": "aws"}},
        "dryRun": dry_run,
    }


def populate(cluster: localcluster.LocalCluster, n: int, namespaces: int, dry_run: bool) -> None:
    docs: list[dict[str, Any]] = []
    for k in range(namespaces):
        ns = f"tenant-{k:03d}"
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "aws", "namespace": ns},
                "stringData": {
                    "aws_access_key_id": f"AKIABENCH{k:011d}",
                    "aws_secret_access_key": f"bench/secret/{k:03d}/0123456789abcdefghijklmnopq",
                },
            }
        )
    for i in range(n):
        docs.append(
            {
                "apiVersion": "spotfleet.dev/v1alpha1",
                "kind": "SpotPolicy",
                "metadata": {"name": f"fleet-{i:04d}", "namespace": f"tenant-{i % namespaces:03d}"},
                "spec": policy_spec(dry_run),
            }
        )
    for a in range(0, len(docs), 500):
        chunk = {"apiVersion": "v1", "kind": "List", "items": docs[a : a + 500]}
        cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(chunk), timeout=600)


#: Operator counters worth reading after a run (sums over their labels).
SCRAPED = (
    "spotfleet_decision_duration_seconds_sum",
    "spotfleet_decision_duration_seconds_count",
    "spotfleet_reconcile_duration_seconds_sum",
    "spotfleet_reconcile_duration_seconds_count",
    "spotfleet_kube_requests_total",
    "spotfleet_store_rows_total",
)


def scrape(port: int) -> dict[str, float]:
    """Sums of :data:`SCRAPED` from the operator's /metrics (label sets added up)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in SCRAPED:
            key = name + ("{" + line.split("{", 1)[1].split("}", 1)[0] + "}" if "{" in line else "")
            if name == "spotfleet_kube_requests_total" or name == "spotfleet_store_rows_total":
                out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
            else:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


LOG_PATTERNS = {
    "errors": re.compile(r" ERROR "),
    "warnings": re.compile(r" WARNING "),
    "tracebacks": re.compile(r"^Traceback", re.M),
    "orphaned_timers": re.compile(r"did not exit in time"),
    "failed_audit_writes": re.compile(r"audit store (write failed|unavailable)"),
}


def log_counts(text: str) -> dict[str, int]:
    return {k: len(p.findall(text)) for k, p in LOG_PATTERNS.items()}


def one_run(kind: str, n: int, args: argparse.Namespace, root: Path) -> Run:
    wd = root / f"{kind}-{n}"
    wd.mkdir(parents=True)
    run = Run(kind, n)
    cluster = localcluster.LocalCluster(workdir=wd / "cluster")
    cluster.start()
    sim, url = start_sim(wd)
    op: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl(
            "apply", "--server-side", "-f", str(REPO / "crds" / "spotpolicies.spotfleet.dev.yaml")
        )
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        populate(cluster, n, args.namespaces, args.dry_run)
        api = Api(cluster)
        calls0 = len(sim_calls(url, 0))
        log_path = wd / "operator.log"
        metrics_port = localcluster.free_port()
        env = _env()
        env["NOOP_INTERVAL_SECONDS"] = str(args.interval)
        if kind == "noop":
            argv = [PY, "-m", "kopf", "run", str(REPO / "bench" / "noop_operator.py"),
                    "--standalone", "--all-namespaces", "--quiet"]  # fmt: skip
            env["KUBECONFIG"] = str(cluster.kubeconfig)
        else:
            argv = [PY, "-m", "spotfleet_operator", "run", "--kubeconfig", str(cluster.kubeconfig),
                    "--aws-endpoint-url", url, "--interval", str(args.interval),
                    "--metrics-port", str(metrics_port), "--health-port", "0",
                    "--database-url", f"sqlite:///{wd / 'audit.db'}"]  # fmt: skip
        t0 = time.monotonic()
        op = subprocess.Popen(
            argv, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=wd
        )
        p = Proc(op.pid)
        spy = _profile(args, kind, n, op.pid, "converge", args.timeout)
        spy_sim = _profile(args, f"sim-{kind}", n, sim.pid, "converge", args.timeout)
        deadline = t0 + args.timeout
        while time.monotonic() < deadline:
            if op.poll() is not None:
                raise SystemExit(f"{kind} exited {op.returncode}: {log_path.read_text()[-3000:]}")
            run.ready_count = ready_count(api)
            if run.ready_count >= n:
                run.ready_s = round(time.monotonic() - t0, 1)
                break
            time.sleep(2.0)
        run.cpu_s_to_ready = round(p.cpu_seconds(), 1)
        for s in (spy, spy_sim):
            if s is not None:
                s.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
                s.wait(60)
        converge = sim_calls(url, calls0)
        run.calls_per_policy_converge = round(len(converge) / n, 3)
        ops: dict[str, int] = {}
        for c in converge:
            ops[c["operation"]] = ops.get(c["operation"], 0) + 1
        run.calls_by_operation_converge = dict(sorted(ops.items()))
        idle0_calls = calls0 + len(converge)
        cpu0 = p.cpu_seconds()
        spy = _profile(args, kind, n, op.pid, "idle", args.idle_seconds)
        time.sleep(args.idle_seconds)
        if spy is not None:
            spy.wait(60)
        run.idle_cpu_cores = round((p.cpu_seconds() - cpu0) / args.idle_seconds, 3)
        steady = sim_calls(url, idle0_calls)
        reconciles = n * args.idle_seconds / args.interval
        run.calls_per_policy_per_reconcile_steady = round(len(steady) / reconciles, 3)
        if kind != "noop":  # decisions, reconciles, kube requests and store rows it counted
            run.operator_metrics = scrape(metrics_port)
        run.peak_rss_mb = round(p.peak_rss_mb(), 1)
        run.sim_cpu_s = round(Proc(sim.pid).cpu_seconds(), 1)
        events = api.list_all("/api/v1/events")
        run.events = sum(
            1 for e in events if e.get("involvedObject", {}).get("kind") == "SpotPolicy"
        )
    finally:
        if op is not None and op.poll() is None:
            op.send_signal(signal.SIGINT)
            try:
                op.wait(30)
            except subprocess.TimeoutExpired:
                op.kill()
                op.wait(10)
        run.log = (
            log_counts((wd / "operator.log").read_text(errors="replace"))
            if (wd / "operator.log").exists()
            else {}
        )
        sim.terminate()
        try:
            sim.wait(20)
        except subprocess.TimeoutExpired:
            sim.kill()
        cluster.stop()
    return run


def _profile(
    args: argparse.Namespace, kind: str, n: int, pid: int, phase: str, seconds: float
) -> subprocess.Popen[bytes] | None:
    """With ``--profile DIR``: py-spy (from PATH) samples the operator through one phase
    (``converge``: start to all Ready; ``idle``) into DIR/<kind>-<n>-<phase>.txt
    (collapsed stacks, for flamegraph tools)."""
    if args.profile is None:
        return None
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    out = Path(args.profile) / f"{kind}-{n}-{phase}.txt"
    if phase == "converge":
        time.sleep(1.0)  # py-spy attaches once the interpreter is up
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [spy, "record", "--format", "raw", "--rate", "50", "--nonblocking",
            "--duration", str(int(seconds)), "--pid", str(pid),
            "--output", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--namespaces", type=int, default=50)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--idle-seconds", type=float, default=180.0)
    ap.add_argument(
        "--profile", metavar="DIR", help="py-spy the operator to Ready and idle, into DIR"
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="give up waiting for Ready")
    ap.add_argument("--dry-run", action="store_true", help="every policy dryRun: true")
    ap.add_argument("--operators", default="noop,spotfleet")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spotfleet-scale-"))
    runs: list[Run] = []
    load0 = os.getloadavg()[0]
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for kind in args.operators.split(","):
                r = one_run(kind, n, args, root)
                runs.append(r)
                print(json.dumps(asdict(r)), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    by = {(r.operator, r.policies): r for r in runs}
    print()
    print(
        "| policies | operator | all Ready s | peak RSS MB | CPU s | idle CPU cores | "
        "AWS calls/policy converge | steady calls/policy/reconcile | Events | "
        "log E/W/TB/timers/audit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        lg = r.log
        print(
            f"| {r.policies} | {r.operator} | {r.ready_s} | {r.peak_rss_mb} | {r.cpu_s_to_ready} | "
            f"{r.idle_cpu_cores} | {r.calls_per_policy_converge} | "
            f"{r.calls_per_policy_per_reconcile_steady} | {r.events} | "
            f"{lg.get('errors')}/{lg.get('warnings')}/{lg.get('tracebacks')}/"
            f"{lg.get('orphaned_timers')}/{lg.get('failed_audit_writes')} |"
        )
    summary: dict[str, Any] = {"bench": "scale", "load_1m_start": round(load0, 2),
                               "load_1m_end": round(os.getloadavg()[0], 2),
                               "dry_run": args.dry_run, "interval_s": args.interval,
                               "idle_s": args.idle_seconds, "runs": [asdict(r) for r in runs],
                               "ratios": {}, "goals": {}}  # fmt: skip
    for (kind, n), r in by.items():
        base = by.get(("noop", n))
        if kind == "spotfleet" and base is not None:
            summary["ratios"][str(n)] = {
                "ready_time": ratio(r.ready_s, base.ready_s),
                "peak_rss": ratio(r.peak_rss_mb, base.peak_rss_mb),
                "cpu_to_ready": ratio(r.cpu_s_to_ready, base.cpu_s_to_ready),
            }
    s1000 = by.get(("spotfleet", 1000))
    if s1000 is not None:
        rat = summary["ratios"].get("1000", {})
        summary["goals"] = {
            "ready_le_2x_noop": rat.get("ready_time") is not None and rat["ready_time"] <= 2.0,
            "ready_le_150s": s1000.ready_s is not None and s1000.ready_s <= 150,
            "rss_le_2x_noop": rat.get("peak_rss") is not None and rat["peak_rss"] <= 2.0,
            "rss_le_400mb": s1000.peak_rss_mb <= 400,
            "idle_cpu_le_0.1": s1000.idle_cpu_cores <= 0.1,
            "converge_calls_le_3": s1000.calls_per_policy_converge <= 3,
            "steady_calls_le_0.2": s1000.calls_per_policy_per_reconcile_steady <= 0.2,
        }
    clean = all(
        not (
            r.log.get("orphaned_timers")
            or r.log.get("failed_audit_writes")
            or r.log.get("tracebacks")
        )
        for r in runs
        if r.operator == "spotfleet"
    )
    summary["goals"]["clean_logs_every_n"] = clean
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

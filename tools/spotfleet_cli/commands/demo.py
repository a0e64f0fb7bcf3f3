"""``spotfleet demo``: the whole product on one machine, in one command.

A real control plane (etcd + kube-apiserver), the stand-in cloud replaying real
2021 spot prices on an accelerated clock, the CRD, the operator (in this
process), two SpotPolicies; then a scale-up whose first spot launch finds its
pool dry (the plan must route around it), and a spot interruption the operator must replace.
Ends with a summary (rich table, and JSON with ``--json``) and tears everything
down, checking by PID that no process is left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from spotfleet_cli import consoles, localcluster
from spotfleet_cli.commands import demo_view
from spotfleet_operator import api, config, runner
from spotfleet_operator.aws import credentials, ec2, eventing
from spotfleet_sim import client as sim_client

NAMESPACE = "demo"
DUMMY_KEYS = {
    "aws_access_key_id": "AKIADEMODEMODEMO0000",
    "aws_secret_access_key": "demo-secret-never-used",
}


def crd_file() -> Path:
    """The SpotPolicy CRD of this installation."""
    return api.crd_file()


def policies() -> list[dict[str, Any]]:
    """The two demo policies: a web tier by vCPU and a cache by memory."""
    common = {
        "region": "us-east-1",
        "launch": {"imageId": "ami-0123456789abcdef0", "tags": {"demo": "true"}},
        "credentials": {"secretRef": {"name": "aws"}},
    }
    web = {
        **common,
        "availabilityZones": ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"],
        "capacity": {"target": 48, "unit": "vcpu"},
        "onDemand": {"base": 8, "percentageAboveBase": 0},
        "instanceRequirements": {
            "vcpu": {"min": 2, "max": 8},
            "architectures": ["x86_64"],
            "burstable": "exclude",
            "currentGenerationOnly": True,
        },
        "strategy": {"objective": "balanced", "diversification": {"minPools": 3}},
    }
    cache = {
        **common,
        "capacity": {"target": 256, "unit": "memoryGiB"},
        "instanceRequirements": {
            "allowedFamilies": ["r5*", "r6i", "x2*", "r4"],
            "memoryGiB": {"min": "16", "max": "128"},
        },
        "strategy": {"objective": "lowestCost", "diversification": {"minPools": 2}},
        "rebalance": {"onRebalanceRecommendation": "replace"},
    }
    return [
        {
            "apiVersion": "spotfleet.dev/v1alpha1",
            "kind": "SpotPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }
        for name, spec in (("web", web), ("cache", cache))
    ]


@dataclass
class Options:
    duration: float = 20.0  # seconds to keep watching after the scenario
    keep: bool = False
    json_out: Path | None = None
    live: bool = True
    speed: float = 60.0  # market seconds per wall second
    workdir: Path | None = None


@dataclass
class Demo:
    opts: Options
    console: Console
    workdir: Path = field(default_factory=Path)
    cluster: localcluster.LocalCluster | None = None
    sim_proc: subprocess.Popen[bytes] | None = None
    sim: sim_client.SimClient | None = None
    endpoint: str = ""
    op_thread: threading.Thread | None = None
    op_stop: threading.Event = field(default_factory=threading.Event)
    op_error: list[BaseException] = field(default_factory=list)
    metrics_port: int = 0
    steps: list[tuple[str, float]] = field(default_factory=list)
    avoided: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    routed: list[dict[str, Any]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    # ---- helpers -----------------------------------------------------------

    def step(self, text: str) -> None:
        took = time.monotonic() - self.started
        self.steps.append((text, round(took, 1)))
        self.console.print(f"[bold cyan]{took:6.1f}s[/] {text}")

    def kubectl(self, *args: str, input: str | None = None) -> str:
        assert self.cluster is not None
        return self.cluster.kubectl(*args, input=input).stdout

    def get_policies(self) -> list[dict[str, Any]]:
        out = json.loads(self.kubectl("get", "spotpolicies", "-n", NAMESPACE, "-o", "json"))
        return list(out["items"])

    def events(self) -> list[dict[str, Any]]:
        out = json.loads(self.kubectl("get", "events", "-n", NAMESPACE, "-o", "json"))
        items = list(out["items"])
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return items

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._live() as live:
            while time.monotonic() < deadline:
                self._check_operator()
                if live is not None:
                    live.update(self.table())
                if predicate():
                    if live is not None:
                        live.update(self.table())
                    return
                time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def _live(self) -> Any:
        if self.opts.live and self.console.is_terminal:
            return Live(self.table(), console=self.console, refresh_per_second=4, transient=True)
        return _NullLive()

    def _check_operator(self) -> None:
        if self.op_error:
            raise RuntimeError(f"the operator stopped: {self.op_error[0]!r}")

    # ---- the show ----------------------------------------------------------

    def table(self) -> Table:
        try:
            items = self.get_policies()
        except subprocess.CalledProcessError:
            items = []
        return demo_view.policy_table(items)

    def summary(self) -> dict[str, Any]:
        return demo_view.summarize(self)

    def print_summary(self, s: dict[str, Any]) -> None:
        demo_view.print_summary(self.console, s)

    def ready(self, name: str, generation: int = 1) -> bool:
        for p in self.get_policies():
            if p["metadata"]["name"] != name:
                continue
            st = p.get("status") or {}
            ok = any(
                c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []
            )
            return bool(ok and st.get("observedGeneration") == generation)
        return False

    def start(self) -> None:
        self.workdir = self.opts.workdir or Path(tempfile.mkdtemp(prefix="spotfleet-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = localcluster.LocalCluster(workdir=self.workdir / "cluster")
        self.cluster.start()
        self.step(f"control plane up: real etcd + kube-apiserver at {self.cluster.server}")

        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        sim_out = (self.workdir / "sim.stdout").open("wb")
        self.sim_proc = subprocess.Popen(
            [
                sys.executable, "-m", "spotfleet_sim", "--port", "0",
                "--speed", str(self.opts.speed), "--notice-seconds", "120",
            ],
            stdout=sim_out,
            stderr=(self.workdir / "sim.stderr").open("wb"),
            env=env,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.endpoint and time.monotonic() < deadline:
            if self.sim_proc.poll() is not None:
                raise RuntimeError(
                    "the stand-in cloud exited: "
                    + (self.workdir / "sim.stderr").read_text()[-2000:]
                )
            for line in (self.workdir / "sim.stdout").read_text().splitlines():
                if line.startswith("spotfleet-sim listening on "):
                    self.endpoint = line.rsplit(" ", 1)[1]
            time.sleep(0.1)
        if not self.endpoint:
            raise RuntimeError("the stand-in cloud did not start in 60s")
        self.sim = sim_client.SimClient(self.endpoint)
        clock = self.sim.clock()
        self.step(
            f"stand-in cloud at {self.endpoint}: replaying real spot prices from "
            f"{clock.history_now:%Y-%m-%d %H:%M} UTC at {clock.speed:g}x"
        )

        self.kubectl("apply", "--server-side", "-f", str(crd_file()))
        self.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/spotpolicies.spotfleet.dev"
        )
        self.step("CRD spotpolicies.spotfleet.dev installed")

        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        queue = eventing.ensure_interruption_queue(
            credentials.ClientCache(self.endpoint), "us-east-1"
        )
        self.step("EventBridge rule -> SQS queue for spot interruption warnings created")

        self.metrics_port = localcluster.free_port()
        log_file = self.workdir / "operator.log"
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)

        # The operator runs in a thread of this process; its settings are an object
        # (the environment is never changed while other threads spawn kubectl).
        cfg = config.OperatorConfig.load(
            {
                "namespaces": (NAMESPACE,),
                "aws_endpoint_url": self.endpoint,
                "reconcile_interval_seconds": 3.0,
                "metrics_port": self.metrics_port,
                "health_port": 0,
                "database_url": f"sqlite:///{self.workdir / 'audit.db'}",
                "interruption_queue_url": queue,
                "interruption_poll_seconds": 1.0,
                "market_cache_seconds": 5.0,
                "unavailable_pool_ttl_seconds": 600.0,
            }
        )
        kubeconfig = str(self.cluster.kubeconfig)

        def operate() -> None:
            try:
                runner.run(cfg, kubeconfig, stop_flag=self.op_stop, logs=False)
            except BaseException as e:  # surfaced by _check_operator
                self.op_error.append(e)

        self.op_thread = threading.Thread(target=operate, name="spotfleet-operator", daemon=True)
        self.op_thread.start()
        self.step(
            f"operator running in this process (metrics on :{self.metrics_port}, log {log_file})"
        )

        self.kubectl("create", "namespace", NAMESPACE)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws", "namespace": NAMESPACE},
            "stringData": DUMMY_KEYS,
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(secret))
        for p in policies():
            self.kubectl("apply", "-f", "-", input=json.dumps(p))
        self.step("applied SpotPolicies demo/web (48 vCPU, 8 on-demand) and demo/cache (256 GiB)")

    def scenario(self) -> None:
        self.wait("both policies Ready", lambda: self.ready("web") and self.ready("cache"))
        self.console.print(self.table())
        self.step("both policies Ready: the fleets run in the stand-in cloud")
        for p in self.get_policies():
            d = (p.get("status") or {}).get("lastDecision") or {}
            self.console.print(f"  [bold]{p['metadata']['name']}[/]: {d.get('summary', '')}")

        web = next(p for p in self.get_policies() if p["metadata"]["name"] == "web")
        before = {
            f"{a['instanceType']}/{a['zone']}/{a['market']}": int(a["count"])
            for a in web["status"]["allocation"]
        }
        assert self.sim is not None
        dry_before = set(self.sim.unavailable())
        # the shortage hits the spot pool web asks for next, whichever the planner picks
        self.sim.run_dry_on_next_spot_launch(1)
        self.step("shortage armed: the next spot pool web launches into has no capacity")
        self.kubectl(
            "patch", "spotpolicy", "web", "-n", NAMESPACE, "--type=merge",
            "-p", '{"spec":{"capacity":{"target":96}}}',
        )  # fmt: skip
        self.step("scaled demo/web to 96 vCPU")
        self.wait("web Ready at 96 vCPU", lambda: self.ready("web", 2), timeout=180)
        dry = [q for q in self.sim.unavailable() if q not in dry_before]
        web = next(p for p in self.get_policies() if p["metadata"]["name"] == "web")
        for pool in dry:
            key = f"{pool.instance_type}/{pool.zone}/{pool.market}"
            self.avoided.append(key)
            after = sum(
                a["count"]
                for a in web["status"]["allocation"]
                if f"{a['instanceType']}/{a['zone']}/{a['market']}" == key
            )
            self.routed.append({"pool": key, "before": before.get(key, 0), "after": after})
            self.step(f"the stand-in cloud ran out of capacity in {key}")
        for e in self.events():
            if e["reason"] == "InsufficientCapacity" and e["involvedObject"]["name"] == "web":
                self.console.print(f"  [yellow]event[/] {e['reason']}: {e['message']}")
                break
        self.step("web re-planned around the shortage and is Ready again")

        cache = next(p for p in self.get_policies() if p["metadata"]["name"] == "cache")
        uid = cache["metadata"]["uid"]
        victim = self._a_spot_instance(uid)
        if victim:
            self.sim.interrupt(victim, kind="both")
            self.interrupted.append(victim)
            self.step(f"spot interruption warning sent for {victim} (cache)")
            self.wait(
                "the operator to replace the interrupted instance",
                lambda: (
                    any(e["reason"] == "SpotInterruption" for e in self.events())
                    and self.ready("cache")
                ),
                timeout=120,
            )
            still = {p["instance_id"] for p in self.sim.pending_interruptions()}
            self.step(
                "cache replaced the interrupted instance "
                + (
                    "before AWS reclaimed it"
                    if victim in still
                    else "(AWS reclaimed it first: the notice ran out before the replacement)"
                )
            )

        if self.opts.duration > 0:
            self.step(
                f"watching the fleets for {self.opts.duration:g}s "
                f"(market clock {self.opts.speed:g}x)"
            )
            end = time.monotonic() + self.opts.duration
            self.wait(
                "the watch period", lambda: time.monotonic() >= end, timeout=self.opts.duration + 30
            )

    def _a_spot_instance(self, uid: str) -> str | None:
        """A running spot instance of the policy, read through the operator's own adapter."""
        calls = ec2.Calls(workers=1, per_tenant=1, timeout=30.0)
        try:
            client = ec2.Ec2(credentials.ClientCache(self.endpoint), calls, None, "us-east-1")
            owned = asyncio.run(client.owned_instances(uid))
        finally:
            calls.shutdown()
        spot = sorted(o.instance_id for o in owned if o.pool.market.value == "spot")
        return spot[0] if spot else None

    def explain_failure(self, lines: int = 60) -> None:
        """Print what a user needs to see why a step failed: each policy's conditions and
        the tail of the operator's log (the work directory is removed afterwards)."""
        try:
            for p in self.get_policies():
                for c in p.get("status", {}).get("conditions", []):
                    self.console.print(
                        f"  {p['metadata']['name']}: {c.get('type')}={c.get('status')} "
                        f"({c.get('reason')}): {c.get('message')}",
                        markup=False,
                    )
        except Exception as e:  # the cluster may be what failed
            self.console.print(f"  (policies unreadable: {e})", markup=False)
        log = self.workdir / "operator.log" if self.workdir else None
        if log is not None and log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            self.console.print(f"last {len(tail)} lines of the operator log:", markup=False)
            for line in tail:
                self.console.print("  " + line, markup=False, soft_wrap=True)

    def stop(self) -> list[int]:
        """Tear everything down; returns the PIDs still alive afterwards (should be [])."""
        pids: list[int] = []
        if self.sim_proc is not None:
            self.pids.append(self.sim_proc.pid)
        if self.cluster is not None:
            self.pids.extend(self.cluster.pids)
        if self.op_thread is not None:
            self.op_stop.set()
            self.op_thread.join(timeout=30)
        if self.sim_proc is not None:
            pids.append(self.sim_proc.pid)
            if self.sim_proc.poll() is None:
                self.sim_proc.send_signal(signal.SIGTERM)
                try:
                    self.sim_proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.sim_proc.kill()
                    self.sim_proc.wait(timeout=5)
        if self.cluster is not None:
            pids.extend(self.cluster.pids)
            self.cluster.stop()
        return [p for p in pids if _alive(p)]


class _NullLive:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child that was reaped is gone; one not yet reaped still counts
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def run(opts: Options, console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to ``opts.json_out``)."""
    console = console or consoles.console()
    demo = Demo(opts, console)
    summary: dict[str, Any] = {}
    error: BaseException | None = None
    try:
        demo.start()
        demo.scenario()
        summary = demo.summary()
        demo.print_summary(summary)
        if opts.keep:
            assert demo.cluster is not None
            console.print(
                "\n[bold]Left running.[/] Explore with:\n"
                f"  kubectl --kubeconfig {demo.cluster.kubeconfig} get spol -n demo\n"
                f"  kubectl --kubeconfig {demo.cluster.kubeconfig} describe spol web -n demo\n"
                f"  curl -s localhost:{demo.metrics_port}/metrics | grep spotfleet_\n"
                f"  stand-in cloud: {demo.endpoint} (AWS_ACCESS_KEY_ID=testing)\n"
                "Press Ctrl-C to tear everything down."
            )
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("\ninterrupted: tearing down")
    except BaseException as e:
        error = e
        console.print(f"[red]demo failed:[/] {e}")
        demo.explain_failure()
    finally:
        leftovers = demo.stop()
        summary["leftoverPids"] = leftovers
        summary["pids"] = demo.pids
        summary["ok"] = error is None and not leftovers
        summary["wallSeconds"] = round(time.monotonic() - demo.started, 1)
        if opts.workdir is None and demo.workdir and demo.workdir.exists() and not opts.keep:
            shutil.rmtree(demo.workdir, ignore_errors=True)
        console.print(
            f"torn down in {summary['wallSeconds']}s total; "
            f"leftover processes: {leftovers or 'none'}"
        )
        console.print(
            "next: docs/getting-started.md, docs/api.md, "
            "`spotfleet recommend -f examples/web-tier-vcpu.yaml`"
        )
        if opts.json_out is not None:
            opts.json_out.write_text(json.dumps(summary, indent=2, default=str))
    if error is not None:
        raise SystemExit(1)
    return summary

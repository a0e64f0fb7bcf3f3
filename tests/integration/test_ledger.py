"""The ledger end to end on real parts: ``spotfleet run`` as its own process against the
real control plane and the stand-in cloud, its store in a real PostgreSQL.

- a policy scales up, loses an instance to an interruption, scales down; its decisions,
  actions, interruptions and ledger rows are read back from PostgreSQL and checked
  against what EC2 (the stand-in cloud's call log, boto3) and the status say, and
  ``spotfleet report`` on that database shows the same figures;
- the PostgreSQL server is stopped while the policy reconciles and started again:
  reconciling never stopped, and the decision and action rows equal what the operator
  decided (its own counter) and the AWS actions the cloud saw;
- price ingestion through the operator's AWS port is incremental and paginated, and
  ``spotfleet train --from-store`` on what it ingested gives a model and a verdict.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spotfleet_cli import localcluster
from spotfleet_engine import catalog as catalog_mod
from spotfleet_operator import api, config, jobs, metrics
from spotfleet_operator.aws import credentials, ec2
from spotfleet_operator.store import Store, ledger, tables
from tests.fixtures import cloud as cloud_fx
from tests.fixtures.operator import (
    OperatorProcess,
    base_spec,
    ec2_instances,
    get_json,
    start_operator,
    wait_for,
)
from tests.fixtures.operator import condition as cond
from tests.fixtures.postgres import PgCluster
from tests.integration.test_operator import apply, policy, secret, set_target

pytestmark = pytest.mark.integration
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cloud_fx.Cloud]:
    """A stand-in cloud of this module's own, its clock 70 days into the 2021 history
    (so weeks of prices are there to ingest)."""
    with cloud_fx.own_cloud(
        tmp_path_factory.mktemp("ledgercloud"),
        "--notice-seconds",
        "2",
        "--history-start",
        "2021-05-10T00:00:00+00:00",
    ) as c:
        yield c


@pytest.fixture(scope="module")
def queue_url(stand_in: cloud_fx.Cloud) -> str:
    return cloud_fx.interruption_queue(stand_in)


def operator(
    workdir: Path,
    cluster: localcluster.LocalCluster,
    cloud: cloud_fx.Cloud,
    url: str,
    namespace: str,
    queue: str,
) -> OperatorProcess:
    return start_operator(
        workdir,
        cluster.kubeconfig,
        cloud.endpoint_url,
        "--namespace", namespace,
        "--database-url", url,
        "--interruption-queue-url", queue,
        "--interruption-poll-seconds", "0.5",
        "--ledger-rollup-minutes", "0.02",
        "--price-ingestion-minutes", "0",
        "--retention-minutes", "0",
    )  # fmt: skip


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _read(url: str, ns: str) -> dict[str, Any]:
    s = Store(url)
    try:
        return {
            "decisions": await s.decisions(ns, "web"),
            "actions": await s.actions(ns, "web"),
            "interruptions": await s.interruptions(ns, "web"),
            "ledger": await s.ledger(ns, "web"),
        }
    finally:
        await s.close()


def read(url: str, ns: str) -> dict[str, Any]:
    return dict(run(_read(url, ns)))


def ready_at(k: localcluster.LocalCluster, ns: str, generation: int) -> Any:
    def check() -> Any:
        obj = get_json(k, "spotpolicy", "web", "-n", ns)
        st = obj.get("status") or {}
        if (
            st.get("observedGeneration") == generation
            and cond(obj, "Ready").get("status") == "True"
        ):
            return obj
        return None

    return check


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def reconciles(text: str) -> float:
    """Reconciles the operator made, every outcome."""
    pattern = r"^spotfleet_reconcile_duration_seconds_count\{[^}]*\} (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def report(url: str, ns: str, *extra: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "spotfleet_operator", "report", "--policy", f"{ns}/web",
         "--database-url", url, *extra],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    return out.stdout


def test_scale_up_interruption_scale_down_are_in_the_ledger(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    queue_url: str,
    pg_cluster: PgCluster,
    tmp_path: Path,
    namespace: str,
) -> None:
    k, ns = crds_installed, namespace
    url = pg_cluster.create_database("ledger_e2e")
    since = len(stand_in.client.calls())
    op = operator(tmp_path, k, stand_in, url, ns, queue_url)
    try:
        apply(k, secret(ns))
        apply(k, policy(ns))  # scale up: 0 -> 32 vCPU
        uid = wait_for(ready_at(k, ns, 1), "Ready", op=op)["metadata"]["uid"]
        spot = [i for i in ec2_instances(stand_in, uid) if i.get("InstanceLifecycle") == "spot"]
        victim = spot[0]["InstanceId"]
        stand_in.client.interrupt(victim, kind="interruption", notice_seconds=1.0)

        def replaced() -> Any:
            rows = read(url, ns)["interruptions"]
            done = [r for r in rows if r.instance_id == victim and r.running_at is not None]
            return done[0] if done else None

        row = wait_for(replaced, "the interruption's replacement running", timeout=120, op=op)
        set_target(k, ns, 16)  # scale down
        obj = wait_for(ready_at(k, ns, 2), "Ready at generation 2", timeout=90, op=op)

        def flushed() -> Any:
            text = op.metrics()
            return metric(text, "spotfleet_store_queue_depth") == 0 and text

        wait_for(flushed, "the store's queue empty", op=op)

        def rolled_up() -> Any:
            now = read(url, ns)
            if not now["ledger"] or not now["decisions"]:
                return None
            return ledger._utc(now["ledger"][-1].rolled_up_at) > ledger._utc(
                now["decisions"][-1].at
            )

        wait_for(rolled_up, "the ledger rolled up past the last decision", op=op)
        calls = stand_in.client.calls(since)
    finally:
        op.stop()
    got = read(url, ns)
    inst = ec2_instances(stand_in, uid)
    # no credential value reaches a store row (the secret scan covers SQLite stores)
    dumped = json.dumps([r.model_dump() for rows in got.values() for r in rows], default=str)
    assert KEY_ID not in dumped and "wJalrXUtnFEMI/K7MDENG" not in dumped

    # interruptions: the warning, its replacement and when it ran
    assert row.kind == "warning" and row.pool and row.replacement_ids
    assert row.replaced_at is not None and row.time_to_replace_seconds is not None
    assert row.time_to_replace_seconds > 0
    assert [r.instance_id for r in got["interruptions"]] == [victim], [
        (r.instance_id, r.kind, r.notice_at) for r in got["interruptions"]
    ]

    # actions: one row per CreateFleet / TerminateInstances call the cloud saw
    launches = [a for a in got["actions"] if a.kind == "launch"]
    terminates = [a for a in got["actions"] if a.kind == "terminate"]
    assert len(launches) == sum(1 for c in calls if c.operation == "CreateFleet")
    assert len(terminates) == sum(1 for c in calls if c.operation == "TerminateInstances")
    assert len(terminates) >= 1  # the scale-down (and the interrupted instance's removal)
    assert all(a.client_token and a.client_token.startswith("sf-") for a in launches)
    assert all(a.request_id for a in launches) and all(a.outcome == "ok" for a in launches)
    assert all(a.request_id for a in terminates)  # the AWS request id of every batch answered
    launched = {i for a in launches for i in a.instance_ids}
    terminated = {i for a in terminates for i in a.instance_ids}
    assert set(row.replacement_ids) <= launched
    assert {i["InstanceId"] for i in inst} <= launched
    assert terminated and not terminated & {i["InstanceId"] for i in inst}

    # decisions: the plan and its explanation, the engine and model versions
    decisions = got["decisions"]
    assert len(decisions) >= 3  # scale up, the replacement, scale down
    assert all(d.plan and d.explanation and d.engine_version for d in decisions)
    assert all(d.model_version and len(d.model_version) == 12 for d in decisions)
    last = decisions[-1]
    assert last.generation == 2 and last.plan is not None and last.plan["target"] == 16.0
    assert sum(d.launches for d in decisions) == sum(len(a.instance_ids) for a in launches)

    # the ledger: hours from the first decision to the last roll-up
    rows = got["ledger"]
    assert rows and ledger._utc(rows[0].hour) == ledger.hour_of(decisions[0].at)
    assert sum(r.interruptions for r in rows) == 1 and sum(r.replacements for r in rows) == 1
    assert sum(r.launches for r in rows) == len(launched)
    assert sum(r.terminations for r in rows) == sum(len(a.instance_ids) for a in terminates)
    # the hour in progress prices the plan in force: what the status says it costs
    assert rows[-1].rate_per_hour == ledger.text(Decimal(obj["status"]["cost"]["perHour"]))
    assert Decimal(rows[-1].rate_per_hour) == Decimal(last.cost_per_hour)

    # spotfleet report on that database: the same figures
    doc = json.loads(report(url, ns, "--json"))
    total = doc["total"]
    for f in ("cost", "on_demand_equivalent", "savings"):
        assert Decimal(total[f]) == sum(Decimal(getattr(r, f)) for r in rows), f
    assert total["interruptions"] == 1 and total["replacements"] == 1
    assert total["launches"] == len(launched)
    assert sum(Decimal(d["cost"]) for d in doc["days"]) == Decimal(total["cost"])
    assert doc["current"]["rate_per_hour"] == rows[-1].rate_per_hour
    assert Decimal(doc["current"]["rate_per_hour"]) == Decimal(obj["status"]["cost"]["perHour"])
    csv_text = report(url, ns, "--csv")
    assert csv_text.splitlines()[-1].startswith(f"{ns}/web,total,{total['cost']},")
    table = report(url, ns)
    assert total["cost"] in table and "total" in table


def test_postgres_stopped_during_reconciles_loses_no_row(
    crds_installed: localcluster.LocalCluster,
    stand_in: cloud_fx.Cloud,
    queue_url: str,
    pg_cluster: PgCluster,
    tmp_path: Path,
    namespace: str,
) -> None:
    k, ns = crds_installed, namespace
    url = pg_cluster.create_database("ledger_outage")
    since = len(stand_in.client.calls())
    op = operator(tmp_path, k, stand_in, url, ns, queue_url)
    try:
        apply(k, secret(ns))
        apply(k, policy(ns))
        wait_for(ready_at(k, ns, 1), "Ready", op=op)
        wait_for(lambda: metric(op.metrics(), "spotfleet_store_queue_depth") == 0, "flushed", op=op)
        reconciles_before = reconciles(op.metrics())
        pg_cluster.stop("immediate")
        try:
            for gen, target in ((2, 64), (3, 16), (4, 40)):
                set_target(k, ns, target)
                wait_for(
                    ready_at(k, ns, gen),
                    f"Ready at generation {gen} with the store down",
                    timeout=90,
                    op=op,
                )
            text = op.metrics()
            assert metric(text, "spotfleet_store_up") == 0.0
            assert metric(text, "spotfleet_store_queue_depth") > 0
            assert reconciles(text) > reconciles_before + 3
        finally:
            pg_cluster.start()

        def flushed() -> Any:
            text = op.metrics()
            ok = (
                metric(text, "spotfleet_store_queue_depth") == 0
                and metric(text, "spotfleet_store_up") == 1
            )
            return text if ok else None

        text = wait_for(flushed, "the buffered rows written", timeout=120, op=op)
        calls = stand_in.client.calls(since)
    finally:
        op.stop()
    got = read(url, ns)
    # both sides: the operator's own count of decisions and the cloud's of AWS actions
    submitted = metric(text, "spotfleet_store_rows_submitted_total", '{table="decisions"}')
    assert submitted >= 4 and len(got["decisions"]) == submitted
    assert metric(text, "spotfleet_store_rows_total", '{outcome="dropped"}') == 0
    aws_actions = [c for c in calls if c.operation in ("CreateFleet", "TerminateInstances")]
    assert len(got["actions"]) == len(aws_actions) >= 3
    assert [d.generation for d in got["decisions"]][-1] == 4
    assert {2, 3, 4} <= {d.generation for d in got["decisions"]}
    log = op.log()
    assert log.count("store unavailable") == 1, log[-3000:]
    assert "store available again" in log


async def _ingest(
    cloud: cloud_fx.Cloud, url: str, targets: jobs.PriceTargets
) -> tuple[list[int], dict[str, dt.datetime]]:
    cfg = config.OperatorConfig.load(
        {"price_backfill_hours": 24.0 * 45, "aws_endpoint_url": cloud.endpoint_url}, env={}
    )
    clients = credentials.ClientCache(
        cfg.aws_endpoint_url, credentials.client_config(cfg.aws_call_timeout_seconds, 3, 4)
    )
    calls = ec2.Calls(4, 4, cfg.aws_call_timeout_seconds)
    store = Store(url)
    await store.open()
    job = jobs.Jobs(
        store, lambda c, r: ec2.Ec2(clients, calls, c, r), cfg, metrics.Metrics(), targets
    )
    try:
        first = await job.prices_once()
        last = await store.last_price_at("us-east-1")
        cloud.client.advance(6 * 3600)  # six more hours of market
        second = await job.prices_once()
        third = await job.prices_once()
        return [int(first or 0), int(second or 0), int(third or 0)], last
    finally:
        await store.close()
        calls.shutdown()


def test_price_ingestion_is_incremental_and_train_from_store_gives_a_verdict(
    stand_in: cloud_fx.Cloud, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    url = pg_cluster.create_database("ledger_prices")
    spec = base_spec()
    spec["instanceRequirements"]["vcpu"] = {"min": 2, "max": 4}
    parsed = api.parse_policy({"metadata": {"name": "p", "namespace": "n"}, "spec": spec})
    assert not isinstance(parsed, api.InvalidSpec)
    targets = jobs.PriceTargets()
    keys = credentials.StaticKeys(KEY_ID, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    cat = catalog_mod.load_bundled("us-east-1")
    targets.note(keys, "us-east-1", api.to_engine_policy(parsed.spec), cat)
    types = sorted(targets.targets[(credentials.fingerprint(keys), "us-east-1")].types)
    assert types
    since = len(stand_in.client.calls())
    (first, second, third), last = run(_ingest(stand_in, url, targets))
    pages = [c for c in stand_in.client.calls(since) if c.operation == "DescribeSpotPriceHistory"]
    assert len(pages) > 3  # paginated (and one call per run at least)
    # what the cloud holds since the first run's newest points, counted with plain boto3
    client = stand_in.boto3_client("ec2")
    seen: set[tuple[str, str, dt.datetime]] = set()
    for page in client.get_paginator("describe_spot_price_history").paginate(
        StartTime=min(last.values()), InstanceTypes=types, ProductDescriptions=["Linux/UNIX"]
    ):
        for p in page["SpotPriceHistory"]:
            t = p["Timestamp"].astimezone(dt.UTC)
            if t > last[p["InstanceType"]]:
                seen.add((p["InstanceType"], p["AvailabilityZone"], t))
    assert first > 1000
    assert second == len(seen) > 0  # only the new points
    assert third == 0
    stored = run(_count(url))
    assert stored == first + second

    out, verdict_path = tmp_path / "model.json", tmp_path / "verdict.json"
    proc = subprocess.run(
        [sys.executable, "-m", "spotfleet_operator", "train", "--from-store", url,
         "--region", "us-east-1", "--out", str(out), "--report", str(verdict_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    artifact = json.loads(out.read_text())
    assert artifact["forest"] and artifact["booster"] and artifact["metrics"]["test_rows"] > 0
    assert artifact["data"][0]["file"] == "store:price_observations:us-east-1"
    verdict = json.loads(verdict_path.read_text())
    v = verdict["verdict"]
    assert isinstance(v["promote"], bool) and v["reasons"]
    assert set(v["checks"]) == {
        "ap_beats_advisor_band",
        "ap_beats_trailing_volatility_72h",
        "ece_within_bound",
    }
    assert v["promote"] == all(v["checks"].values())
    rows = run(_models(url))
    assert [r.artifact_sha256[:12] for r in rows] == [verdict["version"]]
    assert rows[0].promoted == v["promote"]
    assert (verdict["promoted"] == verdict["version"]) == v["promote"]
    # the operator's loader takes the stored artifact
    from spotfleet_operator import riskmodels

    model = riskmodels.from_artifact(rows[0].artifact, scorer="numpy")
    assert model.name


async def _count(url: str) -> int:
    s = Store(url)
    try:
        return await s.count(tables.PriceObservation)
    finally:
        await s.close()


async def _models(url: str) -> list[tables.ModelVersion]:
    s = Store(url)
    try:
        return await s.models()
    finally:
        await s.close()

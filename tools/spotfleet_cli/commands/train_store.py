"""``spotfleet train --from-store URL --region R --out model.json``: train the risk model
on the price history the operator ingested into the store (the engine's
:mod:`spotfleet_engine.risk.from_store`: same features, labels, time-ordered split and
calibration as ``spotfleet train``, with the last weeks held out), write the artifact,
add a ``model_versions`` row with its metrics and the promotion verdict, and promote it
when it passes the gate. A candidate that fails leaves the promoted model as it is; the
report says why."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from spotfleet_operator.store import Store, tables


async def read_points(url: str, region: str) -> list[tuple[str, str, float, float]]:
    s = Store(url)
    try:
        rows = await s.prices(region)
    finally:
        await s.close()
    out = []
    for r in rows:
        at = r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC)
        out.append((r.instance_type, r.zone, at.timestamp() / 3600.0, float(r.price)))
    return out


async def record(
    url: str, region: str, artifact_text: str, artifact: dict[str, Any], verdict: dict[str, Any]
) -> tuple[tables.ModelVersion, tables.ModelVersion | None]:
    """Add the model_versions row and promote it if the verdict says so; returns (the row,
    the model promoted in the region afterwards)."""
    s = Store(url)
    try:
        await s.open()
        now = dt.datetime.now(dt.UTC)
        row = await s.add_model(
            tables.ModelVersion(
                artifact_sha256=hashlib.sha256(artifact_text.encode()).hexdigest(),
                created_at=now,
                region=region,
                name=str(artifact.get("name", "")),
                training_window=dict(artifact.get("training_window", {})),
                metrics=dict(artifact.get("metrics", {})),
                verdict=verdict,
                artifact=artifact_text,
            )
        )
        if verdict["promote"]:
            await s.promote(row.artifact_sha256, now)
        return row, await s.promoted_model(region)
    finally:
        await s.close()


def command(
    url: str,
    region: str,
    out: Path,
    horizon_h: float = 24.0,
    threshold: float = 0.05,
    test_days: float = 7.0,
    val_days: float = 7.0,
    max_ece: float = 0.05,
    seed: int = 0,
    nthread: int = 2,
    rounds: int | None = None,
    report: Path | None = None,
) -> dict[str, Any]:
    from rich.console import Console

    from spotfleet_cli import inputs
    from spotfleet_cli.commands import risk as risk_cli
    from spotfleet_engine import catalog
    from spotfleet_engine.risk import from_store, train

    console = Console(stderr=True)
    points = asyncio.run(read_points(url, region))
    if not points:
        raise SystemExit(f"no price observations for {region} in the store")
    console.print(f"{len(points):,} stored price points in {region}")
    adv_paths = [inputs.bundled_path(risk_cli.BUNDLED_ADVISOR)]
    advisor = inputs.load_advisor_snapshots(adv_paths, region)
    artifact, _val, test = from_store.train_from_rows(
        points,
        catalog.load_bundled(region),
        advisor,
        region,
        horizon_h=horizon_h,
        threshold=threshold,
        test_days=test_days,
        val_days=val_days,
        rounds=rounds or train.DEFAULT_ROUNDS,
        seed=seed,
        nthread=nthread,
        data=[
            {"role": "advisor", "file": p.name, "sha256": risk_cli.sha256_of(p)} for p in adv_paths
        ],
    )
    v = from_store.verdict(test, max_ece)
    verdict = {**v.to_json(), "max_ece": max_ece}
    text = json.dumps(artifact, indent=1, sort_keys=True) + "\n"
    out.write_text(text, encoding="utf-8")
    row, promoted = asyncio.run(record(url, region, text, artifact, verdict))
    result = {
        "artifact": str(out),
        "sha256": row.artifact_sha256,
        "version": row.artifact_sha256[:12],
        "training_window": artifact["training_window"],
        "metrics": {k: v for k, v in artifact["metrics"].items() if k != "validation"},
        "verdict": verdict,
        "promoted": promoted.artifact_sha256[:12] if promoted is not None else None,
    }
    if test:
        risk_cli._print_table(console, "held-out last weeks", test)
    if v.promote:
        console.print(f"[green]promoted[/green] model {result['version']}")
    else:
        kept = result["promoted"] or "the bundled model (none promoted in the store)"
        console.print(f"[yellow]not promoted[/yellow]: the current model stays ({kept})")
    for reason in v.reasons:
        console.print(f"  - {reason}")
    if report is not None:
        report.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return result

"""The README's main job: `spotfleet demo` runs non-interactively from the installed
command, and its JSON summary shows the story happened; nothing is left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_demo_runs_and_tells_the_story(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    spotfleet = Path(sys.executable).parent / "spotfleet"
    proc = subprocess.run(
        [str(spotfleet), "demo", "--duration", "3", "--no-live", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    s = json.loads(out.read_text())
    assert s["ok"] is True
    names = {p["name"]: p for p in s["policies"]}
    assert set(names) == {"web", "cache"}
    for p in names.values():
        assert p["ready"] is True
        assert p["instances"] > 0
        assert float(p["fulfilled"]["total"]) >= float(p["target"])
        assert float(p["savingsPercent"]) > 0
        assert float(p["costPerHour"]) < float(p["onDemandEquivalentPerHour"])
    assert names["web"]["target"] == 96  # the scale-up happened
    # the shortage was routed around: nothing more went into the unavailable pool
    (routed,) = s["routedAround"]
    assert routed["pool"] in s["avoidedPools"]
    assert routed["after"] <= routed["before"]
    assert s["events"].get("InsufficientCapacity", 0) >= 1
    # the interruption warning was attributed to cache and announced (a SpotInterruption Event)
    assert len(s["interrupted"]) == 1 and s["events"].get("SpotInterruption", 0) >= 1
    assert s["actions"]["instancesLaunched"] >= sum(p["instances"] for p in names.values())
    # teardown: every process the demo started is gone
    assert s["leftoverPids"] == []
    assert len(s["pids"]) == 3  # stand-in cloud, etcd, kube-apiserver
    assert not any(_alive(pid) for pid in s["pids"])
    assert "torn down" in proc.stdout

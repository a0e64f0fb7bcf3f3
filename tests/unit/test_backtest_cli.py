"""``spotfleet backtest`` through the installed console script, on a CSV the
test writes and on the bundled data."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

POLICY = """\
apiVersion: spotfleet.dev/v1alpha1
kind: SpotPolicy
metadata:
  name: bt-test
spec:
  region: us-east-1
  availabilityZones: [us-east-1a, us-east-1b]
  capacity:
    target: 16
    unit: vcpu
  instanceRequirements:
    allowedTypes: ["m5.large", "m5.xlarge"]
  strategy:
    objective: balanced
    diversification:
      minPools: 2
      maxPoolSharePercent: 50
  credentials:
    secretRef:
      name: aws-test
  dryRun: true
"""


def _spotfleet() -> list[str]:
    exe = Path(sys.executable).with_name("spotfleet")
    assert exe.exists(), "the console script must be installed (pip install -e .)"
    return [str(exe)]


def _write_prices(path: Path, junk: Sequence[str] = ()) -> None:
    t0 = datetime(2022, 6, 1, tzinfo=UTC)
    base = {"m5.large": 0.035, "m5.xlarge": 0.07}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["timestamp", "availability_zone", "instance_type", "product_description", "spot_price"]
        )
        for h in range(48):
            for j, (t, p) in enumerate(sorted(base.items())):
                for k, z in enumerate(("us-east-1a", "us-east-1b")):
                    price = p * (1.0 + 0.3 * math.sin((h + 7 * j + 13 * k) / 5.0))
                    ts = (t0 + timedelta(hours=h, minutes=7 * k)).isoformat()
                    w.writerow([ts, z, t, "Linux/UNIX", f"{price:.6f}"])
                    # a Windows row that must be ignored
                    w.writerow([ts, z, t, "Windows", f"{10 * price:.6f}"])
        for k, bad in enumerate(junk):  # unusable prices a feed may carry
            ts = (t0 + timedelta(hours=10, minutes=k + 1)).isoformat()
            w.writerow([ts, "us-east-1a", "m5.large", "Linux/UNIX", bad])


def test_backtest_on_a_user_csv(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    _write_prices(prices)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    advisor = tmp_path / "advisor.csv"
    advisor.write_text(
        "snapshot_date,region,os,instance_type,savings_pct_vs_ondemand,interruption_range_index\n"
        "2022-05-01,us-east-1,Linux,m5.large,60,4\n"
        "2022-05-01,us-east-1,Linux,m5.xlarge,65,0\n"
    )
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            *_spotfleet(), "backtest", "--prices", str(prices), "--policy", str(policy),
            "--advisor", str(advisor),
            "--from", "2022-06-01T06:00:00Z", "--to", "2022-06-02T18:00:00Z",
            "--out", str(out), "--risk-model", "advisor", "--hazard-scale", "200",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "backtest.json").read_text())
    assert doc["window"]["simulated_hours"] == 36
    assert doc["pools"]["spot"] == 4
    assert doc["advisor"] == str(advisor)
    names = [r["strategy"] for r in doc["strategies"]]
    assert names == [
        "on-demand", "lowest-price", "capacity-optimized", "price-capacity-optimized",
        "diversified", "spotfleet", "oracle",
    ]  # fmt: skip
    by = {r["strategy"]: r for r in doc["strategies"]}
    assert by["on-demand"]["savings_pct"] == 0.0
    # the Windows rows (10x) were ignored: spot is far below on-demand
    assert by["lowest-price"]["savings_pct"] > 40
    for r in doc["strategies"][:-1]:
        assert by["oracle"]["penalised_cost"] <= r["penalised_cost"] + 1e-6
    png = (out / "backtest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "penalised" in proc.stdout and "spotfleet" in proc.stdout


def test_backtest_on_the_bundled_data(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("availabilityZones: [us-east-1a, us-east-1b]", ""))
    out = tmp_path / "r"
    proc = subprocess.run(
        [
            *_spotfleet(), "backtest", "--policy", str(policy),
            "--from", "2021-04-01", "--to", "2021-04-01T06:00", "--out", str(out),
            "--strategy", "lowest-price", "--strategy", "spotfleet", "--no-progress",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "backtest.json").read_text())
    assert doc["prices"][0].startswith("bundled:")
    assert doc["risk_model"] == "combined(xgboost-price-spike+advisor-band)"
    assert [r["strategy"] for r in doc["strategies"]] == ["lowest-price", "spotfleet", "oracle"]
    assert all(r["cost"] > 0 for r in doc["strategies"])
    assert (out / "backtest.png").stat().st_size > 0


def test_backtest_reports_a_bad_manifest(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(POLICY.replace("target: 16", "target: -3"))
    proc = subprocess.run(
        [*_spotfleet(), "backtest", "--policy", str(policy), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "spec.capacity.target" in proc.stdout
    assert not (tmp_path / "o").exists()


def test_backtest_help_lists_the_options() -> None:
    proc = subprocess.run(
        [*_spotfleet(), "backtest", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for opt in ("--prices", "--policy", "--from", "--to", "--out", "--seed", "--drought-hours"):
        assert opt in proc.stdout


def test_backtest_drops_unusable_price_rows_and_says_so(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    _write_prices(prices, junk=("-1.0", "nan", "0"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            *_spotfleet(), "backtest", "--prices", str(prices), "--policy", str(policy),
            "--from", "2022-06-01T06:00:00Z", "--to", "2022-06-01T18:00:00Z",
            "--out", str(out), "--risk-model", "advisor", "--strategy", "lowest-price",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = " ".join(proc.stdout.split())
    assert "dropped 3 price rows: 1 not finite, 2 zero or negative" in said
    doc = json.loads((out / "backtest.json").read_text())
    assert doc["rejected_price_rows"] == {"not finite": 1, "zero or negative": 2}
    # the bundled advisor's first snapshot (2021-02-10) is in force all through 2022-06-01
    assert [r["snapshot"] for r in doc["advisor_in_force"]] == ["2021-02-10"]
    assert "advisor snapshot 2021-02-10 in force" in said
    by = {r["strategy"]: r for r in doc["strategies"]}
    assert min(by["oracle"]["cost"], by["lowest-price"]["cost"]) > 0

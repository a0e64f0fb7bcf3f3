"""`spotfleet evaluate` on a region other than us-east-1: the file's own region by
default, --region checked against the rows, and onset-row metrics beside the overall."""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spotfleet_cli import app as app_mod
from spotfleet_cli import inputs
from spotfleet_cli.commands import risk as risk_cli

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
POOLS = [("m5.large", "a"), ("m5.large", "b"), ("c5.large", "a"), ("r5.large", "c")]


def write_prices(path: Path, region: str, days: int = 30, seed: int = 0) -> Path:
    """Hourly prices of four pools: a small walk, and a 10 % spike for 12 h at random
    hours (quiet days before most of them: onset rows with positives)."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["timestamp", "availability_zone", "instance_type", "product_description", "spot_price"]
        )
        for itype, z in POOLS:
            price, spike_left = 0.03, 0
            for h in range(days * 24):
                price *= 1 + rng.uniform(-0.004, 0.004)
                if spike_left == 0 and rng.random() < 1 / 96:
                    spike_left = 12
                shown = price * (1.10 if spike_left else 1.0)
                spike_left = max(0, spike_left - 1)
                at = START + dt.timedelta(hours=h)
                w.writerow([at.isoformat(), f"{region}{z}", itype, "Linux/UNIX", f"{shown:.6f}"])
    return path


def test_a_file_of_another_region_is_scored_there_with_onset_rows(tmp_path: Path) -> None:
    prices = write_prices(tmp_path / "eu.csv", "eu-west-1")
    out = risk_cli.evaluate_command(
        None, [prices], None, tmp_path / "r.json", None, 1, preemption=False
    )
    (src,) = out["sources"].values()
    assert src["region"] == "eu-west-1"
    assert src["positives"] > 0 and src["results"]["xgboost"]["rows"] == src["rows"]
    onset = src["onset"]
    assert 0 < onset["rows"] < src["rows"] and onset["positives"] > 0
    assert set(onset["results"]) == set(src["results"])  # the model and every baseline
    assert onset["results"]["xgboost"]["rows"] == onset["rows"]
    assert json.loads((tmp_path / "r.json").read_text())["sources"] == out["sources"]


def test_region_is_checked_against_the_rows(tmp_path: Path) -> None:
    prices = write_prices(tmp_path / "eu.csv", "eu-west-1", days=2)
    assert inputs.source_region([prices], None) == "eu-west-1"
    assert inputs.source_region([prices], "eu-west-1") == "eu-west-1"
    with pytest.raises(inputs.InputError, match=r"in eu-west-1, not in --region us-east-1"):
        inputs.source_region([prices], "us-east-1")
    mixed = tmp_path / "mixed.csv"
    us = write_prices(tmp_path / "us.csv", "us-east-1", days=2).read_text().splitlines()
    mixed.write_text(prices.read_text() + "\n".join(us[1:]) + "\n")
    with pytest.raises(inputs.InputError, match=r"several regions.*--region"):
        inputs.source_region([mixed], None)
    assert inputs.source_region([mixed], "us-east-1") == "us-east-1"


def test_the_cli_names_the_mismatch_and_exits_2(tmp_path: Path) -> None:
    prices = write_prices(tmp_path / "eu.csv", "eu-west-1", days=2)
    res = CliRunner().invoke(
        app_mod.app,
        ["evaluate", "--prices", str(prices), "--region", "ap-south-1", "--no-preemption",
         "--report", str(tmp_path / "r.json")],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "not in --region ap-south-1" in res.output

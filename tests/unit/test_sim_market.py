"""The stand-in cloud's market data: AWS's DescribeSpotPriceHistory window semantics."""

from __future__ import annotations

import gzip
from pathlib import Path

from spotfleet_sim import market


def _history() -> market.PriceHistory:
    rows = [
        market.PriceRow(100.0, "m5.large", "z1", "Linux/UNIX", "0.10"),
        market.PriceRow(200.0, "m5.large", "z1", "Linux/UNIX", "0.20"),
        market.PriceRow(300.0, "m5.large", "z1", "Linux/UNIX", "0.30"),
        market.PriceRow(150.0, "m5.large", "z2", "Linux/UNIX", "0.15"),
        market.PriceRow(250.0, "c5.large", "z1", "Linux/UNIX", "0.25"),
    ]
    return market.PriceHistory("r", rows)


def test_window_includes_the_price_in_effect_at_start() -> None:
    rows = _history().query(210, 300, types=["m5.large"])
    assert [(r.zone, r.at, r.price) for r in rows] == [
        ("z1", 300.0, "0.30"),
        ("z1", 200.0, "0.20"),  # in effect at 210
        ("z2", 150.0, "0.15"),  # in effect at 210
    ]


def test_nothing_before_the_first_point_and_patterns_filter() -> None:
    h = _history()
    assert h.query(10, 50) == []
    assert {r.instance_type for r in h.query(0, 1000, types=["c5.*"])} == {"c5.large"}
    assert {r.zone for r in h.query(0, 1000, zones=["z2"])} == {"z2"}
    assert h.query(0, 1000, products=["Windows"]) == []
    assert h.query(500, 400) == []


def test_price_at_and_bounds() -> None:
    h = _history()
    assert h.price_at("m5.large", "z1", 99) is None
    assert h.price_at("m5.large", "z1", 250) == 0.20
    assert h.price_at("m5.large", "z1", 10_000) == 0.30  # the last price holds
    assert (h.first, h.last) == (100.0, 300.0)


def test_loads_any_csv_in_the_aws_layout(tmp_path: Path) -> None:
    text = (
        "timestamp,region,availability_zone,instance_type,product_description,spot_price\n"
        "2024-01-01T00:00:00+00:00,eu-west-1,eu-west-1a,m5.large,Linux/UNIX,0.041\n"
        "2024-01-01T01:00:00Z,eu-west-1,eu-west-1b,m5.large,Linux/UNIX,0.043\n"
        "2024-01-01T01:00:00Z,us-east-1,us-east-1a,m5.large,Linux/UNIX,0.039\n"
    )
    path = tmp_path / "prices.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    h = market.PriceHistory.load(path)
    assert h.region == "eu-west-1"
    assert [p[1] for p in h.pools()] == ["eu-west-1a", "eu-west-1b"]
    assert h.price_at("m5.large", "eu-west-1b", h.last) == 0.043


def test_bundled_history_and_scores_load() -> None:
    h = market.PriceHistory.load()
    assert h.region == "us-east-1"
    zones = {z for _t, z, _p in h.pools()}
    assert zones <= set(market.zone_ids("us-east-1"))
    scores = market.PlacementScores.load()
    ids = market.zone_ids("us-east-1")
    got = {scores.score("us-east-1", ids[z], "m5.large") for z in zones}
    assert got - {None} <= set(market.BAND_TO_SCORE.values()) and got - {None}
    advisor = market.Advisor.load()
    bands = {t: advisor.band("us-east-1", t) for t, _z, _p in h.pools()}
    calm = next(t for t, b in bands.items() if b == 0)
    wild = next(t for t, b in bands.items() if b == 4)
    # band <5%/month vs >20%/month: the hazard rates keep that order
    assert advisor.hazard_per_second("us-east-1", wild) > advisor.hazard_per_second(
        "us-east-1", calm
    )

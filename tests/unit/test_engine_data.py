"""The bundled-data loaders: catalog, spot price history, advisor, modelled placement scores."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime, timedelta

import pytest

from spotfleet_engine import catalog, market, model
from spotfleet_engine.risk import dataset

NOW = datetime(2021, 4, 15, tzinfo=UTC)


def test_catalog_types_prices_and_zones() -> None:
    cat = catalog.load_bundled("us-east-1")
    assert cat is catalog.load_bundled("us-east-1")  # cached
    assert len(cat.types) > 700
    m5 = cat.types["m5.large"]
    assert (m5.family, m5.vcpus, m5.memory_gib, m5.arch) == ("m5", 2, 8.0, "x86_64")
    assert cat.on_demand_price("m5.large") == pytest.approx(0.096)
    assert cat.zones["m5.large"] == frozenset(
        {"us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f"}
    )
    assert cat.types["t3.micro"].burstable and not m5.burstable
    assert cat.types["m6g.large"].arch == "arm64"
    assert cat.types["m5.metal"].bare_metal
    # moto lacks old GPU types: filled from the vantage columns
    p3 = cat.types["p3.2xlarge"]
    assert (p3.vcpus, p3.gpus, p3.memory_gib) == (8, 1, 61.0)
    assert cat.all_zones() == tuple(f"us-east-1{z}" for z in "abcdef")
    other = catalog.load_bundled("eu-west-1")
    assert other.region == "eu-west-1"
    assert other.on_demand_price("m5.large") != cat.on_demand_price("m5.large")


#: current generation per the bundled on-demand price file (vantage, April 2024); moto
#: 5.2.5's DescribeInstanceTypes data marks all of these previous generation
CURRENT = (
    "m5.large", "c5.xlarge", "r5.large", "m6i.large", "r6i.large", "c4.large",
    "m4.large", "r4.large", "g5.xlarge", "c6gn.large", "r7g.large", "r7gd.large",
    "t3.micro", "m7i.large",
)  # fmt: skip
PREVIOUS = ("m1.small", "t1.micro", "c3.large", "m3.medium", "r3.large", "i2.xlarge")


def test_catalog_generation_flags() -> None:
    """``currentGenerationOnly`` keeps the common current families and drops the old
    ones: the flag comes from the on-demand price file, not moto's instance-type file."""
    cat = catalog.load_bundled("us-east-1")
    for name in CURRENT:
        assert cat.types[name].current_generation, name
    for name in PREVIOUS:
        assert not cat.types[name].current_generation, name
    current_only = model.Requirements(current_generation_only=True)
    assert current_only.matches(cat.types["m5.large"])
    assert not current_only.matches(cat.types["m1.small"])
    # the same flag in every region the file covers
    eu = catalog.load_bundled("eu-west-1")
    assert eu.types["c5.xlarge"].current_generation and not eu.types["m3.medium"].current_generation


def test_catalog_unknown_region_raises() -> None:
    with pytest.raises(ValueError, match="no bundled on-demand prices"):
        catalog.load_bundled("xx-nowhere-1")


def test_catalog_restricted_to() -> None:
    cat = catalog.load_bundled().restricted_to({"m5.large", "c5.xlarge", "nope.large"})
    assert set(cat.types) == set(cat.on_demand_usd_per_hour) == {"m5.large", "c5.xlarge"}
    assert set(cat.zones) == {"m5.large", "c5.xlarge"}


def test_price_history_matches_the_csv() -> None:
    hist = market.load_bundled_history()
    assert hist is market.load_bundled_history()
    assert len(hist.series) == 1246
    assert hist.start == datetime(2021, 3, 2, 1, 39, 4, tzinfo=UTC)
    assert hist.end == datetime(2021, 5, 31, 1, 45, 58, tzinfo=UTC)
    s = hist.series[("a1.2xlarge", "us-east-1a")]
    assert (s.times[1:] > s.times[:-1]).all()
    # first two rows of the bundled file
    assert (
        hist.price_at("a1.2xlarge", "us-east-1a", datetime(2021, 3, 2, 14, 45, 1, tzinfo=UTC))
        == 0.0671
    )
    t1 = datetime.fromtimestamp(int(s.times[1]), UTC)
    assert hist.price_at("a1.2xlarge", "us-east-1a", t1) == float(s.prices[1])
    before = t1 - timedelta(seconds=1)
    assert hist.price_at("a1.2xlarge", "us-east-1a", before) == float(s.prices[0])
    assert hist.price_at("a1.2xlarge", "us-east-1a", datetime(2020, 1, 1, tzinfo=UTC)) is None
    assert hist.price_at("nope.large", "us-east-1a", NOW) is None


def test_price_history_total_rows() -> None:
    from importlib import resources

    ref = resources.files("spotfleet_engine").joinpath("data", market.SPOT_PRICES_2021_FILE)
    with ref.open("rb") as raw, gzip.open(raw, "rt") as text:
        rows = sum(1 for _ in text) - 1
    hist = market.load_bundled_history()
    points = sum(len(s.times) for s in hist.series.values())
    assert points <= rows  # duplicates of (pool, timestamp) collapse
    assert points > 0.95 * rows


def test_snapshot_never_sees_the_future() -> None:
    hist = market.load_bundled_history()
    snap = market.snapshot_at(hist, NOW, lookback=timedelta(days=2))
    assert snap.observed_at == NOW
    assert 0 < len(snap.spot_history) <= 1246
    for key, points in snap.spot_history.items():
        assert points, key
        assert all(p.at <= NOW for p in points)
        assert [p.at for p in points] == sorted(p.at for p in points)
        # the first point is the one in force at the window start (or later)
        assert len(points) == 1 or points[1].at > NOW - timedelta(days=2)
        assert points[-1].price == hist.price_at(key[0], key[1], NOW)
    assert snap.spot_price("m5.large", "us-east-1a") == hist.price_at("m5.large", "us-east-1a", NOW)
    early = market.snapshot_at(hist, hist.start)
    assert len(early.spot_history) < len(snap.spot_history)


def test_advisor_snapshot_in_force() -> None:
    adv = market.load_bundled_advisor("us-east-1")
    assert [d for d, _ in adv.snapshots] == [
        date(2021, 2, 10),
        date(2024, 2, 28),
        date(2025, 6, 28),
    ]
    # before the first snapshot none is in force: never one dated after the moment
    assert adv.at(datetime(2019, 1, 1, tzinfo=UTC)) == {}
    assert adv.date_at(datetime(2019, 1, 1, tzinfo=UTC)) is None
    assert adv.at(datetime(2021, 2, 9, 23, 59, tzinfo=UTC)) == {}
    assert adv.at(datetime(2021, 2, 10, tzinfo=UTC)) is adv.snapshots[0][1]  # from its 00:00
    assert adv.date_at(NOW) == date(2021, 2, 10)
    assert adv.at(NOW) is adv.snapshots[0][1]
    assert adv.at(datetime(2024, 2, 28, tzinfo=UTC)) is adv.snapshots[1][1]
    assert adv.at(datetime(2030, 1, 1, tzinfo=UTC)) is adv.snapshots[2][1]
    e = adv.at(NOW)["m5.large"]
    assert 0 <= e.band <= 4 and 0 < e.savings_pct < 100
    snap = market.snapshot_at(market.load_bundled_history(), NOW)
    assert snap.advisor == adv.at(NOW)


def test_one_advisor_rule_for_replays_and_training() -> None:
    """The backtest and the operator (``AdvisorHistory.at``) and training/evaluation
    (``risk.dataset.advisor_in_force``) take the same snapshot at every moment."""
    adv = market.load_bundled_advisor("us-east-1")
    hours = {market.epoch_hours(d): {t: (e.band, e.savings_pct) for t, e in s.items()}
             for d, s in adv.snapshots}  # fmt: skip
    moments = [datetime(2015, 6, 1, tzinfo=UTC), datetime(2021, 2, 9, 23, tzinfo=UTC)]
    for d, _ in adv.snapshots:
        at = datetime(d.year, d.month, d.day, tzinfo=UTC)
        moments += [at - timedelta(seconds=1), at, at + timedelta(hours=13)]
    for now in moments:
        replay_view = {t: (e.band, e.savings_pct) for t, e in adv.at(now).items()}
        training_view = dataset.advisor_in_force(hours, market.epoch_hours(now))
        assert replay_view == dict(training_view), now
        d = adv.date_at(now)
        assert d is None or datetime(d.year, d.month, d.day, tzinfo=UTC) <= now


def test_placement_scores_need_a_zone_id_mapping() -> None:
    scores = market.load_bundled_placement_scores("us-east-1")
    assert scores and all(az.startswith("use1-az") for _, az in scores)
    assert set(scores.values()) <= set(market.BAND_TO_PLACEMENT_SCORE.values())
    # the model: a type's score follows its newest advisor band, the same in every zone
    adv = market.load_bundled_advisor("us-east-1")
    newest = adv.snapshots[-1][1]
    for (t, _az), v in scores.items():
        assert v == market.BAND_TO_PLACEMENT_SCORE[newest[t].band]
    calm = {t for t, e in newest.items() if e.band == 0}
    wild = {t for t, e in newest.items() if e.band == 4}
    assert {scores[k] for k in scores if k[0] in calm} == {9}
    assert {scores[k] for k in scores if k[0] in wild} == {2}
    hist = market.load_bundled_history()
    assert market.snapshot_at(hist, NOW).placement_scores == {}
    mapping = {"us-east-1a": "use1-az4"}
    snap = market.snapshot_at(hist, NOW, zone_ids=mapping)
    assert snap.placement_scores
    assert all(z == "us-east-1a" for _, z in snap.placement_scores)
    for (t, _), v in snap.placement_scores.items():
        assert scores[(t, "use1-az4")] == v


def test_market_unavailable_passes_through() -> None:
    pool = model.Pool("m5.large", "us-east-1a", model.Market.SPOT)
    snap = market.snapshot_at(market.load_bundled_history(), NOW, unavailable=frozenset({pool}))
    assert pool in snap.unavailable

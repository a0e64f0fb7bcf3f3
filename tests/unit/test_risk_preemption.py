"""Preemption-trace labels, features and evaluation (SkyPilot and Bamboo, bundled copies)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from spotfleet_cli import inputs
from spotfleet_cli.commands import risk as risk_cli
from spotfleet_engine.risk import features, labels, preemption, xgb


def _tiny() -> preemption.Trace:
    # held: 2 from 0 h, 1 from 2.5 h (a preemption), 3 from 4 h, 0 from 7 h (a preemption),
    # 1 from 8 h; observed until 10 h
    return preemption.step_trace(
        "test", "tiny", "p3.2xlarge", "us-east-1", "us-east-1a", "",
        [0.0, 2.5, 4.0, 7.0, 8.0], [2, 1, 3, 0, 1], 10.0,
    )  # fmt: skip


def test_drops_are_the_decreases_of_the_held_count() -> None:
    tr = _tiny()
    np.testing.assert_array_equal(tr.drops(), [2.5, 7.0])
    np.testing.assert_array_equal(
        tr.held_at(np.array([0.0, 2.4, 2.5, 6.9, 7.0, 9.9])), [2, 2, 1, 3, 0, 1]
    )


def test_labels_on_a_hand_made_trace() -> None:
    tr = _tiny()
    # hourly grid, 2 h horizon, no split (fraction 1: everything is the earlier part)
    t, y, later = preemption.trace_rows(tr, horizon_h=2.0, step_h=1.0, train_fraction=1.0)
    # t = 0..8 with t + 2 <= 10; t = 7 is dropped (nothing held at 7 h)
    np.testing.assert_array_equal(t, [0, 1, 2, 3, 4, 5, 6, 8])
    # preemptions at 2.5 h and 7 h; window (t, t + 2]
    np.testing.assert_array_equal(y, [0, 1, 1, 0, 0, 1, 1, 0])
    assert not later.any()


def test_label_window_is_open_at_t_and_closed_at_t_plus_horizon() -> None:
    drops = np.array([3.0])
    y = labels.drop_labels(drops, np.array([1.0, 2.0, 3.0]), 1.0)
    np.testing.assert_array_equal(y, [0.0, 1.0, 0.0])  # (2, 3] holds 3; (3, 4] does not


def test_split_rows_never_straddle_the_boundary() -> None:
    tr = _tiny()
    t, _y, later = preemption.trace_rows(tr, horizon_h=2.0, step_h=1.0, train_fraction=0.5)
    assert (t[~later] + 2.0 <= 5.0).all() and (t[later] >= 5.0).all()
    np.testing.assert_array_equal(t, [0, 1, 2, 3, 5, 6, 8])  # t = 4 would straddle 5 h


def test_trailing_features_on_a_hand_made_trace() -> None:
    tr = _tiny()
    x = preemption.trailing_features(tr, np.array([2.0, 3.0, 8.0]))
    cols = {n: x[:, i] for i, n in enumerate(preemption.TRACE_FEATURES[2:])}
    np.testing.assert_array_equal(cols["preemptions_1h"], [0, 1, 0])
    np.testing.assert_array_equal(cols["preemptions_24h"], [0, 1, 2])
    # none yet at 2 h: censored at the hours observed
    np.testing.assert_allclose(cols["hours_since_preemption"], [2.0, 0.5, 1.0])
    # nothing held during 7..8 h of the 8 h observed at t = 8
    np.testing.assert_allclose(cols["down_frac_24h"], [0.0, 0.0, 1.0 / 8.0])
    np.testing.assert_array_equal(cols["hours_observed"], [2.0, 3.0, 8.0])


def test_features_at_t_ignore_everything_after_t() -> None:
    rng = np.random.default_rng(7)
    times = np.cumsum(rng.exponential(0.7, 200))
    counts = rng.integers(0, 5, 200).astype(float)
    base = preemption.step_trace("test", "a", "x", "r", "", "", times, counts, times[-1])
    cut = float(times[100]) + 0.3
    t = np.arange(0.0, cut + 1e-9, 0.25)
    ref = preemption.trailing_features(base, t)
    for seed in range(5):
        r = np.random.default_rng(seed)
        after = times > cut
        times2 = times.copy()
        times2[after] = cut + np.cumsum(r.exponential(0.3, int(after.sum())))
        counts2 = counts.copy()
        counts2[after] = r.integers(0, 9, int(after.sum()))
        other = preemption.step_trace("test", "b", "x", "r", "", "", times2, counts2, times2[-1])
        assert not np.array_equal(other.drops(), base.drops())  # the future did change
        np.testing.assert_array_equal(preemption.trailing_features(other, t), ref)


def test_skypilot_trace_reads_value_1_as_preempted() -> None:
    row = {
        "trace_id": "preemption/1-node/aws-04-19-2023/us-east-1b_intel_64",
        "gap_seconds": "60",
        "zone": "us-east-1b",
        "accelerator_tag": "intel_64",
        "start_date_mm-dd-yyyy": "04-19-2023",
    }
    value = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=float)
    tr = preemption.skypilot_trace(row, np.arange(10) * 60.0, value)
    assert (tr.instance_type, tr.region, tr.start_date) == (
        "r5.16xlarge",
        "us-east-1",
        "2023-04-19",
    )
    np.testing.assert_allclose(tr.drops() * 60.0, [2.0, 7.0])  # minutes of the 0 -> 1 flips
    assert tr.end_h == pytest.approx(10 / 60.0)


def test_bamboo_builders_parse_counts_and_cluster_events() -> None:
    name = "aws-spot-instances-p2-xlarge-us-east-1e-2020-11-23-1700-to-2020-11-24-0700"
    rows = [
        {"trace": name, "time_unit": "seconds", "time_offset": o, "running_instance_count": c}
        for o, c in [("0", "10"), ("3600", "10"), ("3600", "9"), ("7200", "9"), ("7200", "10")]
    ]
    (tr,) = preemption.bamboo_count_traces(rows)
    assert (tr.instance_type, tr.zone, tr.region) == ("p2.xlarge", "us-east-1e", "us-east-1")
    np.testing.assert_allclose(tr.drops(), [1.0])
    assert tr.end_h == pytest.approx(14.0)  # the window in the name, 17:00 -> 07:00
    events = [
        {"trace": "p3", "offset_ms": "0", "event": "add"},
        {"trace": "p3", "offset_ms": "0", "event": "add"},
        {"trace": "p3", "offset_ms": "1800000", "event": "remove"},
        {"trace": "p3", "offset_ms": "3600000", "event": "add"},
        {"trace": "p3", "offset_ms": "5400000", "event": "remove"},
    ]
    (cl,) = preemption.bamboo_cluster_traces(events)
    assert cl.instance_type == "p3.2xlarge"
    np.testing.assert_allclose(cl.drops(), [0.5, 1.5])
    np.testing.assert_allclose(cl.held_at(np.array([0.0, 0.6, 1.2])), [2, 1, 2])


def _bundled_sky() -> list[preemption.Trace]:
    return [
        preemption.skypilot_trace(row, tick, value)
        for row, tick, value in risk_cli.load_skypilot_traces(
            inputs.bundled_path(risk_cli.BUNDLED_SKYPILOT_INDEX),
            inputs.bundled_path(risk_cli.BUNDLED_SKYPILOT_SEGMENTS),
        )
    ]


def test_trace_labels_agree_with_the_tick_labels_on_real_skypilot_traces() -> None:
    traces = risk_cli.load_skypilot_traces(
        inputs.bundled_path(risk_cli.BUNDLED_SKYPILOT_INDEX),
        inputs.bundled_path(risk_cli.BUNDLED_SKYPILOT_SEGMENTS),
    )
    assert len(traces) == 24  # the single-node AWS traces
    for row, tick, value in traces[::5]:
        tr = preemption.skypilot_trace(row, tick, value)
        # 5.99 h: no multiple of any trace's tick, so no preemption sits on the boundary
        rows, y_tick = labels.preemption_labels(tick, value, 5.99 * 3600.0)
        y_trace = labels.drop_labels(tr.drops(), tick[rows] / 3600.0, 5.99)
        np.testing.assert_array_equal(y_trace, y_tick[rows])
        assert y_trace.sum() > 0


def test_static_model_rows_hold_only_static_features() -> None:
    from spotfleet_engine import catalog

    sky = _bundled_sky()[:3]
    adv = {"us-east-1": {"p3.2xlarge": (4, 70.0)}}
    x = preemption.static_model_rows(sky, {"us-east-1": catalog.load_bundled("us-east-1")}, adv)
    names = features.FEATURE_NAMES
    static = [names.index(n) for n in features.STATIC_NAMES if n != "log_spot_over_ondemand"]
    others = [j for j in range(len(names)) if j not in static]
    assert np.isnan(x[:, others]).all()
    assert (x[:, names.index("advisor_band")] == 4).all()
    assert np.isfinite(x[:, names.index("gpus")]).all() and (x[:, names.index("gpus")] == 1).all()


def test_evaluation_on_the_bundled_traces() -> None:
    model = xgb.load_bundled(nthread=1)
    adv = [inputs.bundled_path(risk_cli.BUNDLED_ADVISOR)]
    printed = io.StringIO()
    report = risk_cli.evaluate_preemption_traces(
        model, adv, Console(file=printed, width=160), horizon_h=24.0
    )
    assert (
        "Bamboo preemption within 1 h" in printed.getvalue()
        and "h since last" in printed.getvalue()
    )
    assert set(report["sources"]) == {"skypilot_24h", "skypilot_1h", "bamboo_1h"}
    expected = {
        "xgboost_static_only",
        "advisor_band",
        "trailing_preemptions_24h",
        "hours_since_last_preemption",
        "logistic_regression",
    }
    for src in report["sources"].values():
        assert src["positives"] > 0 and src["train_positives"] > 0
        assert src["positives"] < src["rows"]
        assert sum(p["rows"] for p in src["per_trace"]) == src["rows"]
        assert set(src["results"]) == expected
        for m in src["results"].values():
            assert m["rows"] == src["rows"] and m["positives"] == src["positives"]
            for k in ("auc", "average_precision", "brier", "base_rate"):
                assert math.isfinite(m[k])
    assert report["sources"]["skypilot_24h"]["traces"] == 24
    assert report["sources"]["bamboo_1h"]["traces"] == 8
    # the trace's own past ranks preemptions; the advisor band cannot (one band per type)
    sky = report["sources"]["skypilot_24h"]["results"]
    assert sky["hours_since_last_preemption"]["auc"] > sky["advisor_band"]["auc"] + 0.2


def test_evaluate_command_adds_the_traces_unless_told_not_to(tmp_path: Path) -> None:
    prices = [inputs.bundled_path(risk_cli.BUNDLED_PRICES_2023)]  # small: a fast run
    with_traces = risk_cli.evaluate_command(None, prices, None, tmp_path / "a.json", None, 1)
    doc = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert doc["preemption_traces"] == with_traces["preemption_traces"]
    assert doc["preemption_traces"]["sources"]["skypilot_24h"]["positives"] > 0
    without = risk_cli.evaluate_command(
        None, prices, None, tmp_path / "b.json", None, 1, preemption=False
    )
    assert "preemption_traces" not in without
    assert "preemption_traces" not in json.loads((tmp_path / "b.json").read_text("utf-8"))

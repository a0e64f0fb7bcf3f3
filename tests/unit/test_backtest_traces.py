"""Pools with a bundled real availability trace take their reclaims and
droughts from it (SkyPilot p3 traces), not from the simulated hazard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spotfleet_engine import catalog, market, model
from spotfleet_engine.backtest import interruptions, prices, traces


def test_bundled_traces_are_the_exact_aws_availability_ones() -> None:
    got = traces.load_bundled_traces()
    keys = {(t.instance_type, t.zone) for t in got}
    assert ("p3.2xlarge", "us-east-1a") in keys and ("p3.16xlarge", "us-west-2a") in keys
    assert all(" " not in t.instance_type for t in got)  # inexact K80 mappings left out
    for t in got:
        assert t.outages and all(0 <= a < b <= t.duration_s for a, b in t.outages)


def test_trace_pools_use_the_trace_others_the_hazard() -> None:
    hist = market.load_bundled_history()
    cat = catalog.load_bundled("us-east-1")
    adv = market.load_bundled_advisor("us-east-1")
    pol = model.Policy(
        region="us-east-1",
        target=16,
        requirements=model.Requirements(allowed_types=frozenset({"p3.2xlarge", "g4dn.xlarge"})),
    )
    start = datetime(2021, 3, 10, tzinfo=UTC)
    grid = prices.decision_grid(start, start + timedelta(days=10), timedelta(hours=1))
    u = prices.build_universe(pol, cat, hist, grid)
    tr = {(t.instance_type, t.zone): t for t in traces.load_bundled_traces()}
    traced = [i for i, p in enumerate(u.spot) if (p.instance_type, p.zone) in tr]
    assert traced, "the bundled 2021 history has p3.2xlarge pools with traces"
    cfg = interruptions.InterruptionConfig(hazard_scale=100.0)
    ev = interruptions.simulate(u, lambda k: adv.at(u.time(k)), cfg, traces.load_bundled_traces())
    by_source: dict[int, set[str]] = {}
    for r in ev.reclaims:
        by_source.setdefault(r.pool, set()).add(r.source)
    for i in traced:
        assert by_source.get(i) == {"trace"}
        t = tr[(u.spot[i].instance_type, u.spot[i].zone)]
        first = [a for a, _ in t.outages if a < u.grid[-1] - u.grid[0]]
        assert [r.at - int(u.grid[0]) for r in ev.reclaims if r.pool == i] == first
        # out of capacity at every decision strictly inside an outage
        for a, b in t.outages:
            for k in range(u.decisions):
                off = int(u.grid[k]) - int(u.grid[0])
                if a < off < b:
                    assert u.spot[i] in ev.unavailable[k]
    others = [i for i in range(len(u.spot)) if i not in traced]
    assert any("hazard" in by_source.get(i, set()) for i in others)
    # without traces the same pools fall back to the hazard
    ev2 = interruptions.simulate(
        u,
        lambda k: adv.at(u.time(k)),
        interruptions.InterruptionConfig(hazard_scale=100.0, use_traces=False),
        traces.load_bundled_traces(),
    )
    assert all(r.source != "trace" for r in ev2.reclaims)

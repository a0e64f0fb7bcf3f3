"""``spotfleet train`` and ``spotfleet evaluate``: train the risk model and score it
against its baselines on price history and preemption traces.

The commands in :mod:`spotfleet_cli.app` are thin shells over :func:`train_command`
and :func:`evaluate_command`; every file is read through :mod:`spotfleet_cli.inputs`
(the engine's ``risk`` package is pure).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spotfleet_cli import consoles, inputs
from spotfleet_cli.inputs import bundled_path, hours_of, load_prices
from spotfleet_engine.risk import dataset

BUNDLED_PRICES = "spot_prices_us-east-1_2021-03-02_to_2021-05-31_linux.csv.gz"
BUNDLED_PRICES_2023 = "spot_price_history_us-east-1_c5a.2xlarge_2023-11-11_to_2023-12-30.csv.gz"
BUNDLED_PRICES_2015 = "spot_price_history_us-east-1_2015-03-11_to_2015-08-31_15series.csv.gz"
BUNDLED_ADVISOR = "spot_advisor_linux_3snapshots.csv.gz"
BUNDLED_SKYPILOT_INDEX = "skypilot_spot_traces_index.csv.gz"
BUNDLED_SKYPILOT_SEGMENTS = "skypilot_spot_traces_segments.csv.gz"


def load_skypilot_traces(
    index_path: Path, segments_path: Path
) -> list[
    tuple[
        dict[str, str], np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]
    ]
]:
    """Single-node AWS SkyPilot traces: (index row, tick times in s, value per tick)."""
    index = {r["trace_id"]: r for r in inputs.csv_rows(index_path)}
    segs: dict[str, list[tuple[int, int, float]]] = {}
    for r in inputs.csv_rows(segments_path):
        segs.setdefault(r["trace_id"], []).append(
            (int(r["start_tick"]), int(r["end_tick_exclusive"]), float(r["value"]))
        )
    out = []
    for tid, row in sorted(index.items()):
        if row["cloud"] != "aws" or row["nodes"] != "1-node":
            continue
        gap = float(row["gap_seconds"])
        n = int(row["n_ticks"])
        value = np.zeros(n)
        for a, b, v in segs.get(tid, []):
            value[a:b] = v
        out.append((row, np.arange(n, dtype=np.float64) * gap, value))
    return out


# --------------------------------------------------------------------------
# train / evaluate
# --------------------------------------------------------------------------

#: The issue's split of the 2021 us-east-1 history (UTC dates).
TRAIN_END = "2021-05-01"
VAL_END = "2021-05-10"
#: Hours of history before the first training row (the longest trailing window).
WARMUP_H = 168.0


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _data_entries(paths: Sequence[Path], role: str) -> list[dict[str, str]]:
    return [{"role": role, "file": p.name, "sha256": sha256_of(p)} for p in paths]


def _advisor_paths(advisor: Sequence[Path] | None) -> list[Path]:
    return list(advisor) if advisor else [bundled_path(BUNDLED_ADVISOR)]


def build_source_rows(
    prices: Sequence[Path],
    advisor_paths: Sequence[Path],
    horizon_h: float,
    threshold: float,
    region: str = "us-east-1",
) -> tuple[dataset.Rows, float, float]:
    """Feature rows with labels for one price source (every whole hour after the warm-up)."""
    from spotfleet_engine import catalog

    ev, first, last = load_prices(prices, region)
    adv = inputs.load_advisor_snapshots(advisor_paths, region)
    cat = catalog.load_bundled(region)
    rows = dataset.build_rows(
        ev, cat, adv, first + WARMUP_H, last, last, horizon_h=horizon_h, threshold=threshold
    )
    return rows, first, last


def _console() -> Any:
    return consoles.console(stderr=True)


def train_command(
    prices: Sequence[Path] | None,
    advisor: Sequence[Path] | None,
    out: Path,
    horizon_h: float = 24.0,
    threshold: float = 0.05,
    seed: int = 0,
    nthread: int = 2,
    rounds: int | None = None,
    train_end: str = TRAIN_END,
    val_end: str = VAL_END,
) -> dict[str, Any]:
    """``spotfleet train``: build rows, train, calibrate, measure, write the artifact."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from spotfleet_engine.risk import train

    console = _console()
    price_paths = list(prices) if prices else [bundled_path(BUNDLED_PRICES)]
    adv_paths = _advisor_paths(advisor)
    console.print(f"reading {', '.join(p.name for p in price_paths)}")
    rows, _first, _last = build_source_rows(price_paths, adv_paths, horizon_h, threshold)
    console.print(
        f"{rows.y.size:,} pool-hours, {int(rows.y.sum()):,} positives "
        f"({100 * rows.y.mean():.2f} %) for a >= {100 * threshold:g} % rise within {horizon_h:g} h"
    )
    split = train.Split(
        train_end=hours_of(train_end),
        val_start=hours_of(train_end),
        val_end=hours_of(val_end),
        test_start=hours_of(val_end),
        horizon_h=horizon_h,
    )
    n_rounds = rounds or train.DEFAULT_ROUNDS
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("boosting rounds", total=n_rounds)
        artifact, _val, test = train.train_model(
            rows,
            split,
            {"kind": "price_spike", "horizon_hours": horizon_h, "threshold": threshold},
            _data_entries(price_paths, "prices") + _data_entries(adv_paths, "advisor"),
            rounds=n_rounds,
            seed=seed,
            nthread=nthread,
            on_round=lambda i: progress.update(task, completed=i),
            on_stage=lambda s: progress.console.print(s),
        )
    out.write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    m = artifact["metrics"]
    console.print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {artifact['n_trees']} trees); test "
        f"AP {m.get('average_precision', float('nan')):.4f} AUC {m.get('auc', float('nan')):.4f} "
        f"ECE {m.get('ece', float('nan')):.4f}"
    )
    if test:
        _print_table(console, "test weeks", test)
    return artifact


def _print_table(console: Any, title: str, results: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("model", "AUC", "AP", "Brier", "ECE", "rows", "base rate"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in results.items():
        table.add_row(
            name,
            f"{m['auc']:.4f}",
            f"{m['average_precision']:.4f}",
            f"{m['brier']:.5f}",
            f"{m['ece']:.4f}",
            f"{m['rows']:,}",
            f"{100 * m['base_rate']:.2f} %",
        )
    console.print(table)
    if "xgboost" in results:
        cal = Table(title=f"{title}: calibration (xgboost)")
        for col in ("bin", "rows", "mean predicted", "observed"):
            cal.add_column(col, justify="right")
        for r in results["xgboost"]["calibration"]:
            cal.add_row(
                f"[{r['lo']:.3f}, {r['hi']:.3f})",
                f"{int(r['n']):,}",
                f"{r['mean_predicted']:.4f}",
                f"{r['observed_rate']:.4f}",
            )
        console.print(cal)


def _source_name(paths: Sequence[Path]) -> str:
    return "+".join(p.name.split(".csv")[0] for p in paths)


def evaluate_command(
    model_path: Path | None,
    prices: Sequence[Path] | None,
    advisor: Sequence[Path] | None,
    report: Path,
    png: Path | None,
    nthread: int = 2,
    preemption: bool = True,
    preemption_horizon_h: float = 24.0,
    region: str | None = None,
) -> dict[str, Any]:
    """``spotfleet evaluate``: model vs baselines on each price source, JSON report + PNG.

    Each source is scored in ``region`` (default: the source's own region, from its
    ``region`` column or its zones), with that region's catalog and advisor; overall
    and on its onset rows (:func:`spotfleet_engine.risk.dataset.onset_mask`: no rise
    of the label's threshold in the past 72 h), where a rise starts unannounced.

    A source that covers the artifact's test window is scored on the test
    window only; any other source (another period) is scored on all its rows.
    With no ``prices``: the bundled 2021 history (test weeks), the 2023
    c5a.2xlarge series and the 2015 auction-era series, side by side.
    """
    from rich.progress import Progress

    from spotfleet_engine.risk import train, xgb

    console = _console()
    if model_path is None:
        model = xgb.load_bundled(nthread=nthread)
        model_name = "bundled"
    else:
        model = xgb.load(model_path.read_text(encoding="utf-8"), nthread=nthread)
        model_name = str(model_path)
    art = model.artifact
    baselines = train.Baselines.from_json(art["baselines"])
    split = art["training_window"]
    horizon = float(art["label"]["horizon_hours"])
    threshold = float(art["label"]["threshold"])
    sources = (
        [[p] for p in prices]
        if prices
        else [
            [bundled_path(BUNDLED_PRICES)],
            [bundled_path(BUNDLED_PRICES_2023)],
            [bundled_path(BUNDLED_PRICES_2015)],
        ]
    )
    adv_paths = _advisor_paths(advisor)
    out: dict[str, Any] = {
        "model": model_name,
        "model_name": art["name"],
        "label": art["label"],
        "artifact_metrics": art["metrics"],
        "sources": {},
    }
    curves: dict[str, dict[str, tuple[Any, Any]]] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("evaluating sources", total=len(sources))
        for paths in sources:
            name = _source_name(paths)
            progress.update(task, description=f"evaluating {name[:40]}")
            where = inputs.source_region(paths, region)
            rows, first, last = build_source_rows(
                paths, adv_paths, horizon, threshold, region=where
            )
            window = "all rows"
            if first <= split["test_start"] <= last:
                rows = rows.select(rows.t >= split["test_start"])
                window = "test weeks (t >= test_start)"
            res = train.evaluate(model, baselines, rows) if rows.y.sum() else {}
            onset = rows.select(dataset.onset_mask(rows, threshold))
            out["sources"][name] = {
                "region": where,
                "window": window,
                "rows": int(rows.y.size),
                "positives": int(rows.y.sum()),
                "results": res,
                "onset": {
                    "rows": int(onset.y.size),
                    "positives": int(onset.y.sum()),
                    "results": train.evaluate(model, baselines, onset) if onset.y.sum() else {},
                },
            }
            if res:
                curves[name] = {
                    "xgboost": (rows.y, model.predict_features(rows.x)),
                    **{k: (rows.y, v) for k, v in baselines.predict(rows.x).items()},
                }
            progress.advance(task)
    for name, src in out["sources"].items():
        if src["results"]:
            _print_table(console, f"{name} ({src['region']}) — {src['window']}", src["results"])
        else:
            console.print(f"{name}: no positive rows, nothing to score")
        if src["onset"]["results"]:
            _print_table(
                console,
                f"{name} ({src['region']}) — onset rows (no {100 * threshold:g} % rise in the "
                "past 72 h)",
                src["onset"]["results"],
            )
        else:
            console.print(f"{name}: no positive onset rows, nothing to score there")
    if preemption:  # the SkyPilot/Bamboo traces (``--no-preemption`` skips them)
        out["preemption_traces"] = evaluate_preemption_traces(
            model, adv_paths, console, preemption_horizon_h
        )
    report.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    console.print(f"wrote {report}")
    if png is not None and curves:
        plot_curves(curves, png)
        console.print(f"wrote {png}")
    return out


def evaluate_preemption_traces(
    model: Any,
    advisor_paths: Sequence[Path],
    console: Any,
    horizon_h: float = 24.0,
    bamboo_horizon_h: float = 1.0,
) -> dict[str, Any]:
    """The bundled SkyPilot and Bamboo preemption traces: the spike model (static
    features only), the advisor band, the trailing-preemption signals and a logistic
    regression, each trace split by time (earlier half fits, later half scores); see
    :mod:`spotfleet_engine.risk.preemption` and docs/risk.md "Preemption traces".

    SkyPilot rows every hour at ``horizon_h`` and at 1 h; Bamboo rows every 10 min
    at ``bamboo_horizon_h`` (its traces last 11-89 h). Prints a table per source and
    horizon; returns the report section (``{"skipped": reason}`` when the bundled
    traces are absent)."""
    from rich.table import Table

    from spotfleet_engine import catalog
    from spotfleet_engine.risk import preemption

    names = {
        "sky_index": BUNDLED_SKYPILOT_INDEX,
        "sky_segments": BUNDLED_SKYPILOT_SEGMENTS,
        "bamboo_counts": "bamboo_spot_instance_count_steps_2020-11.csv.gz",
        "bamboo_events": "bamboo_spot_cluster_events_p3_g4dn.csv.gz",
    }
    paths = {k: bundled_path(v) for k, v in names.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        console.print(f"preemption traces: {', '.join(missing)} not bundled, skipped")
        return {"skipped": f"missing {', '.join(missing)}"}
    sky = [
        preemption.skypilot_trace(row, tick, value)
        for row, tick, value in load_skypilot_traces(paths["sky_index"], paths["sky_segments"])
    ]
    bamboo = preemption.bamboo_count_traces(inputs.csv_rows(paths["bamboo_counts"]))
    bamboo += preemption.bamboo_cluster_traces(inputs.csv_rows(paths["bamboo_events"]))
    regions = sorted({tr.region for tr in sky + bamboo})
    snapshots = {r: inputs.load_advisor_snapshots(advisor_paths, r) for r in regions}
    catalogs = {r: catalog.load_bundled(r) for r in regions}

    def advisor_for(traces: Sequence[preemption.Trace]) -> dict[str, Any]:
        # the snapshot in force at the traces' earliest start date; none (Bamboo's
        # 2020 and undated traces): the earliest snapshot
        starts = [hours_of(tr.start_date) for tr in traces if tr.start_date]
        t0 = min(starts) if starts else -np.inf
        out: dict[str, Any] = {}
        for r, snaps in snapshots.items():
            snap = dataset.advisor_in_force(snaps, t0)
            out[r] = snap or (snaps[min(snaps)] if snaps else {})
        return out

    settings = [
        ("SkyPilot", sky, horizon_h, 1.0),
        ("SkyPilot", sky, 1.0, 1.0),
        ("Bamboo", bamboo, bamboo_horizon_h, 1.0 / 6.0),
    ]
    report: dict[str, Any] = {"train_fraction": 0.5, "sources": {}}
    short = {
        "xgboost_static_only": "xgboost (static only)",
        "advisor_band": "advisor band",
        "trailing_preemptions_24h": "preemptions 24 h",
        "hours_since_last_preemption": "h since last",
        "logistic_regression": "logistic",
    }
    seen: set[tuple[str, float]] = set()
    for source, traces, horizon, step in settings:
        if (source, horizon) in seen:
            continue
        seen.add((source, horizon))
        adv = advisor_for(traces)
        rows = preemption.build_rows(traces, adv, horizon, step, train_fraction=0.5)
        static = preemption.static_model_rows(traces, catalogs, adv)
        res = preemption.evaluate_source(traces, rows, model, static, horizon)
        res.update(horizon_hours=horizon, step_hours=step)
        report["sources"][f"{source.lower()}_{horizon:g}h"] = res
        title = (
            f"{source} preemption within {horizon:g} h — later half of {len(traces)} traces "
            f"({res['train_rows']:,} earlier rows fit the baselines)"
        )
        if not res["results"]:
            console.print(
                f"{title}: {res['rows']:,} rows, {res['positives']:,} positive, nothing to rank"
            )
            continue
        table = Table(title=title)
        for col in ("model", "AUC", "AP", "Brier", "base rate", "rows", "pos."):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name, m in res["results"].items():
            table.add_row(
                short.get(name, name),
                f"{m['auc']:.4f}",
                f"{m['average_precision']:.4f}",
                f"{m['brier']:.4f}",
                f"{100 * m['base_rate']:.1f} %",
                f"{m['rows']:,}",
                f"{m['positives']:,}",
            )
        console.print(table)
    return report


def plot_curves(curves: dict[str, dict[str, tuple[Any, Any]]], png: Path) -> None:
    """ROC and calibration curves, one row of panels per source (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # matplotlib is a dev extra
        raise RuntimeError("the PNG needs matplotlib: pip install 'spotfleet[dev]'") from exc
    from spotfleet_engine.risk import metrics

    fig, axes = plt.subplots(len(curves), 2, figsize=(11, 4.5 * len(curves)), squeeze=False)
    for row, (src, by_model) in enumerate(curves.items()):
        ax_roc, ax_cal = axes[row]
        for name, (y, p) in by_model.items():
            fpr, tpr = _roc_points(np.asarray(y), np.asarray(p))
            ax_roc.plot(fpr, tpr, label=f"{name} (AUC {metrics.roc_auc(y, p):.3f})")
            table = metrics.calibration_table(y, p)
            ax_cal.plot(
                [r["mean_predicted"] for r in table],
                [r["observed_rate"] for r in table],
                marker="o",
                label=name,
            )
        ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax_roc.set(
            title=f"ROC — {src[:60]}", xlabel="false positive rate", ylabel="true positive rate"
        )
        ax_roc.legend(fontsize=7, loc="lower right")
        ax_cal.plot([1e-4, 1], [1e-4, 1], color="grey", lw=0.5)
        ax_cal.set(
            title="calibration (fixed bins)",
            xlabel="mean predicted probability",
            ylabel="observed rate",
            xscale="log",
            yscale="log",
        )
        ax_cal.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def _roc_points(y: Any, p: Any) -> tuple[Any, Any]:
    order = np.argsort(-p, kind="mergesort")
    ys = y[order] > 0.5
    tp = np.r_[0, np.cumsum(ys)]
    fp = np.r_[0, np.cumsum(~ys)]
    step = max(1, tp.size // 2000)
    return fp[::step] / max(fp[-1], 1), tp[::step] / max(tp[-1], 1)

"""The operator's risk scorer: the artifact's compiled forest evaluated by numpy, with
neither xgboost nor numba in memory, giving the same probabilities as the kernel."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pytest

from spotfleet_engine import catalog, market
from spotfleet_engine.risk import forest, xgb


def test_numpy_scorer_equals_the_compiled_kernel_on_a_real_market() -> None:
    snap = market.snapshot_at(
        market.load_bundled_history(),
        dt.datetime(2021, 5, 12, 6, tzinfo=dt.UTC),
        lookback=dt.timedelta(hours=72),
    )
    cat = catalog.load_bundled("us-east-1")
    pools = [p for p, _ in snap.spot_pools()]
    assert len(pools) > 1000
    served = xgb.load_bundled(scorer="numpy")
    assert served.scorer == "numpy" and served.booster is None
    kernel = xgb.load_bundled()
    a = served.interruption_probability(pools, snap, cat, snap.observed_at)
    b = kernel.interruption_probability(pools, snap, cat, snap.observed_at)
    assert np.max(np.abs(np.array(a) - np.array(b))) <= 1e-9
    assert min(a) > 0.0 and max(a) < 1.0


def test_the_numpy_scorer_loads_neither_xgboost_nor_numba() -> None:
    code = (
        "import sys\n"
        "from spotfleet_engine.risk import combined\n"
        "m = combined.load_bundled(scorer='numpy')\n"
        "print(m.spike.scorer, 'xgboost' in sys.modules, 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["numpy", "False", "False"]


def test_a_tampered_forest_is_refused_at_load() -> None:
    doc = json.loads(
        xgb.importlib.resources.files("spotfleet_engine")
        .joinpath("data", xgb.BUNDLED_ARTIFACT)
        .read_text(encoding="utf-8")
    )
    bad = copy.deepcopy(doc)
    leaf = np.frombuffer(base64.b64decode(bad["forest"]["leaf"]), dtype=np.float32).copy()
    leaf[:] += np.float32(0.01)  # every leaf moves: every probe margin moves
    bad["forest"]["leaf"] = base64.b64encode(leaf.tobytes()).decode()
    with pytest.raises(ValueError, match="probe margins"):
        xgb.load(bad, scorer="numpy")
    assert xgb.load(doc, scorer="numpy").scorer == "numpy"


def test_the_artifact_forest_is_what_the_booster_compiles_to() -> None:
    model = xgb.load_bundled()
    assert model.booster is not None
    section = xgb.forest_section(model.booster)
    assert section == model.artifact["forest"]  # the bundled file is reproducible
    again = forest.from_doc(section)
    x = forest.probe_rows(again, 64, seed=7)
    want = model.booster.inplace_predict(x, predict_type="margin")
    assert np.allclose(again.margin_numpy(x), want, rtol=0.0, atol=1e-6)

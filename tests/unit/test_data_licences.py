"""What the package ships: every data file is listed with its source and licence in
``spotfleet_engine/data/README.md`` (the wheel and the image ship the package directory
as it is), none is under a licence that forbids commercial use, and the placement-score
model that replaced SpotLake's non-commercial scores is the same in the engine and in
the stand-in cloud."""

from __future__ import annotations

import re
from pathlib import Path

import spotfleet_engine
from spotfleet_engine import market as engine_market
from spotfleet_sim import market as sim_market

DATA = Path(spotfleet_engine.__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
NOT_DATA = {"README.md"}
#: licence words that forbid commercial use
FORBIDDEN = re.compile(r"\bNC\b|BY-NC|non-?commercial", re.IGNORECASE)


def listed() -> dict[str, str]:
    """file name -> licence cell, from the README's table (before 'Not shipped')."""
    text = (DATA / "README.md").read_text(encoding="utf-8").split("## Not shipped")[0]
    out: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("file", "---"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            out[name] = cells[3]
    return out


def test_every_shipped_data_file_is_listed_with_a_licence() -> None:
    shipped = {p.name for p in DATA.iterdir() if p.is_file() and p.name not in NOT_DATA}
    table = listed()
    assert shipped, "no data files found"
    missing = sorted(shipped - set(table))
    assert not missing, f"data files shipped without a README row (source, licence): {missing}"
    stale = sorted(set(table) - shipped)
    assert not stale, f"README lists files that are not shipped: {stale}"
    assert all(table[f] for f in shipped)


def test_no_shipped_file_forbids_commercial_use() -> None:
    bad = {f: lic for f, lic in listed().items() if FORBIDDEN.search(lic)}
    assert not bad, f"shipped under a non-commercial licence: {bad}"
    assert not list(DATA.glob("spotlake*")), "SpotLake data (CC BY-NC 4.0) is in the package"


def test_the_licence_check_catches_a_non_commercial_row() -> None:
    assert FORBIDDEN.search("repo Apache-2.0; SpotLake data **CC BY-NC 4.0 (non-commercial)**")
    assert not FORBIDDEN.search("Apache-2.0 / MIT (AWS's public feed)")


def test_notice_names_the_data_readme() -> None:
    notice = (REPO / "NOTICE").read_text(encoding="utf-8")
    assert "engine/spotfleet_engine/data/README.md" in notice


def test_engine_and_stand_in_cloud_model_the_same_placement_scores() -> None:
    engine = engine_market.load_bundled_placement_scores("us-east-1")
    sim = sim_market.PlacementScores.load()
    assert engine_market.BAND_TO_PLACEMENT_SCORE == sim_market.BAND_TO_SCORE
    assert engine
    for (itype, az_id), score in engine.items():
        assert sim.score("us-east-1", az_id, itype) == score
    assert set(sim.zone_ids("us-east-1")) == {az for _, az in engine}

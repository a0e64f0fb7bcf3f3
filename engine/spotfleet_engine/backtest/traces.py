"""Real spot availability traces bundled with the engine (SkyPilot, NSDI'24).

The only I/O of the backtest package, and only of bundled files (like
:mod:`spotfleet_engine.market`'s loaders). See ``data/README.md`` for
provenance. We use the AWS single-node *availability* traces whose instance
type is exact (p3.2xlarge, p3.16xlarge): their value is 0 while spot capacity
was available and 1 while it was not (the SkyPilot simulator's reading; the
source README's wording is ambiguous, see the data README). The traces carry
no absolute time, so a replay aligns offset 0 with the start of its window and
loops the trace when the window is longer. The preemption traces (which
record the life of one node) and Bamboo's traces (no region or fleet size) are
not used.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass

INDEX_FILE = "skypilot_spot_traces_index.csv.gz"
SEGMENTS_FILE = "skypilot_spot_traces_segments.csv.gz"


@dataclass(frozen=True, slots=True)
class AvailabilityTrace:
    """Availability of one pool: ``outages`` are ``(start_s, end_s)`` offsets
    from the trace start during which the pool had no spot capacity;
    ``duration_s`` is the trace length (the replay loops it)."""

    source: str
    instance_type: str
    zone: str
    duration_s: int
    outages: tuple[tuple[int, int], ...]


def _rows(name: str) -> Iterator[dict[str, str]]:
    ref = importlib.resources.files("spotfleet_engine").joinpath("data", name)
    with ref.open("rb") as raw, gzip.open(raw, "rt", newline="") as text:
        yield from csv.DictReader(text)


@functools.lru_cache(maxsize=1)
def load_bundled_traces() -> tuple[AvailabilityTrace, ...]:
    """The usable bundled traces (AWS, 1-node, availability, exact type), cached.

    Where two traces cover the same (type, zone), the longer one is kept.
    """
    meta: dict[str, tuple[str, str, int]] = {}
    for r in _rows(INDEX_FILE):
        itype = r["instance_type_per_readme"]
        if (
            r["trace_kind"] == "availability"
            and r["nodes"] == "1-node"
            and r["cloud"] == "aws"
            and " " not in itype
        ):
            meta[r["trace_id"]] = (itype, r["zone"], 0)
    outages: dict[str, list[tuple[int, int]]] = {k: [] for k in meta}
    ends: dict[str, int] = dict.fromkeys(meta, 0)
    for r in _rows(SEGMENTS_FILE):
        tid = r["trace_id"]
        if tid not in meta:
            continue
        a, b = int(r["start_offset_s"]), int(r["end_offset_s"])
        ends[tid] = max(ends[tid], b)
        if int(r["value"]) != 0:
            outages[tid].append((a, b))
    best: dict[tuple[str, str], AvailabilityTrace] = {}
    for tid, (itype, zone, _) in sorted(meta.items()):
        tr = AvailabilityTrace(tid, itype, zone, ends[tid], tuple(sorted(outages[tid])))
        old = best.get((itype, zone))
        if tr.duration_s > 0 and (old is None or tr.duration_s > old.duration_s):
            best[(itype, zone)] = tr
    return tuple(best[k] for k in sorted(best))

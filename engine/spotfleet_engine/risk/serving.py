"""Serving-side feature building for the risk model: a MarketSnapshot -> feature rows.

Produces exactly the rows of the training path (:func:`features.feature_matrix`
on :class:`features.PriceEvents` built by :func:`features.events_from_series`
and static features from :func:`features.static_table`), only faster:

- the snapshot's points are flattened and converted to hours in one pass
  (no per-pool arrays, no per-pool sort unless a pool is out of order);
- the static features of every type are computed once per (catalog, advisor)
  pair and reused across snapshots (:class:`StaticCache`);
- pools are numbered with dicts, not list searches.

Pure: no I/O, no clock. Everything keyed by object identity holds a strong
reference to the keyed object and checks it with ``is``, so a recycled
``id()`` can never return another object's entry.
"""

from __future__ import annotations

import itertools
import operator
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from spotfleet_engine import catalog as catalog_mod
from spotfleet_engine import market as market_mod
from spotfleet_engine.risk import features

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_AT = operator.attrgetter("at")
_PRICE = operator.attrgetter("price")
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)


@dataclass(frozen=True)
class SnapshotEvents:
    """A snapshot's price points at or before ``t_now`` (hours since the epoch).

    ``keys[i]`` is pool i's (type, zone), sorted; ``events`` holds its points
    (ascending in time); ``first_hour[i]`` is its first point at or before
    ``t_now`` (NaN when it has none).
    """

    keys: tuple[tuple[str, str], ...]
    events: features.PriceEvents
    first_hour: F64


def snapshot_events(
    history: Mapping[tuple[str, str], Sequence[market_mod.PricePoint]], now: datetime
) -> SnapshotEvents:
    """Flatten ``history`` into :class:`features.PriceEvents`, dropping points after ``now``.

    Same events, in the same order, as ``features.events_from_series`` on the
    per-pool (hours, prices) of the points at or before ``now`` (a stable sort
    per pool, done only when a pool is out of order).
    """
    keys = tuple(sorted(history))
    seqs = [history[k] for k in keys]
    n_pools = len(keys)
    lens = np.fromiter(map(len, seqs), dtype=np.int64, count=n_pools)
    n = int(lens.sum())
    pts = list(itertools.chain.from_iterable(seqs))
    # one datetime.timestamp() per point: the larger part of a first call's cost (a
    # value-keyed memo was tried: hashing new aware datetimes costs twice timestamp())
    secs = np.fromiter(map(datetime.timestamp, map(_AT, pts)), dtype=np.float64, count=n)
    prices = np.fromiter(map(_PRICE, pts), dtype=np.float64, count=n)
    pool_of = np.repeat(np.arange(n_pools, dtype=np.int64), lens)
    keep = secs <= now.timestamp()
    if not keep.all():
        secs, prices, pool_of = secs[keep], prices[keep], pool_of[keep]
    hours = secs / 3600.0
    counts = np.bincount(pool_of, minlength=n_pools).astype(np.int64)
    offsets = np.zeros(n_pools + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if hours.size > 1:
        same_pool = pool_of[1:] == pool_of[:-1]
        if (same_pool & (hours[1:] < hours[:-1])).any():
            order = np.lexsort((hours, pool_of))  # stable: equal times keep their order
            hours, prices = hours[order], prices[order]
    first = np.full(n_pools, np.nan)
    has = counts > 0
    first[has] = hours[offsets[:-1][has]]
    ev = features.PriceEvents(
        types=tuple(map(_FIRST, keys)),
        zones=tuple(map(_SECOND, keys)),
        offsets=offsets,
        hours=hours,
        prices=prices,
    )
    return SnapshotEvents(keys, ev, first)


class StaticCache:
    """Static feature rows per instance type for one (catalog, advisor) pair.

    Rows are :func:`features.type_static_row` with the arguments
    :func:`features.static_table` would pass, computed once per type.
    """

    def __init__(
        self,
        catalog: catalog_mod.Catalog,
        advisor: Mapping[str, market_mod.AdvisorEntry],
    ) -> None:
        self.catalog = catalog
        self.advisor = advisor
        self._zones = {n: len(z) for n, z in catalog.zones.items()}
        self._row_of: dict[str, int] = {}
        self._rows: list[list[float]] = []
        self._table: F64 = np.zeros((0, len(features.STATIC_NAMES)))

    def _add(self, name: str) -> int:
        adv = self.advisor.get(name)
        self._rows.append(
            features.type_static_row(
                self.catalog.types.get(name),
                self.catalog.on_demand_usd_per_hour.get(name),
                self._zones.get(name, 0),
                adv.band if adv is not None else None,
                adv.savings_pct if adv is not None else None,
            )
        )
        self._row_of[name] = len(self._rows) - 1
        return len(self._rows) - 1

    def table(self, types: Sequence[str]) -> features.StaticTable:
        """The :class:`features.StaticTable` of pools of ``types`` (one name per pool)."""
        row_of = self._row_of
        rows = [row_of[t] if t in row_of else self._add(t) for t in types]
        if len(self._rows) != self._table.shape[0]:
            self._table = np.asarray(self._rows, dtype=np.float64).reshape(
                len(self._rows), len(features.STATIC_NAMES)
            )
        # types numbered in order of first appearance, as features.static_table does
        first: dict[str, int] = {}
        tindex = [first.setdefault(t, len(first)) for t in types]
        return features.StaticTable(
            self._table[np.asarray(rows, dtype=np.int64)],
            np.asarray(tindex, dtype=np.int64),
        )


V = TypeVar("V")


class IdentityLRU(Generic[V]):
    """A small LRU keyed by the identities of a few objects (strong references kept)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[tuple[object, ...], tuple[tuple[object, ...], V]] = OrderedDict()

    def get(self, objs: tuple[object, ...], extra: tuple[object, ...] = ()) -> V | None:
        """The value stored for exactly these objects (and ``extra`` values), or None."""
        key = (*map(id, objs), *extra)
        hit = self._d.get(key)
        if hit is None or any(a is not b for a, b in zip(hit[0], objs, strict=True)):
            return None
        self._d.move_to_end(key)
        return hit[1]

    def put(self, objs: tuple[object, ...], value: V, extra: tuple[object, ...] = ()) -> None:
        """Store ``value`` for these objects, evicting the least recently used beyond ``size``."""
        key = (*map(id, objs), *extra)
        self._d[key] = (objs, value)
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)

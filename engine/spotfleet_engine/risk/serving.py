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


#: After markets with no point in common, every how many calls :class:`PointMemo`
#: stores one again.
_RETRY_EVERY = 8


class PointMemo:
    """Seconds since the epoch (``at.timestamp()``) and price of price points seen
    before, keyed by the PricePoint's identity.

    Consecutive backtest hours slice one tuple of PricePoints per pool, so most
    points of a new market were converted for the previous one. Looking them up
    by ``id()`` in a sorted int64 array (``searchsorted``: no datetime hashing,
    no dict of fresh int objects) costs about a quarter of ``timestamp()``.
    PricePoints are frozen, so an object's values never change; every
    remembered point is held (strong reference), so its id cannot be reused by
    another object while it is remembered. Bounded: a call with no hit, or one
    that would take it past three times its own points, replaces the memo by
    that call's points (about the last market's points, which the market cache
    holds anyway). A second call in a row with no hit (markets of new objects:
    operator refreshes) empties it, and such calls then store nothing and pay
    only a 64-point probe, except every 8th, which stores its market again (so
    a later run of markets that share points is memoised again). Not
    thread-safe (the model calls it under its lock).
    """

    def __init__(self) -> None:
        self._ids: I64 = np.zeros(0, dtype=np.int64)  # sorted
        self._vals: F64 = np.zeros((0, 2))  # seconds, price
        self._held: list[market_mod.PricePoint] = []
        self._no_hit_calls = 0  # calls in a row without a hit

    def __len__(self) -> int:
        return int(self._ids.size)

    def _forget(self) -> None:
        self._ids = np.zeros(0, dtype=np.int64)
        self._vals = np.zeros((0, 2))
        self._held = []

    def _hits(self, ids: I64) -> bool:
        pos = np.minimum(np.searchsorted(self._ids, ids), self._ids.size - 1)
        return bool((self._ids[pos] == ids).any())

    def lookup(self, pts: list[market_mod.PricePoint]) -> tuple[F64, F64]:
        """Every point's seconds since the epoch (exactly ``at.timestamp()``) and price.

        ``pts`` may be kept as it is (not copied): the caller must not mutate it.
        """
        n = len(pts)
        # a probe of 64 points first: a market of new objects (an operator refresh)
        # skips the full search (assuming a miss is always safe: it recomputes)
        probe = pts[:: max(n // 64, 1)]
        if self._no_hit_calls % _RETRY_EVERY and not (
            self._ids.size and self._hits(np.fromiter(map(id, probe), np.int64, len(probe)))
        ):  # again no hit: convert, remember nothing
            self._forget()
            self._no_hit_calls += 1
            return (
                np.fromiter(map(datetime.timestamp, map(_AT, pts)), dtype=np.float64, count=n),
                np.fromiter(map(_PRICE, pts), dtype=np.float64, count=n),
            )
        ids = np.fromiter(map(id, pts), dtype=np.int64, count=n)
        if self._ids.size and self._hits(ids[:: max(n // 64, 1)]):
            pos = np.minimum(np.searchsorted(self._ids, ids), self._ids.size - 1)
            hit = self._ids[pos] == ids
        else:
            pos, hit = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.bool_)
        n_hit = int(np.count_nonzero(hit))
        self._no_hit_calls = 0 if n_hit else self._no_hit_calls + 1
        if n_hit == n:
            known = self._vals[pos].T
            return known[0].copy(), known[1].copy()
        miss = np.flatnonzero(~hit)
        new_pts = pts if n_hit == 0 else [pts[i] for i in miss.tolist()]
        new = np.empty((len(new_pts), 2))
        new[:, 0] = np.fromiter(
            map(datetime.timestamp, map(_AT, new_pts)), dtype=np.float64, count=len(new_pts)
        )
        new[:, 1] = np.fromiter(map(_PRICE, new_pts), dtype=np.float64, count=len(new_pts))
        if n_hit:
            vals = self._vals[pos]
            vals[miss] = new
        else:
            vals = new
        if n_hit == 0 or self._ids.size + miss.size > 3 * n:
            order = np.argsort(ids, kind="stable")  # ids of new objects: nearly sorted
            self._ids, self._vals, self._held = ids[order], vals[order], pts
        else:
            new_ids = ids[miss]
            order = np.argsort(new_ids, kind="stable")
            at = np.searchsorted(self._ids, new_ids[order])
            self._ids = np.insert(self._ids, at, new_ids[order])
            self._vals = np.insert(self._vals, at, new[order], axis=0)
            self._held = [*self._held, *new_pts]  # never extend a caller's list
        return vals[:, 0].copy(), vals[:, 1].copy()


def snapshot_events(
    history: Mapping[tuple[str, str], Sequence[market_mod.PricePoint]],
    now: datetime,
    memo: PointMemo | None = None,
) -> SnapshotEvents:
    """Flatten ``history`` into :class:`features.PriceEvents`, dropping points after ``now``.

    Same events, in the same order, as ``features.events_from_series`` on the
    per-pool (hours, prices) of the points at or before ``now`` (a stable sort
    per pool, done only when a pool is out of order). ``memo`` remembers the
    points' seconds and prices across calls (:class:`PointMemo`; same numbers).
    """
    keys = tuple(sorted(history))
    seqs = [history[k] for k in keys]
    n_pools = len(keys)
    lens = np.fromiter(map(len, seqs), dtype=np.int64, count=n_pools)
    n = int(lens.sum())
    pts = list(itertools.chain.from_iterable(seqs))
    # one datetime.timestamp() per point not in the memo: the larger part of a first
    # call's cost (a value-keyed memo was tried: hashing new aware datetimes costs
    # twice timestamp(); the memo is keyed by PricePoint identity instead)
    if memo is None:
        secs = np.fromiter(map(datetime.timestamp, map(_AT, pts)), dtype=np.float64, count=n)
        prices = np.fromiter(map(_PRICE, pts), dtype=np.float64, count=n)
    else:
        secs, prices = memo.lookup(pts)
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

"""An XGBoost tree ensemble compiled into flat arrays and evaluated by a numba kernel.

:func:`compile_booster` reads a booster's JSON dump once and pads every tree to
a complete binary tree of the ensemble's depth ``D`` (heap order: node ``k``
has children ``2k`` and ``2k+1``; a leaf above depth ``D`` is copied into every
slot below it), so a row's leaf in tree ``t`` is found by ``D`` steps of
``k = 2k + (value >= threshold)`` with no leaf test.

:meth:`Forest.margin` (what the model serves with) runs :func:`_margins`, a
numba kernel: rows in blocks of :data:`BLOCK`, each block copied
feature-major into a small buffer of integer order keys (:func:`order_key`:
``a >= b`` iff ``key(a) >= key(b)`` for float32, so the compare is an integer
one and a node's column and threshold key share one int64 load), then tree by
tree, eight rows walked side by side (eight independent chains of loads, so
the CPU overlaps them), leaf values added in float32 from the base margin in
xgboost's order: the margins equal ``inplace_predict(predict_type="margin")``
bit for bit (tested in ``tests/unit/test_risk_speed.py``). The depth reaches
the kernel as the length of a tuple, so each depth is its own compiled
specialisation with the depth a constant (about 25 % faster than a runtime
depth). The kernel is cached on disk (numba ``cache=True``) when the package
directory or numba's user cache is writable, otherwise compiled once per
process (1-4 s). :meth:`Forest.margin_numpy` is the dependency-free level-wise
numpy version (all rows x all trees, one gather per level): what the operator
serves with (it scores a market once per snapshot, so it needs neither numba nor
xgboost in memory), and the reference the kernel is tested against. An artifact
carries the compiled forest (:func:`to_doc` / :func:`from_doc`) with xgboost's own
margins on probe rows, checked whenever it is loaded.

Missing values follow each node's default direction: a row is widened to
``[x with NaN -> -inf | x with NaN -> +inf]`` (in the kernel: keys below and
above every float's) and a node whose default is right reads the second half,
so "go right iff value >= threshold" covers both.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import xgboost as xgb

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

_LOGISTIC = ("binary:logistic", "reg:logistic", "binary:logitraw")
#: Rows per block of the compiled kernel (a multiple of 8; 2 x 62 features x 32
#: rows x 4 bytes = 16 KB of buffer, inside the 32 KB L1 data cache).
BLOCK = 32
#: Deepest ensemble compiled (a complete tree of depth 12 has 4,096 slots);
#: deeper ones raise ValueError (serve with xgboost's predictor instead).
MAX_DEPTH = 12
#: Order keys of a missing value in a default-left / default-right column:
#: below / above the key of every float32 (keys lie within +-0x7F800000).
_KEY_MISSING_LEFT = -(2**31)
_KEY_MISSING_RIGHT = 2**31 - 1


def _jit(fn: Callable[..., Any], **options: Any) -> Any:
    """``numba.njit(nogil=True, **options)``, disk-cached where a cache directory is usable.
    numba is imported here, on first use: a process that serves with
    :meth:`Forest.margin_numpy` alone (the operator) never loads it."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True, **options)(fn)
    except RuntimeError:  # no writable cache location: compile per process
        return numba.njit(nogil=True, **options)(fn)


def _margins_py(
    x: Any,
    lo_row: int,
    hi_row: int,
    node: Any,
    leaf: Any,
    levels: tuple[int, ...],
    base: Any,
    out: Any,
) -> None:
    """Margins of rows ``lo_row .. hi_row-1`` of ``x`` into ``out`` (same rows).

    ``node``: per tree slot, the threshold's order key (:func:`order_key`) in
    the high 32 bits and the widened column times :data:`BLOCK` in the low 32;
    ``leaf``: per tree, the values of its ``2**depth`` last-level slots;
    ``depth = len(levels)`` (a compile-time constant per specialisation).
    Values are compared as order keys (integers), which is the float32 order.
    """
    depth = len(levels)
    width = 1 << depth
    nb = BLOCK
    nf = x.shape[1]
    bits = x.view(np.int32)
    n_trees = leaf.shape[0] // width
    w = np.empty(2 * nf * nb, np.int32)
    acc = np.empty(nb, np.float32)
    for r0 in range(lo_row, hi_row, nb):
        m = min(nb, hi_row - r0)
        for b in range(nb):
            r = r0 + b if b < m else r0  # a short last block repeats its first row
            for j in range(nf):
                v = np.int64(bits[r, j])
                mag = v & 0x7FFFFFFF
                if mag > 0x7F800000:  # NaN: below / above every key
                    w[j * nb + b] = _KEY_MISSING_LEFT
                    w[(nf + j) * nb + b] = _KEY_MISSING_RIGHT
                else:
                    k = -mag if v < 0 else mag
                    w[j * nb + b] = k
                    w[(nf + j) * nb + b] = k
            acc[b] = base
        for t in range(n_trees):
            o = t * width
            root = node[o + 1]
            th = root >> 32
            for b in range(0, nb, 8):
                c = (root & 0xFFFFFFFF) + b
                # level 0: one node for every row; eight rows side by side
                p0 = 2 + (1 if w[c + 0] >= th else 0)
                p1 = 2 + (1 if w[c + 1] >= th else 0)
                p2 = 2 + (1 if w[c + 2] >= th else 0)
                p3 = 2 + (1 if w[c + 3] >= th else 0)
                p4 = 2 + (1 if w[c + 4] >= th else 0)
                p5 = 2 + (1 if w[c + 5] >= th else 0)
                p6 = 2 + (1 if w[c + 6] >= th else 0)
                p7 = 2 + (1 if w[c + 7] >= th else 0)
                # levels 1-5 written out (depth is a constant: unused ones compile away)
                if depth > 1:
                    n0 = node[o + p0]
                    n1 = node[o + p1]
                    n2 = node[o + p2]
                    n3 = node[o + p3]
                    n4 = node[o + p4]
                    n5 = node[o + p5]
                    n6 = node[o + p6]
                    n7 = node[o + p7]
                    p0 = 2 * p0 + (1 if w[(n0 & 0xFFFFFFFF) + b + 0] >= (n0 >> 32) else 0)
                    p1 = 2 * p1 + (1 if w[(n1 & 0xFFFFFFFF) + b + 1] >= (n1 >> 32) else 0)
                    p2 = 2 * p2 + (1 if w[(n2 & 0xFFFFFFFF) + b + 2] >= (n2 >> 32) else 0)
                    p3 = 2 * p3 + (1 if w[(n3 & 0xFFFFFFFF) + b + 3] >= (n3 >> 32) else 0)
                    p4 = 2 * p4 + (1 if w[(n4 & 0xFFFFFFFF) + b + 4] >= (n4 >> 32) else 0)
                    p5 = 2 * p5 + (1 if w[(n5 & 0xFFFFFFFF) + b + 5] >= (n5 >> 32) else 0)
                    p6 = 2 * p6 + (1 if w[(n6 & 0xFFFFFFFF) + b + 6] >= (n6 >> 32) else 0)
                    p7 = 2 * p7 + (1 if w[(n7 & 0xFFFFFFFF) + b + 7] >= (n7 >> 32) else 0)
                if depth > 2:
                    n0 = node[o + p0]
                    n1 = node[o + p1]
                    n2 = node[o + p2]
                    n3 = node[o + p3]
                    n4 = node[o + p4]
                    n5 = node[o + p5]
                    n6 = node[o + p6]
                    n7 = node[o + p7]
                    p0 = 2 * p0 + (1 if w[(n0 & 0xFFFFFFFF) + b + 0] >= (n0 >> 32) else 0)
                    p1 = 2 * p1 + (1 if w[(n1 & 0xFFFFFFFF) + b + 1] >= (n1 >> 32) else 0)
                    p2 = 2 * p2 + (1 if w[(n2 & 0xFFFFFFFF) + b + 2] >= (n2 >> 32) else 0)
                    p3 = 2 * p3 + (1 if w[(n3 & 0xFFFFFFFF) + b + 3] >= (n3 >> 32) else 0)
                    p4 = 2 * p4 + (1 if w[(n4 & 0xFFFFFFFF) + b + 4] >= (n4 >> 32) else 0)
                    p5 = 2 * p5 + (1 if w[(n5 & 0xFFFFFFFF) + b + 5] >= (n5 >> 32) else 0)
                    p6 = 2 * p6 + (1 if w[(n6 & 0xFFFFFFFF) + b + 6] >= (n6 >> 32) else 0)
                    p7 = 2 * p7 + (1 if w[(n7 & 0xFFFFFFFF) + b + 7] >= (n7 >> 32) else 0)
                if depth > 3:
                    n0 = node[o + p0]
                    n1 = node[o + p1]
                    n2 = node[o + p2]
                    n3 = node[o + p3]
                    n4 = node[o + p4]
                    n5 = node[o + p5]
                    n6 = node[o + p6]
                    n7 = node[o + p7]
                    p0 = 2 * p0 + (1 if w[(n0 & 0xFFFFFFFF) + b + 0] >= (n0 >> 32) else 0)
                    p1 = 2 * p1 + (1 if w[(n1 & 0xFFFFFFFF) + b + 1] >= (n1 >> 32) else 0)
                    p2 = 2 * p2 + (1 if w[(n2 & 0xFFFFFFFF) + b + 2] >= (n2 >> 32) else 0)
                    p3 = 2 * p3 + (1 if w[(n3 & 0xFFFFFFFF) + b + 3] >= (n3 >> 32) else 0)
                    p4 = 2 * p4 + (1 if w[(n4 & 0xFFFFFFFF) + b + 4] >= (n4 >> 32) else 0)
                    p5 = 2 * p5 + (1 if w[(n5 & 0xFFFFFFFF) + b + 5] >= (n5 >> 32) else 0)
                    p6 = 2 * p6 + (1 if w[(n6 & 0xFFFFFFFF) + b + 6] >= (n6 >> 32) else 0)
                    p7 = 2 * p7 + (1 if w[(n7 & 0xFFFFFFFF) + b + 7] >= (n7 >> 32) else 0)
                if depth > 4:
                    n0 = node[o + p0]
                    n1 = node[o + p1]
                    n2 = node[o + p2]
                    n3 = node[o + p3]
                    n4 = node[o + p4]
                    n5 = node[o + p5]
                    n6 = node[o + p6]
                    n7 = node[o + p7]
                    p0 = 2 * p0 + (1 if w[(n0 & 0xFFFFFFFF) + b + 0] >= (n0 >> 32) else 0)
                    p1 = 2 * p1 + (1 if w[(n1 & 0xFFFFFFFF) + b + 1] >= (n1 >> 32) else 0)
                    p2 = 2 * p2 + (1 if w[(n2 & 0xFFFFFFFF) + b + 2] >= (n2 >> 32) else 0)
                    p3 = 2 * p3 + (1 if w[(n3 & 0xFFFFFFFF) + b + 3] >= (n3 >> 32) else 0)
                    p4 = 2 * p4 + (1 if w[(n4 & 0xFFFFFFFF) + b + 4] >= (n4 >> 32) else 0)
                    p5 = 2 * p5 + (1 if w[(n5 & 0xFFFFFFFF) + b + 5] >= (n5 >> 32) else 0)
                    p6 = 2 * p6 + (1 if w[(n6 & 0xFFFFFFFF) + b + 6] >= (n6 >> 32) else 0)
                    p7 = 2 * p7 + (1 if w[(n7 & 0xFFFFFFFF) + b + 7] >= (n7 >> 32) else 0)
                if depth > 5:
                    n0 = node[o + p0]
                    n1 = node[o + p1]
                    n2 = node[o + p2]
                    n3 = node[o + p3]
                    n4 = node[o + p4]
                    n5 = node[o + p5]
                    n6 = node[o + p6]
                    n7 = node[o + p7]
                    p0 = 2 * p0 + (1 if w[(n0 & 0xFFFFFFFF) + b + 0] >= (n0 >> 32) else 0)
                    p1 = 2 * p1 + (1 if w[(n1 & 0xFFFFFFFF) + b + 1] >= (n1 >> 32) else 0)
                    p2 = 2 * p2 + (1 if w[(n2 & 0xFFFFFFFF) + b + 2] >= (n2 >> 32) else 0)
                    p3 = 2 * p3 + (1 if w[(n3 & 0xFFFFFFFF) + b + 3] >= (n3 >> 32) else 0)
                    p4 = 2 * p4 + (1 if w[(n4 & 0xFFFFFFFF) + b + 4] >= (n4 >> 32) else 0)
                    p5 = 2 * p5 + (1 if w[(n5 & 0xFFFFFFFF) + b + 5] >= (n5 >> 32) else 0)
                    p6 = 2 * p6 + (1 if w[(n6 & 0xFFFFFFFF) + b + 6] >= (n6 >> 32) else 0)
                    p7 = 2 * p7 + (1 if w[(n7 & 0xFFFFFFFF) + b + 7] >= (n7 >> 32) else 0)
                for _ in range(6, depth):
                    n0 = node[o + p0]
                    n1 = node[o + p1]
                    n2 = node[o + p2]
                    n3 = node[o + p3]
                    n4 = node[o + p4]
                    n5 = node[o + p5]
                    n6 = node[o + p6]
                    n7 = node[o + p7]
                    p0 = 2 * p0 + (1 if w[(n0 & 0xFFFFFFFF) + b + 0] >= (n0 >> 32) else 0)
                    p1 = 2 * p1 + (1 if w[(n1 & 0xFFFFFFFF) + b + 1] >= (n1 >> 32) else 0)
                    p2 = 2 * p2 + (1 if w[(n2 & 0xFFFFFFFF) + b + 2] >= (n2 >> 32) else 0)
                    p3 = 2 * p3 + (1 if w[(n3 & 0xFFFFFFFF) + b + 3] >= (n3 >> 32) else 0)
                    p4 = 2 * p4 + (1 if w[(n4 & 0xFFFFFFFF) + b + 4] >= (n4 >> 32) else 0)
                    p5 = 2 * p5 + (1 if w[(n5 & 0xFFFFFFFF) + b + 5] >= (n5 >> 32) else 0)
                    p6 = 2 * p6 + (1 if w[(n6 & 0xFFFFFFFF) + b + 6] >= (n6 >> 32) else 0)
                    p7 = 2 * p7 + (1 if w[(n7 & 0xFFFFFFFF) + b + 7] >= (n7 >> 32) else 0)
                s = o - width  # leaf j (0 .. width-1) of tree t: leaf[t * width + j]
                acc[b + 0] += leaf[s + p0]
                acc[b + 1] += leaf[s + p1]
                acc[b + 2] += leaf[s + p2]
                acc[b + 3] += leaf[s + p3]
                acc[b + 4] += leaf[s + p4]
                acc[b + 5] += leaf[s + p5]
                acc[b + 6] += leaf[s + p6]
                acc[b + 7] += leaf[s + p7]
        for b in range(m):
            out[r0 + b] = acc[b]


_KERNEL: list[Callable[..., None]] = []


def _margins(*args: Any) -> None:
    """The compiled kernel (:func:`_margins_py`), compiled or loaded on the first call."""
    if not _KERNEL:
        _KERNEL.append(_jit(_margins_py))
    _KERNEL[0](*args)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="forest")
    return _POOL


@dataclass(frozen=True)
class Forest:
    """A compiled ensemble: ``n_trees`` complete trees of depth ``depth``.

    Per tree ``t`` and heap slot ``k`` in 1 .. 2**depth - 1 (flat index
    ``t * 2**depth + k``): ``col`` is the column of the widened input (see the
    module docstring), ``thr`` the float32 threshold (+inf in padding slots);
    ``node`` packs both for the kernel (:func:`_margins_py`) and ``packed`` for
    :meth:`margin_numpy` (int32 column | float32 threshold bits);
    ``leaf[t * 2**depth + j]`` is the value of the ``j``-th slot of the last level.
    """

    n_features: int
    depth: int
    n_trees: int
    base_margin: np.float32
    col: I64
    thr: F32
    node: I64
    packed: I64
    leaf: F32

    def _rows(self, x: F32) -> F32:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {x.shape}")
        out: F32 = np.ascontiguousarray(x, dtype=np.float32)
        return out

    def margin(self, x: F32, threads: int = 1) -> F32:
        """Raw margins (float32) of rows ``x`` (n x n_features, float32, NaN = missing),
        by the compiled kernel; ``threads=2`` splits the rows over this thread and one
        pool thread (the kernel releases the GIL)."""
        x = self._rows(x)
        n = x.shape[0]
        out = np.empty(n, dtype=np.float32)
        levels = (0,) * self.depth
        args = (self.node, self.leaf, levels, self.base_margin, out)
        split = (n // 2 // BLOCK) * BLOCK if threads > 1 else 0
        if split == 0:
            _margins(x, 0, n, *args)
            return out
        other = _pool().submit(_margins, x, split, n, *args)
        _margins(x, 0, split, *args)
        other.result()
        return out

    def margin_numpy(self, x: F32) -> F32:
        """:meth:`margin` by numpy alone: all rows x all trees, one gather per level."""
        x = self._rows(x)
        n = x.shape[0]
        nf, width, n_trees = self.n_features, 1 << self.depth, self.n_trees
        wide = np.empty((n, 2 * nf), dtype=np.float32)
        missing = np.isnan(x)
        wide[:, :nf] = x
        wide[:, nf:] = x
        wide[:, :nf][missing] = -np.inf
        wide[:, nf:][missing] = np.inf
        flat_x = wide.reshape(-1)
        row_off = (np.arange(n, dtype=np.int64) * (2 * nf))[:, None]
        tree_off = (np.arange(n_trees, dtype=np.int64) * width)[None, :]
        pos = np.ones((n, n_trees), dtype=np.int64)
        slot = np.empty((n, n_trees), dtype=np.int64)
        packed = np.empty((n, n_trees), dtype=np.int64)
        col = np.empty((n, n_trees), dtype=np.int64)
        value = np.empty((n, n_trees), dtype=np.float32)
        right = np.empty((n, n_trees), dtype=np.bool_)
        halves = packed.view(np.int32).reshape(n, n_trees, 2)
        for _ in range(self.depth):
            np.add(pos, tree_off, out=slot)
            np.take(self.packed, slot, out=packed)
            np.add(halves[..., 0], row_off, out=col)
            np.take(flat_x, col, out=value)
            np.greater_equal(value, halves[..., 1].view(np.float32), out=right)
            np.left_shift(pos, 1, out=pos)
            np.add(pos, right, out=pos)
        np.add(pos, tree_off - width, out=slot)
        acc = np.empty((n, n_trees + 1), dtype=np.float32)
        acc[:, 0] = self.base_margin
        np.take(self.leaf, slot, out=acc[:, 1:])
        out: F32 = np.cumsum(acc, axis=1, dtype=np.float32)[:, -1]
        return out


def compile_booster(booster: xgb.Booster) -> Forest:
    """Compile a numerical-split gbtree booster with a logistic (or logit-raw) objective.

    Raises ValueError for anything else (other objectives or boosters, categorical
    splits, several outputs, trees deeper than :data:`MAX_DEPTH`).
    """
    return compile_model(json.loads(bytes(booster.save_raw("json"))))


def compile_model(doc: Mapping[str, Any]) -> Forest:
    """:func:`compile_booster` from xgboost's JSON model document (no xgboost needed)."""
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    if objective not in _LOGISTIC:
        raise ValueError(f"unsupported objective {objective!r}")
    params = learner["learner_model_param"]
    n_features = int(params["num_feature"])
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) != 1:
        raise ValueError("only single-output models are supported")
    base = np.float32(str(params["base_score"]).strip("[]"))
    if objective == "binary:logitraw":
        base_margin = base
    else:  # xgboost's ProbToMargin, in float32
        base_margin = np.float32(-np.log(np.float32(1.0) / base - np.float32(1.0)))
    gb = learner["gradient_booster"]
    if gb.get("name", "gbtree") != "gbtree":
        raise ValueError(f"unsupported booster {gb.get('name')!r}")
    trees = gb["model"]["trees"]
    depth = max(_depth(t) for t in trees) if trees else 0
    depth = max(depth, 1)
    if depth > MAX_DEPTH:
        raise ValueError(f"trees of depth {depth} > {MAX_DEPTH}")
    width = 1 << depth
    feat = np.zeros((len(trees), width), dtype=np.int32)
    thr = np.full((len(trees), width), np.inf, dtype=np.float32)
    leaf = np.zeros((len(trees), width), dtype=np.float32)
    for ti, tree in enumerate(trees):
        if any(tree.get("split_type", [])):
            raise ValueError("categorical splits are not supported")
        left, right = tree["left_children"], tree["right_children"]
        split_idx, cond, default_left = (
            tree["split_indices"],
            tree["split_conditions"],
            tree["default_left"],
        )
        stack = [(0, 1, 0)]  # (node id, heap slot, depth)
        while stack:
            nid, slot, d = stack.pop()
            if left[nid] == -1:
                span = 1 << (depth - d)
                lo = slot * span - width
                leaf[ti, lo : lo + span] = np.float32(cond[nid])
                continue
            feat[ti, slot] = int(split_idx[nid]) + (0 if default_left[nid] else n_features)
            thr[ti, slot] = np.float32(cond[nid])
            stack.append((left[nid], 2 * slot, d + 1))
            stack.append((right[nid], 2 * slot + 1, d + 1))
    packed = np.empty((len(trees), width, 2), dtype=np.int32)
    packed[..., 0] = feat
    packed[..., 1] = thr.view(np.int32)
    col = feat.reshape(-1).astype(np.int64)
    flat_thr = thr.reshape(-1).copy()
    return Forest(
        n_features=n_features,
        depth=depth,
        n_trees=len(trees),
        base_margin=np.float32(base_margin),
        col=col,
        thr=flat_thr,
        node=(order_key(flat_thr) << 32) | (col * BLOCK),
        packed=packed.view(np.int64).reshape(-1).copy(),
        leaf=leaf.reshape(-1),
    )


def order_key(v: F32) -> I64:
    """Integer keys of float32 values (no NaN) in the same order, -0.0 equal to +0.0:
    the magnitude bits, negated for negative values (``a >= b`` iff
    ``order_key(a) >= order_key(b)``)."""
    bits = np.ascontiguousarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
    mag = bits & 0x7FFFFFFF
    out: I64 = np.where(bits < 0, -mag, mag)
    return out


def _depth(tree: dict[str, Any]) -> int:
    left, right = tree["left_children"], tree["right_children"]
    best = 0
    stack = [(0, 0)]
    while stack:
        nid, d = stack.pop()
        if left[nid] == -1:
            best = max(best, d)
        else:
            stack.append((left[nid], d + 1))
            stack.append((right[nid], d + 1))
    return best


def probe_rows(compiled: Forest, n: int = 256, seed: int = 0) -> F32:
    """Rows that send every node both ways: each feature of each row is one of that
    feature's thresholds (goes right), the float32 just below it (goes left), or
    NaN (the default direction); features never split on are 0."""
    nf = compiled.n_features
    split = np.isfinite(compiled.thr)
    feature = compiled.col[split] % nf
    thresholds = compiled.thr[split]
    rng = np.random.default_rng(seed)
    x = np.zeros((n, nf), dtype=np.float32)
    for j in range(nf):
        th = thresholds[feature == j]
        if th.size == 0:
            continue
        v = th[rng.integers(0, th.size, n)]
        how = rng.integers(0, 5, n)  # 0-1: the threshold, 2-3: just below, 4: missing
        below = np.nextafter(v, np.float32(-np.inf))
        x[:, j] = np.where(how <= 1, v, np.where(how <= 3, below, np.float32(np.nan)))
    return x


def _b64(a: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _unb64(text: str, dtype: Any, n: int) -> npt.NDArray[Any]:
    a = np.frombuffer(base64.b64decode(text), dtype=dtype)
    if a.size != n:
        raise ValueError(f"forest array of {a.size} values, expected {n}")
    return a.copy()


def to_doc(compiled: Forest, probe_margins: npt.NDArray[Any], seed: int = 0) -> dict[str, Any]:
    """The compiled forest as an artifact section (JSON-safe, exact float32 bits), with
    the margins xgboost gave on :func:`probe_rows` ``(compiled, seed=seed)`` so a
    reader can check its own evaluation without xgboost (:func:`from_doc`)."""
    width = 1 << compiled.depth
    feat = compiled.col.reshape(compiled.n_trees, width).astype(np.int32)
    return {
        "layout": "complete-heap-v1",
        "n_features": compiled.n_features,
        "depth": compiled.depth,
        "n_trees": compiled.n_trees,
        "base_margin": _b64(np.asarray([compiled.base_margin], dtype=np.float32)),
        "feature": _b64(feat),
        "threshold": _b64(compiled.thr.astype(np.float32)),
        "leaf": _b64(compiled.leaf.astype(np.float32)),
        "probe": {
            "seed": seed,
            "rows": int(np.asarray(probe_margins).size),
            "margins": _b64(np.asarray(probe_margins, dtype=np.float32)),
        },
    }


def from_doc(doc: Mapping[str, Any], atol: float = 1e-6) -> Forest:
    """The forest of an artifact section (:func:`to_doc`), checked: its numpy evaluation
    must reproduce the stored xgboost margins on the probe rows within ``atol``
    (ValueError otherwise). Needs neither xgboost nor numba."""
    if doc.get("layout") != "complete-heap-v1":
        raise ValueError(f"unknown forest layout {doc.get('layout')!r}")
    nf, depth, n_trees = int(doc["n_features"]), int(doc["depth"]), int(doc["n_trees"])
    width = 1 << depth
    feat = _unb64(doc["feature"], np.int32, n_trees * width).reshape(n_trees, width)
    thr = _unb64(doc["threshold"], np.float32, n_trees * width)
    leaf = _unb64(doc["leaf"], np.float32, n_trees * width)
    base = _unb64(doc["base_margin"], np.float32, 1)[0]
    packed = np.empty((n_trees, width, 2), dtype=np.int32)
    packed[..., 0] = feat
    packed[..., 1] = thr.reshape(n_trees, width).view(np.int32)
    col = feat.reshape(-1).astype(np.int64)
    compiled = Forest(
        n_features=nf,
        depth=depth,
        n_trees=n_trees,
        base_margin=np.float32(base),
        col=col,
        thr=thr,
        node=(order_key(thr) << 32) | (col * BLOCK),
        packed=packed.view(np.int64).reshape(-1).copy(),
        leaf=leaf,
    )
    probe = doc["probe"]
    want = _unb64(probe["margins"], np.float32, int(probe["rows"])).astype(np.float64)
    got = compiled.margin_numpy(probe_rows(compiled, int(probe["rows"]), int(probe["seed"])))
    if not np.allclose(got.astype(np.float64), want, rtol=0.0, atol=atol):
        raise ValueError("the stored forest does not reproduce xgboost's probe margins")
    return compiled


def compile_checked(booster: xgb.Booster, atol: float = 1e-6) -> Forest | None:
    """:func:`compile_booster`, or None when the booster does not compile or the
    compiled margins differ from xgboost's by more than ``atol`` on
    :func:`probe_rows` (this also compiles or loads the kernel)."""
    try:
        compiled = compile_booster(booster)
    except ValueError:
        return None
    x = probe_rows(compiled)
    want = np.asarray(booster.inplace_predict(x, predict_type="margin"), np.float64)
    got = compiled.margin(x).astype(np.float64)
    if want.shape != got.shape or not np.allclose(got, want, rtol=0.0, atol=atol):
        return None
    return compiled

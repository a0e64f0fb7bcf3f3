"""An XGBoost tree ensemble compiled into flat numpy arrays and evaluated level by level.

:func:`compile_booster` reads a booster's JSON dump once and pads every tree to
a complete binary tree of the ensemble's depth ``D`` (heap order: node ``k``
has children ``2k`` and ``2k+1``; a leaf above depth ``D`` is copied into every
slot below it). :meth:`Forest.margin` then walks all rows x all trees at once,
one depth level per step (``D`` gathers, no Python loop over rows or trees),
and adds the leaf values tree by tree in float32 from the base margin, in
xgboost's order, so the margins equal ``inplace_predict(predict_type="margin")``
bit for bit (tested in ``tests/unit/test_risk_speed.py``).

Missing values follow each node's default direction: the input is widened to
``[x with NaN -> -inf | x with NaN -> +inf]`` and a node whose default is
right reads the second half, so "go right iff value >= threshold" covers both.

It is the dependency-free evaluator that ``bench/risk.py`` measures against
xgboost's own predictor; the model serves with whichever is faster (xgboost,
see ``docs/risk.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

_LOGISTIC = ("binary:logistic", "reg:logistic", "binary:logitraw")


@dataclass(frozen=True)
class Forest:
    """A compiled ensemble: ``n_trees`` complete trees of depth ``depth``.

    Per tree ``t`` and heap slot ``k`` in 1 .. 2**depth - 1: ``node[t, k]``
    packs the feature column (into the widened input, see the module docstring)
    and the float32 threshold; ``leaf[t, j]`` is the value of the ``j``-th slot
    of the last level.
    """

    n_features: int
    depth: int
    n_trees: int
    base_margin: np.float32
    node: I64  # (n_trees * 2**depth,) packed int32 column | float32 threshold
    leaf: F32  # (n_trees * 2**depth,)

    def margin(self, x: F32) -> F32:
        """Raw margins (float32) of rows ``x`` (n x n_features, float32, NaN = missing)."""
        n = x.shape[0]
        nf, width, n_trees = self.n_features, 1 << self.depth, self.n_trees
        if x.shape[1] != nf:
            raise ValueError(f"expected {nf} features, got {x.shape[1]}")
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
            np.take(self.node, slot, out=packed)
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
    """Compile a numerical-split gbtree booster with a logistic (or logit-raw) objective."""
    doc: dict[str, Any] = json.loads(bytes(booster.save_raw("json")))
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
    return Forest(
        n_features=n_features,
        depth=depth,
        n_trees=len(trees),
        base_margin=np.float32(base_margin),
        node=packed.view(np.int64).reshape(-1).copy(),
        leaf=leaf.reshape(-1),
    )


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

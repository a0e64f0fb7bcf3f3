"""DescribeInstances from the layer's instance index (:mod:`spotfleet_sim.index`).

Served by the index: ``InstanceIds`` and the filters ``tag:<key>``, ``tag-key``,
``instance-state-name`` and ``instance-id`` (values with moto's wildcards), with
``MaxResults``/``NextToken`` paging by reservation. The answer is moto's, byte for byte
but the request id: same reservations, grouping, order, fields and tokens. Anything
else (another filter, ``DryRun``, an unknown id or token, ``InstanceIds`` with
``MaxResults``) goes to moto, which gives its own answer or error. The control API's
``config`` ``describe_index: false`` sends every call to moto (for comparisons).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from spotfleet_sim import index, replies

if TYPE_CHECKING:
    from spotfleet_sim.dispatch import Request
    from spotfleet_sim.layer import MarketLayer

_FILTER_NAME = re.compile(r"^Filter\.(\d+)\.Name$")
_FILTER_VALUE = re.compile(r"^Filter\.(\d+)\.Value\.(\d+)$")
_INSTANCE_ID = re.compile(r"^InstanceId\.(\d+)$")


def parse(params: dict[str, str]) -> index.Query | None:
    """The index query for these request parameters, or None when moto must answer."""
    names: dict[int, str] = {}
    values: dict[int, dict[int, str]] = {}
    ids: dict[int, str] = {}
    max_results, token = 100, None
    for key, value in params.items():
        if key in ("Action", "Version"):
            continue
        if key == "MaxResults":
            try:
                max_results = int(value)
            except ValueError:
                return None
        elif key == "NextToken":
            token = value
        elif m := _FILTER_NAME.match(key):
            names[int(m.group(1))] = value
        elif m := _FILTER_VALUE.match(key):
            values.setdefault(int(m.group(1)), {})[int(m.group(2))] = value
        elif m := _INSTANCE_ID.match(key):
            ids[int(m.group(1))] = value
        else:
            return None  # DryRun or a parameter the index does not know
    if set(values) - set(names):
        return None  # a filter without a name: moto's error
    if ids and "MaxResults" in params:
        return None  # moto's InvalidParameterCombination
    filters: dict[str, tuple[str, ...]] = {}  # as moto reads them: a repeated name wins last
    for n in sorted(names):
        if not index.supported_filter(names[n]):
            return None
        given = values.get(n, {})
        filters[names[n]] = tuple(given[i] for i in sorted(given))
    return index.Query(
        instance_ids=tuple(ids[i] for i in sorted(ids)),
        filters=tuple(filters.items()),
        max_results=max_results,
        next_token=token,
    )


def handle(layer: MarketLayer, req: Request, environ: dict[str, Any]) -> replies.Reply | None:
    if not layer.describe_index:
        return None
    query = parse(req.params)
    if query is None:
        return None
    with layer.state_lock:
        layer.after_change(req.account, req.region, ())  # anything moto added meanwhile
        body = layer.index.describe(req.account, req.region, query)
    if body is None:
        return None
    return replies.ok(layer, req, body)

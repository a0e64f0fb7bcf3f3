"""DescribeSpotPriceHistory from real price history, on the layer's timeline.

AWS semantics: every change in (StartTime, EndTime] plus the price in effect at
StartTime; EndTime capped at now; no StartTime means the last 90 days; the filters
``instance-type``, ``availability-zone`` and ``product-description`` (with
wildcards); newest first; ``MaxResults`` 5..1000 and a ``NextToken`` that pins "now".
Times in the request and the answer are reported times (never later than the wall
clock); the window is read from the history through the timeline's map
(:mod:`spotfleet_sim.timeline`).
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from spotfleet_sim import market, replies, wire

if TYPE_CHECKING:
    from spotfleet_sim.dispatch import Request
    from spotfleet_sim.layer import MarketLayer

NINETY_DAYS = timedelta(days=90)
FILTERS = ("instance-type", "availability-zone", "product-description")


class QueryCache:
    """The last few answered windows (history rows, by filter and history window), so
    that the pages of one paginated query read the history once."""

    def __init__(self, size: int = 8) -> None:
        self._lock = threading.Lock()
        self._rows: OrderedDict[tuple[Any, ...], list[market.PriceRow]] = OrderedDict()
        self._size = size

    def rows(
        self,
        history: market.PriceHistory,
        window: tuple[float, float],
        types: list[str],
        zones: list[str],
        products: list[str],
    ) -> list[market.PriceRow]:
        key = (tuple(types), tuple(zones), tuple(products), *window)
        with self._lock:
            cached = self._rows.get(key)
        if cached is None:
            cached = history.query(window[0], window[1], types, zones, products)
            with self._lock:
                self._rows[key] = cached
                while len(self._rows) > self._size:
                    self._rows.popitem(last=False)
        return cached

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


def handle(layer: MarketLayer, req: Request, environ: dict[str, Any]) -> replies.Reply:
    p = wire.nest(req.params)
    types = list(p.get("InstanceType", []))
    products = list(p.get("ProductDescription", []))
    zones = [p["AvailabilityZone"]] if p.get("AvailabilityZone") else []
    for flt in p.get("Filter", []):
        name, values = flt.get("Name"), list(flt.get("Value", []))
        if name == "instance-type":
            types += values
        elif name == "availability-zone":
            zones += values
        elif name == "product-description":
            products += values
        else:
            return replies.fail(
                layer,
                req,
                "InvalidParameterValue",
                f"The filter '{name}' is not supported by the spotfleet sim (supported: "
                f"{', '.join(FILTERS)})",
            )
    max_results = int(p.get("MaxResults") or 1000)
    if not 5 <= max_results <= 1000:
        return replies.fail(
            layer,
            req,
            "InvalidParameterValue",
            f"Value ( {max_results} ) for parameter maxResults is invalid. "
            "Expecting a value between 5 and 1000.",
        )
    view = layer.timeline.view()
    offset, now = 0, view.now.reported_dt
    if p.get("NextToken"):
        try:
            token = json.loads(base64.urlsafe_b64decode(p["NextToken"]))
            offset, now = int(token["o"]), datetime.fromtimestamp(float(token["n"]), UTC)
        except (ValueError, KeyError, TypeError):
            return replies.fail(layer, req, "InvalidNextToken", "The token is invalid.")
    end = min(wire.parse_time(p["EndTime"]), now) if p.get("EndTime") else now
    start = wire.parse_time(p["StartTime"]) if p.get("StartTime") else now - NINETY_DAYS
    rows: list[market.PriceRow] = []
    if req.region == layer.history.region:
        window = (view.to_history(start.timestamp()), view.to_history(end.timestamp()))
        rows = layer.price_queries.rows(layer.history, window, types, zones, products)
    page = rows[offset : offset + max_results]
    limit = now.timestamp()
    out: dict[str, Any] = {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": r.zone,
                "InstanceType": r.instance_type,
                "ProductDescription": r.product,
                "SpotPrice": r.price,
                "Timestamp": min(view.to_reported(r.at), limit),
            }
            for r in page
        ],
        "NextToken": "",
    }
    if offset + max_results < len(rows):
        out["NextToken"] = base64.urlsafe_b64encode(
            json.dumps({"o": offset + max_results, "n": now.timestamp()}).encode()
        ).decode()
    return replies.ok(layer, req, wire.ec2_response("DescribeSpotPriceHistory", out))

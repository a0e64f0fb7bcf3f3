"""The market layer: WSGI middleware in front of moto's server app, on one port.

It answers ``DescribeSpotPriceHistory``, ``GetSpotPlacementScores`` and
``CreateFleet(Type=instant)`` itself, guards ``RunInstances`` (capacity,
idempotency), injects faults into any call, logs every call, serves the control
API under ``/_spotfleet/`` and passes everything else to moto untouched. When
moto cannot serve a call (``NotImplementedError`` or a crash) the caller gets a
clear, non-retried error naming the operation instead of moto's HTML page, and
the call is flagged in the log.

Sim time vs history: the price history is replayed with a fixed ``offset``
(sim time = history time + offset). At start (and on reset) the sim clock reads
the wall clock and the offset maps it to ``history_start`` (by default 30 days
after the first price in the data); the clock then runs at ``speed``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from spotfleet_sim import backend, calllog, clock, faults, fleet, interruptions, market, wire

CONTROL_PREFIX = "/_spotfleet/"
NINETY_DAYS = timedelta(days=90)
StartResponse = Callable[..., Any]


@dataclass
class Options:
    """How the stand-in cloud starts (and what reset returns to)."""

    prices: Path | None = None  # CSV in DescribeSpotPriceHistory layout; None = bundled 2021
    price_region: str | None = None
    history_start: datetime | None = None  # history point the clock starts at
    speed: float = 1.0
    notice_seconds: float = interruptions.DEFAULT_NOTICE_SECONDS
    seed: int = 0


@dataclass
class Request:
    """What the layer needs to know about an AWS call."""

    service: str
    region: str
    account: str
    operation: str
    protocol: str  # "query" | "json" | "rest"
    params: dict[str, str] = field(default_factory=dict)


class MarketLayer:
    """The WSGI app: ``MarketLayer(moto_app, Options())``."""

    def __init__(
        self, moto_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]], options: Options
    ) -> None:
        self.moto_app = moto_app
        self.options = options
        self.history = market.PriceHistory.load(options.prices, options.price_region)
        self._scores: market.PlacementScores | None = None
        self._advisor: market.Advisor | None = None
        self._on_demand: dict[str, dict[str, float]] = {}
        self._data_lock = threading.Lock()
        self.log = calllog.CallLog()
        self.faults = faults.FaultBook(options.seed)
        self.clock = clock.SimClock(speed=options.speed)
        self.offset = timedelta(0)
        self.unavailable: set[tuple[str, str, str]] = set()
        #: spot CreateFleet requests still to come whose first pool runs dry (see
        #: ``dry_next_spot``): the pool is marked unavailable and the request gets its ICE
        self.dry_next_spot = 0
        self._idem: OrderedDict[tuple[str, str, str, str], tuple[str, int, bytes]] = OrderedDict()
        self._launch_lock = threading.RLock()
        self._cache_lock = threading.Lock()
        self._query_cache: OrderedDict[tuple[Any, ...], list[market.PriceRow]] = OrderedDict()
        self.interrupter = interruptions.Interrupter(
            self.clock, self.log, self.advisor, options.notice_seconds
        )
        self._reset_clock()

    # -- data (placement scores, advisor and on-demand prices load on first use) ----
    def scores(self) -> market.PlacementScores:
        with self._data_lock:
            if self._scores is None:
                self._scores = market.PlacementScores.load()
            return self._scores

    def advisor(self) -> market.Advisor:
        with self._data_lock:
            if self._advisor is None:
                self._advisor = market.Advisor.load()
            return self._advisor

    def on_demand(self, region: str) -> dict[str, float]:
        with self._data_lock:
            if region not in self._on_demand:
                self._on_demand[region] = market.on_demand_prices(region)
            return self._on_demand[region]

    # -- clock ---------------------------------------------------------------
    def default_history_start(self) -> datetime:
        first = datetime.fromtimestamp(self.history.first, UTC)
        last = datetime.fromtimestamp(self.history.last, UTC)
        return min(first + timedelta(days=30), last)

    def _reset_clock(self) -> None:
        now = datetime.now(UTC)
        self.clock.set(now, self.options.speed)
        start = self.options.history_start or self.default_history_start()
        self.offset = now - start

    def history_time(self, sim: datetime) -> datetime:
        return sim - self.offset

    def clock_json(self) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "now": now.isoformat(),
            "speed": self.clock.speed,
            "history_now": self.history_time(now).isoformat(),
            "offset_seconds": self.offset.total_seconds(),
            "history_first": datetime.fromtimestamp(self.history.first, UTC).isoformat(),
            "history_last": datetime.fromtimestamp(self.history.last, UTC).isoformat(),
        }

    def reset(self) -> None:
        """Back to the start: empty moto, no faults, all pools available, clock re-anchored."""
        with self._launch_lock:
            backend.reset_all()
            self.faults.clear(self.options.seed)
            self.unavailable.clear()
            self._idem.clear()
            self.log.clear()
            self._reset_clock()
            self.interrupter.reset(self.options.notice_seconds)

    # -- WSGI ------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path.startswith(CONTROL_PREFIX) or path.rstrip("/") == CONTROL_PREFIX.rstrip("/"):
            return self._control(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if path.startswith("/moto-api"):
            return self._passthrough(environ, start_response, None)
        req = self._describe(environ, body)
        fault = self.faults.draw(req.operation)
        if fault is not None:
            status, payload = self._error(req, *fault)
            self._record(req, "layer", status, fault[0], injected=True)
            return self._respond(start_response, status, payload, req)
        handler = self._handlers().get((req.service, req.operation))
        if handler is not None and req.protocol == "query":
            try:
                result = handler(req, environ, start_response)
            except backend.ServiceError as exc:
                code = str(getattr(exc, "code", "InvalidParameterValue"))
                status, payload = wire.ec2_error(code, str(getattr(exc, "message", exc)))
                self._record(req, "layer", status, code)
                return self._respond(start_response, status, payload, req)
            except ValueError as exc:
                status, payload = wire.ec2_error("InvalidParameterValue", str(exc))
                self._record(req, "layer", status, "InvalidParameterValue")
                return self._respond(start_response, status, payload, req)
            except NotImplementedError as exc:
                message = f"{req.service}.{req.operation} is not implemented by moto: {exc}"
                return self._moto_failed(req, start_response, message, True)
            except Exception as exc:
                detail = "".join(traceback.format_exception(exc))
                status, payload = wire.ec2_error(
                    "InternalError", f"spotfleet sim failed on {req.operation}: {exc!r}"
                )
                self._record(req, "layer", status, "InternalError", failure=detail)
                return self._respond(start_response, status, payload, req)
            if result is not None:
                return result
        return self._passthrough(environ, start_response, req)

    def _handlers(self) -> dict[tuple[str, str], Callable[..., Iterable[bytes] | None]]:
        return {
            ("ec2", "DescribeSpotPriceHistory"): self._describe_spot_price_history,
            ("ec2", "GetSpotPlacementScores"): self._get_spot_placement_scores,
            ("ec2", "RunInstances"): self._run_instances,
            ("ec2", "CreateFleet"): self._create_fleet,
        }

    def _describe(self, environ: dict[str, Any], body: bytes) -> Request:
        auth = environ.get("HTTP_AUTHORIZATION", "") or ""
        service, region, access_key = "unknown", "us-east-1", None
        m = re.search(r"Credential=([^/,\s]+)/\d+/([^/]+)/([^/]+)/", auth)
        if m:
            access_key, region, service = m.group(1), m.group(2), m.group(3).lower()
        if service == "eventbridge":
            service = "events"
        account = backend.account_for(access_key, environ.get("HTTP_X_MOTO_ACCOUNT_ID"))
        ctype = environ.get("CONTENT_TYPE", "") or ""
        target = environ.get("HTTP_X_AMZ_TARGET", "") or ""
        if target:
            return Request(service, region, account, target.split(".")[-1], "json")
        if ctype.startswith("application/x-www-form-urlencoded") or environ.get("QUERY_STRING"):
            params = wire.parse_query(body) if body else {}
            if not params and environ.get("QUERY_STRING"):
                params = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
            if "Action" in params:
                return Request(service, region, account, params["Action"], "query", params)
        op = f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO', '')}"
        return Request(service, region, account, op, "rest")

    # -- responses and the log -------------------------------------------------
    def _error(self, req: Request, code: str, message: str) -> tuple[int, bytes]:
        if req.protocol == "json":
            return wire.json_error(code, message)
        if req.service == "ec2":
            return wire.ec2_error(code, message)
        return wire.query_error(code, message)

    @staticmethod
    def _respond(
        start_response: StartResponse,
        status: int,
        payload: bytes,
        req: Request | None,
        ctype: str | None = None,
    ) -> list[bytes]:
        if ctype is None:
            ctype = "application/x-amz-json-1.1" if req and req.protocol == "json" else "text/xml"
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(payload))),
            ("x-amzn-RequestId", wire.request_id()),
        ]
        start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
        return [payload]

    def _record(
        self,
        req: Request,
        handled_by: str,
        status: int,
        error_code: str | None = None,
        injected: bool = False,
        unimplemented: bool = False,
        detail: str | None = None,
        failure: str | None = None,
    ) -> None:
        self.log.append(
            wall_time=time.time(),
            sim_time=self.clock.now().isoformat(),
            service=req.service,
            region=req.region,
            operation=req.operation,
            mutating=calllog.is_mutating(req.operation),
            handled_by=handled_by,
            status=status,
            error_code=error_code,
            injected=injected,
            unimplemented=unimplemented,
            detail=detail,
            failure=failure,
        )

    def _call_moto(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def start(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = headers
            return chunks.append

        result = self.moto_app(environ, start)
        try:
            for chunk in result:
                chunks.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return captured.get("status", 500), captured.get("headers", []), b"".join(chunks)

    def _passthrough(
        self, environ: dict[str, Any], start_response: StartResponse, req: Request | None
    ) -> Iterable[bytes]:
        try:
            status, headers, body = self._call_moto(environ)
        except NotImplementedError as exc:
            if req is None:
                raise
            return self._moto_failed(
                req,
                start_response,
                f"{req.service}.{req.operation} is not implemented by moto: {exc}",
                True,
            )
        except Exception as exc:
            if req is None:
                raise
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            message = f"moto failed on {req.service}.{req.operation}: {detail}"
            return self._moto_failed(
                req, start_response, message, False, "".join(traceback.format_exception(exc))
            )
        if req is not None:
            ctype = dict((k.lower(), v) for k, v in headers).get("content-type", "")
            if status >= 500 and "html" in ctype:
                return self._moto_failed(
                    req,
                    start_response,
                    f"moto failed on {req.service}.{req.operation} (HTTP {status})",
                    True,
                )
            self._record(req, "moto", status, _error_code(body) if status >= 400 else None)
        start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
        return [body]

    def _moto_failed(
        self,
        req: Request,
        start_response: StartResponse,
        message: str,
        unimplemented: bool,
        failure: str | None = None,
    ) -> list[bytes]:
        code = "NotImplementedBySimulator" if unimplemented else "InternalError"
        status, payload = (
            wire.json_error(code, message)
            if req.protocol == "json"
            else wire.ec2_error(code, message)
        )
        self._record(
            req, "moto", status, code, unimplemented=unimplemented, detail=message, failure=failure
        )
        return self._respond(start_response, status, payload, req)

    def _ok(
        self, req: Request, start_response: StartResponse, payload: bytes, detail: str | None = None
    ) -> list[bytes]:
        self._record(req, "layer", 200, detail=detail)
        return self._respond(start_response, 200, payload, req)

    def _fail(
        self, req: Request, start_response: StartResponse, code: str, message: str
    ) -> list[bytes]:
        status, payload = wire.ec2_error(code, message)
        self._record(req, "layer", status, code, detail=message)
        return self._respond(start_response, status, payload, req)

    # -- DescribeSpotPriceHistory ------------------------------------------------
    def _describe_spot_price_history(
        self, req: Request, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
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
                return self._fail(
                    req,
                    start_response,
                    "InvalidParameterValue",
                    f"The filter '{name}' is not supported by the spotfleet sim (supported: "
                    "instance-type, availability-zone, product-description)",
                )
        max_results = int(p.get("MaxResults") or 1000)
        if not 5 <= max_results <= 1000:
            return self._fail(
                req,
                start_response,
                "InvalidParameterValue",
                f"Value ( {max_results} ) for parameter maxResults is invalid. "
                "Expecting a value between 5 and 1000.",
            )
        offset, now = 0, self.clock.now()
        if p.get("NextToken"):
            try:
                token = json.loads(base64.urlsafe_b64decode(p["NextToken"]))
                offset, now = int(token["o"]), datetime.fromtimestamp(float(token["n"]), UTC)
            except (ValueError, KeyError, TypeError):
                return self._fail(req, start_response, "InvalidNextToken", "The token is invalid.")
        end = min(_ts(p["EndTime"]), now) if p.get("EndTime") else now
        start = _ts(p["StartTime"]) if p.get("StartTime") else now - NINETY_DAYS
        rows: list[market.PriceRow] = []
        if req.region == self.history.region:
            window = (start.timestamp(), end.timestamp(), self.offset.total_seconds())
            key = (tuple(types), tuple(zones), tuple(products), *window)
            with self._cache_lock:
                cached = self._query_cache.get(key)
            if cached is None:
                cached = self.history.query(
                    self.history_time(start).timestamp(),
                    self.history_time(end).timestamp(),
                    types,
                    zones,
                    products,
                )
                with self._cache_lock:
                    self._query_cache[key] = cached
                    while len(self._query_cache) > 8:
                        self._query_cache.popitem(last=False)
            rows = cached
        page = rows[offset : offset + max_results]
        shift = self.offset.total_seconds()
        out: dict[str, Any] = {
            "SpotPriceHistory": [
                {
                    "AvailabilityZone": r.zone,
                    "InstanceType": r.instance_type,
                    "ProductDescription": r.product,
                    "SpotPrice": r.price,
                    "Timestamp": r.at + shift,
                }
                for r in page
            ],
            "NextToken": "",
        }
        if offset + max_results < len(rows):
            out["NextToken"] = base64.urlsafe_b64encode(
                json.dumps({"o": offset + max_results, "n": now.timestamp()}).encode()
            ).decode()
        return self._ok(req, start_response, wire.ec2_response("DescribeSpotPriceHistory", out))

    # -- GetSpotPlacementScores --------------------------------------------------
    def _get_spot_placement_scores(
        self, req: Request, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        p = wire.nest(req.params)
        if "InstanceRequirementsWithMetadata" in p:
            message = (
                "GetSpotPlacementScores with InstanceRequirementsWithMetadata is not "
                "implemented by the spotfleet sim; pass InstanceTypes"
            )
            status, payload = wire.ec2_error("NotImplementedBySimulator", message)
            self._record(
                req,
                "layer",
                status,
                "NotImplementedBySimulator",
                unimplemented=True,
                detail=message,
            )
            return self._respond(start_response, status, payload, req)
        types = list(p.get("InstanceType", []))
        if not types:
            return self._fail(
                req,
                start_response,
                "MissingParameter",
                "The request must contain the parameter InstanceTypes or "
                "InstanceRequirementsWithMetadata",
            )
        if not p.get("TargetCapacity"):
            return self._fail(
                req,
                start_response,
                "MissingParameter",
                "The request must contain the parameter TargetCapacity",
            )
        single = str(p.get("SingleAvailabilityZone", "false")).lower() == "true"
        scores = self.scores()
        regions = list(p.get("RegionName", [])) or sorted({r for r in _regions_of(scores)})
        results: list[dict[str, Any]] = []
        for region in regions:
            names = {v: k for k, v in market.zone_ids(region).items()}
            zone_scores: dict[str, int] = {}
            for zone_id in scores.zone_ids(region):
                best: int | None = None
                for itype in types:
                    s = scores.score(region, zone_id, itype)
                    if s is None:
                        continue
                    zone = names.get(zone_id)
                    if zone and self._pool_unavailable(itype, zone, fleet.SPOT):
                        s = 1
                    best = s if best is None else max(best, s)
                if best is not None:
                    zone_scores[zone_id] = best
            if not zone_scores:
                continue
            if single:
                results += [
                    {"Region": region, "AvailabilityZoneId": z, "Score": s}
                    for z, s in zone_scores.items()
                ]
            else:
                results.append({"Region": region, "Score": max(zone_scores.values())})
        results.sort(key=lambda r: (-r["Score"], r["Region"], r.get("AvailabilityZoneId", "")))
        max_results = int(p.get("MaxResults") or 1000)
        offset = int(p.get("NextToken") or 0) if str(p.get("NextToken", "0")).isdigit() else 0
        out: dict[str, Any] = {"SpotPlacementScores": results[offset : offset + max_results]}
        if offset + max_results < len(results):
            out["NextToken"] = str(offset + max_results)
        return self._ok(req, start_response, wire.ec2_response("GetSpotPlacementScores", out))

    # -- capacity ---------------------------------------------------------------
    def _pool_unavailable(self, instance_type: str, zone: str, market_type: str) -> bool:
        return (instance_type, zone, market_type) in self.unavailable

    def _zones_with(self, instance_type: str, market_type: str, region: str) -> list[str]:
        """Zones of the region where the pool is not marked unavailable (for ICE messages)."""
        return [
            z
            for z in sorted(market.zone_ids(region))
            if not self._pool_unavailable(instance_type, z, market_type)
        ]

    def set_capacity(self, pools: list[dict[str, str]], available: bool) -> None:
        """Mark pools (instance_type, zone, market: spot|on-demand|*) (un)available."""
        keys: list[tuple[str, str, str]] = []
        for pool in pools:
            itype, zone = pool.get("instance_type"), pool.get("zone")
            mkt = pool.get("market", "*")
            if not itype or not zone:
                raise ValueError("each pool needs instance_type and zone")
            if mkt not in (fleet.SPOT, fleet.ON_DEMAND, "*"):
                raise ValueError("market must be spot, on-demand or *")
            for m in (fleet.SPOT, fleet.ON_DEMAND) if mkt == "*" else (mkt,):
                keys.append((itype, zone, m))
        with self._launch_lock:
            for key in keys:
                if available:
                    self.unavailable.discard(key)
                else:
                    self.unavailable.add(key)

    # -- idempotency --------------------------------------------------------------
    def _idempotent(
        self, req: Request, start_response: StartResponse
    ) -> tuple[tuple[str, str, str, str] | None, str, list[bytes] | None]:
        token = req.params.get("ClientToken")
        fingerprint = hashlib.sha256(
            json.dumps(sorted((k, v) for k, v in req.params.items() if k != "ClientToken")).encode()
        ).hexdigest()
        if not token:
            return None, fingerprint, None
        key = (req.account, req.region, req.operation, token)
        hit = self._idem.get(key)
        if hit is None:
            return key, fingerprint, None
        if hit[0] != fingerprint:
            return (
                key,
                fingerprint,
                self._fail(
                    req,
                    start_response,
                    "IdempotentParameterMismatch",
                    "Arguments on this idempotent request are inconsistent with arguments used "
                    f"in previous request(s) with client token {token}.",
                ),
            )
        self._record(req, "layer", hit[1], detail="idempotent replay of ClientToken")
        return key, fingerprint, self._respond(start_response, hit[1], hit[2], req)

    def _remember(
        self, key: tuple[str, str, str, str] | None, fingerprint: str, status: int, body: bytes
    ) -> None:
        if key is None:
            return
        self._idem[key] = (fingerprint, status, body)
        while len(self._idem) > 20_000:
            self._idem.popitem(last=False)

    # -- RunInstances -------------------------------------------------------------
    def _run_instances(
        self, req: Request, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        with self._launch_lock:
            key, fingerprint, replay = self._idempotent(req, start_response)
            if replay is not None:
                return replay
            ec2 = backend.ec2(req.account, req.region)
            p = wire.nest(req.params)
            tmpl: dict[str, Any] = {}
            if p.get("LaunchTemplate"):
                tmpl, _spec = backend.launch_template_data(ec2, p["LaunchTemplate"])
            itype = p.get("InstanceType") or tmpl.get("InstanceType") or "m1.small"
            market_type = (
                p.get("InstanceMarketOptions") or tmpl.get("InstanceMarketOptions") or {}
            ).get("MarketType") or fleet.ON_DEMAND
            market_type = fleet.SPOT if market_type == "spot" else fleet.ON_DEMAND
            zone = _zone_of(ec2, req.region, p, tmpl)
            if self._pool_unavailable(itype, zone, market_type):
                return self._fail(
                    req,
                    start_response,
                    "InsufficientInstanceCapacity",
                    fleet.ice_message(
                        itype, zone, self._zones_with(itype, market_type, req.region)
                    ),
                )
            extra = _from_template(req.params, tmpl, market_type)
            if extra:  # moto ignores the template's market and placement: say them explicitly
                raw = urlencode(dict(req.params, **extra)).encode()
                environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))
            status, headers, body = self._call_moto(environ)
            if status >= 500 and "html" in dict((k.lower(), v) for k, v in headers).get(
                "content-type", ""
            ):
                return self._moto_failed(
                    req, start_response, "moto failed on ec2.RunInstances", True
                )
            self._record(req, "moto", status, _error_code(body) if status >= 400 else None)
            if status == 200:
                for iid in re.findall(rb"<instanceId>(i-[0-9a-f]+)</instanceId>", body):
                    if market_type == fleet.SPOT:
                        self.interrupter.track(
                            iid.decode(),
                            interruptions.Tracked(req.account, req.region, itype, zone),
                        )
                self._remember(key, fingerprint, status, body)
            start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
            return [body]

    # -- CreateFleet (type instant) ---------------------------------------------------
    def _create_fleet(
        self, req: Request, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        if req.params.get("Type", "maintain") != "instant":
            return None  # maintain/request fleets: moto's behaviour
        with self._launch_lock:
            key, fingerprint, replay = self._idempotent(req, start_response)
            if replay is not None:
                return replay
            payload = self._instant_fleet(req)
            self._remember(key, fingerprint, 200, payload)
            return self._ok(req, start_response, payload)

    def _instant_fleet(self, req: Request) -> bytes:
        p = wire.nest(req.params)
        ec2 = backend.ec2(req.account, req.region)
        history_now = self.history_time(self.clock.now()).timestamp()
        od_prices = self.on_demand(req.region)
        scores = self.scores()
        zone_ids = market.zone_ids(req.region)
        cands: list[fleet.Candidate] = []
        template_of: dict[int, dict[str, Any]] = {}
        for config in p.get("LaunchTemplateConfigs", []):
            data, resolved = backend.launch_template_data(
                ec2, config.get("LaunchTemplateSpecification", {})
            )
            shown = {
                "LaunchTemplateId": resolved["LaunchTemplateId"],
                "Version": resolved["Version"],
            }
            for override in config.get("Overrides", []) or [{}]:
                if "InstanceRequirements" in override:
                    raise ValueError(
                        "CreateFleet overrides with InstanceRequirements are not supported "
                        "by the spotfleet sim; list InstanceType overrides"
                    )
                itype = override.get("InstanceType") or data.get("InstanceType")
                if not itype:
                    raise ValueError(
                        "an override without InstanceType needs a launch template with one"
                    )
                subnet = override.get("SubnetId") or _template_subnet(data)
                zone = override.get("AvailabilityZone") or (
                    backend.subnet_zone(ec2, subnet) if subnet else None
                )
                zone = (
                    zone
                    or (data.get("Placement") or {}).get("AvailabilityZone")
                    or f"{req.region}a"
                )
                spot_price = self.history.price_at(itype, zone, history_now)
                cand = fleet.Candidate(
                    index=len(cands),
                    template_spec=shown,
                    override=dict(override),
                    instance_type=itype,
                    zone=zone,
                    subnet_id=subnet,
                    image_id=override.get("ImageId") or data.get("ImageId"),
                    weight=float(override.get("WeightedCapacity") or 1.0),
                    priority=float(override["Priority"]) if override.get("Priority") else None,
                    max_price=float(override["MaxPrice"]) if override.get("MaxPrice") else None,
                    spot_price=spot_price,
                    on_demand_price=od_prices.get(itype),
                    score=scores.score(req.region, zone_ids.get(zone, ""), itype) or 5,
                )
                cands.append(cand)
                template_of[cand.index] = data
        if not cands:
            raise ValueError("CreateFleet needs at least one LaunchTemplateConfigs entry")
        tcs = p.get("TargetCapacitySpecification", {})
        total = float(tcs.get("TotalTargetCapacity") or 0)
        od_units = float(tcs.get("OnDemandTargetCapacity") or 0)
        spot_units = float(tcs.get("SpotTargetCapacity") or 0)
        default = tcs.get("DefaultTargetCapacityType") or fleet.ON_DEMAND
        rest = max(0.0, total - od_units - spot_units)
        if default == fleet.SPOT:
            spot_units += rest
        else:
            od_units += rest
        spot_opts, od_opts = p.get("SpotOptions", {}), p.get("OnDemandOptions", {})

        def refuse(market_type: str) -> Callable[[fleet.Candidate], tuple[str, str] | None]:
            def check(c: fleet.Candidate) -> tuple[str, str] | None:
                if market_type == fleet.SPOT and self.dry_next_spot > 0:
                    self.dry_next_spot -= 1
                    self.unavailable.add((c.instance_type, c.zone, market_type))
                if self._pool_unavailable(c.instance_type, c.zone, market_type):
                    return "InsufficientInstanceCapacity", fleet.ice_message(
                        c.instance_type,
                        c.zone,
                        self._zones_with(c.instance_type, market_type, req.region),
                    )
                if (
                    market_type == fleet.SPOT
                    and c.max_price is not None
                    and c.spot_price is not None
                    and c.spot_price > c.max_price
                ):
                    return "SpotMaxPriceTooLow", (
                        f"Your Spot request price of {c.max_price} is lower than the minimum "
                        f"required Spot request fulfillment price of {c.spot_price}."
                    )
                return None

            return check

        fleet_id = fleet.new_fleet_id()
        instances: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for market_type, units, strategy, opts in (
            (
                fleet.ON_DEMAND,
                od_units,
                od_opts.get("AllocationStrategy") or "lowest-price",
                od_opts,
            ),
            (
                fleet.SPOT,
                spot_units,
                spot_opts.get("AllocationStrategy") or "price-capacity-optimized",
                spot_opts,
            ),
        ):
            if units <= 0:
                continue
            alloc = fleet.allocate(
                cands,
                market_type,
                strategy,
                units,
                refuse(market_type),
                pools_to_use=int(opts.get("InstancePoolsToUseCount") or 1),
            )
            min_units = float(opts.get("MinTargetCapacity") or 0)
            for cand, code, message in alloc.errors:
                errors.append(
                    {
                        "LaunchTemplateAndOverrides": _lto(cand),
                        "Lifecycle": market_type,
                        "ErrorCode": code,
                        "ErrorMessage": message,
                    }
                )
            if min_units and alloc.units < min_units:
                continue
            for cand, count in alloc.launches:
                ids = self._launch(
                    req, ec2, cand, template_of[cand.index], count, market_type, fleet_id, p
                )
                instances.append(
                    {
                        "LaunchTemplateAndOverrides": _lto(cand),
                        "Lifecycle": market_type,
                        "InstanceIds": ids,
                        "InstanceType": cand.instance_type,
                    }
                )
        return wire.ec2_response(
            "CreateFleet", {"FleetId": fleet_id, "Errors": errors, "Instances": instances}
        )

    def _launch(
        self,
        req: Request,
        ec2: Any,
        cand: fleet.Candidate,
        data: dict[str, Any],
        count: int,
        market_type: str,
        fleet_id: str,
        p: dict[str, Any],
    ) -> list[str]:
        tags: dict[str, dict[str, str]] = {}
        for spec in list(data.get("TagSpecifications") or []) + list(p.get("TagSpecification", [])):
            rtype = spec.get("ResourceType")
            for tag in spec.get("Tag", spec.get("Tags", [])) or []:
                tags.setdefault(rtype, {})[tag["Key"]] = tag.get("Value", "")
        instance_tags = dict(tags.get("instance", {}))
        instance_tags["aws:ec2:fleet-id"] = fleet_id
        kwargs: dict[str, Any] = {
            "instance_type": cand.instance_type,
            "is_instance_type_default": False,
            "region_name": req.region,
            "tags": {"instance": instance_tags, "volume": tags.get("volume", {})},
            "launch_template": {
                "LaunchTemplateId": cand.template_spec["LaunchTemplateId"],
                "Version": cand.template_spec["Version"],
            },
        }
        if cand.subnet_id:
            kwargs["subnet_id"] = cand.subnet_id
        else:
            kwargs["placement"] = cand.zone
        if market_type == fleet.SPOT:
            kwargs["instance_market_options"] = {"MarketType": "spot"}
        reservation = ec2.run_instances(
            cand.image_id, count, None, list(data.get("SecurityGroups") or []), **kwargs
        )
        ids = [inst.id for inst in reservation.instances]
        if market_type == fleet.SPOT:
            for iid in ids:
                self.interrupter.track(
                    iid,
                    interruptions.Tracked(req.account, req.region, cand.instance_type, cand.zone),
                )
        return ids

    # -- control API ------------------------------------------------------------------
    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")[len(CONTROL_PREFIX) :].strip("/")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            status, result = self._control_route(method, path, body, query)
        except (ValueError, KeyError, TypeError, interruptions.InterruptionError) as exc:
            status, result = 400, {"error": str(exc)}
        payload = json.dumps(result).encode()
        return self._respond(start_response, status, payload, None, "application/json")

    def _control_route(
        self, method: str, path: str, body: dict[str, Any], query: dict[str, str]
    ) -> tuple[int, Any]:
        if path == "health":
            return 200, {"ok": True, "history_region": self.history.region}
        if path == "reset" and method == "POST":
            self.reset()
            return 200, {"ok": True, "clock": self.clock_json()}
        if path == "clock":
            if method == "POST":
                if body.get("advance_seconds") is not None:
                    self.clock.advance(float(body["advance_seconds"]))
                if body.get("now") is not None or body.get("speed") is not None:
                    self.clock.set(
                        _ts(body["now"]) if body.get("now") else None,
                        float(body["speed"]) if body.get("speed") is not None else None,
                    )
                if body.get("history_time") is not None:
                    self.offset = self.clock.now() - _ts(body["history_time"])
                    with self._cache_lock:
                        self._query_cache.clear()
            return 200, self.clock_json()
        if path == "capacity":
            if method == "POST":
                if body.get("dry_next_spot") is not None:
                    with self._launch_lock:
                        self.dry_next_spot = max(0, int(body["dry_next_spot"]))
                self.set_capacity(list(body.get("pools", [])), bool(body.get("available", False)))
            return 200, {
                "unavailable": [
                    {"instance_type": t, "zone": z, "market": m}
                    for t, z, m in sorted(self.unavailable)
                ]
            }
        if path == "faults":
            if method == "POST":
                self.faults.add(
                    faults.FaultRule(
                        operation=str(body.get("operation", "*")),
                        code=str(body["code"]),
                        count=int(body["count"]) if body.get("count") is not None else None,
                        probability=float(body["probability"])
                        if body.get("probability") is not None
                        else None,
                        message=body.get("message"),
                    )
                )
            elif method == "DELETE":
                self.faults.clear()
            return 200, {"faults": [r.to_json() for r in self.faults.rules()]}
        if path == "interrupt" and method == "POST":
            notice = body.get("notice_seconds")
            return 200, self.interrupter.interrupt(
                list(body["instance_ids"]),
                str(body.get("kind", "both")),
                float(notice) if notice is not None else None,
            )
        if path == "interruptions":
            return 200, {
                "pending": self.interrupter.pending(),
                "notice_seconds": self.interrupter.notice_seconds,
            }
        if path == "hazard" and method == "POST":
            seed = body.get("seed")
            self.interrupter.set_hazard(
                bool(body["enabled"]),
                float(body.get("multiplier", 1.0)),
                int(seed) if seed is not None else None,
            )
            return 200, {
                "enabled": self.interrupter.hazard_enabled,
                "multiplier": self.interrupter.hazard_multiplier,
            }
        if path == "config":
            if method == "POST" and body.get("notice_seconds") is not None:
                notice = float(body["notice_seconds"])
                if notice < 0:
                    raise ValueError("notice_seconds must be >= 0")
                self.interrupter.notice_seconds = notice
            return 200, {"notice_seconds": self.interrupter.notice_seconds}
        if path == "log":
            since = int(query.get("since", "0"))
            records = self.log.since(since)
            return 200, {
                "records": [r.to_json() for r in records],
                "last_seq": records[-1].seq if records else since,
            }
        return 404, {"error": f"no control endpoint {method} /{CONTROL_PREFIX.strip('/')}/{path}"}


_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def _ts(text: str) -> datetime:
    """ISO-8601 (or epoch seconds) to an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _error_code(body: bytes) -> str | None:
    m = re.search(rb"<Code>([^<]+)</Code>", body)
    if m:
        return m.group(1).decode()
    m = re.search(rb'"__type"\s*:\s*"([^"]+)"', body)
    return m.group(1).decode().split("#")[-1] if m else None


def _template_subnet(data: dict[str, Any]) -> str | None:
    for nic in data.get("NetworkInterfaces") or []:
        if nic.get("SubnetId"):
            return str(nic["SubnetId"])
    return None


def _from_template(
    params: dict[str, str], tmpl: dict[str, Any], market_type: str
) -> dict[str, str]:
    """RunInstances parameters the launch template implies but moto would not apply."""
    extra: dict[str, str] = {}
    if market_type == fleet.SPOT and "InstanceMarketOptions.MarketType" not in params:
        extra["InstanceMarketOptions.MarketType"] = "spot"
    explicit = any(
        k == "SubnetId" or k.startswith(("Placement.", "NetworkInterface.")) for k in params
    )
    if not explicit:
        subnet = _template_subnet(tmpl)
        zone = (tmpl.get("Placement") or {}).get("AvailabilityZone")
        if subnet:
            extra["SubnetId"] = subnet
        elif zone:
            extra["Placement.AvailabilityZone"] = str(zone)
    return extra


def _zone_of(ec2: Any, region: str, p: dict[str, Any], tmpl: dict[str, Any]) -> str:
    """The zone a RunInstances call lands in (placement, subnet, NIC subnet, template, default)."""
    zone = (p.get("Placement") or {}).get("AvailabilityZone")
    if zone:
        return str(zone)
    subnet = p.get("SubnetId") or next(
        (n.get("SubnetId") for n in p.get("NetworkInterface", []) if n.get("SubnetId")), None
    )
    subnet = subnet or _template_subnet(tmpl)
    if subnet:
        return backend.subnet_zone(ec2, subnet)
    zone = (tmpl.get("Placement") or {}).get("AvailabilityZone")
    return str(zone) if zone else f"{region}a"


def _lto(cand: fleet.Candidate) -> dict[str, Any]:
    override = {
        k: v
        for k, v in cand.override.items()
        if k
        in (
            "InstanceType",
            "SubnetId",
            "AvailabilityZone",
            "WeightedCapacity",
            "Priority",
            "MaxPrice",
            "ImageId",
        )
    }
    override.setdefault("InstanceType", cand.instance_type)
    return {"LaunchTemplateSpecification": cand.template_spec, "Overrides": override}


def _regions_of(scores: market.PlacementScores) -> list[str]:
    return scores.regions()

"""Start the stand-in cloud: moto's server app behind the market layer on one loopback port.

``python -m spotfleet_sim --port 0`` binds a free port and prints
``spotfleet-sim listening on http://127.0.0.1:<port>`` as its first stdout line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.moto_server import werkzeug_app
from werkzeug import serving

from spotfleet_sim import interruptions, layer


def _propagating_app(service: Any) -> Any:
    """moto's per-service Flask app, set to raise its exceptions to the layer
    (so NotImplementedError is seen as such, not as an HTML 500 page)."""
    app = werkzeug_app.create_backend_app(service)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    return app


def build(options: layer.Options) -> layer.MarketLayer:
    """The WSGI app (moto's dispatcher wrapped by the layer); not yet serving."""
    moto_app = werkzeug_app.DomainDispatcherApplication(_propagating_app)
    return layer.MarketLayer(moto_app, options)


class _QuietHandler(werkzeug_app.MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class Server:
    """A running stand-in cloud (threaded werkzeug server) with its interruption thread."""

    def __init__(
        self, options: layer.Options, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
    ) -> None:
        self.app = build(options)
        handler = werkzeug_app.MotoRequestHandler if verbose else _QuietHandler
        self._server = serving.make_server(
            host, port, self.app, threaded=True, request_handler=handler
        )
        self.host = host
        self.port = int(self._server.server_port)
        os.environ.setdefault("MOTO_PORT", str(self.port))
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        self.app.interrupter.start()
        try:
            self._server.serve_forever()
        finally:
            self.app.interrupter.stop()

    def start(self) -> None:
        """Serve from a daemon thread (for in-process use)."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="spotfleet-sim", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spotfleet_sim",
        description="The spotfleet stand-in cloud: moto (EC2, STS, SQS, EventBridge) "
        "behind a spot-market layer.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=5000, help="port (0 picks a free one)")
    parser.add_argument(
        "--prices",
        type=Path,
        default=None,
        help="price-history CSV (DescribeSpotPriceHistory layout, .gz ok); "
        "default: the bundled 2021 us-east-1 Linux history",
    )
    parser.add_argument(
        "--price-region",
        default=None,
        help="region of the price CSV rows to use (default: the first row's)",
    )
    parser.add_argument(
        "--history-start",
        default=None,
        help="history time the clock starts at (ISO-8601 UTC); "
        "default: 30 days after the first price",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="sim seconds per wall second (0 freezes the clock)"
    )
    parser.add_argument(
        "--notice-seconds",
        type=float,
        default=interruptions.DEFAULT_NOTICE_SECONDS,
        help="sim seconds between an interruption warning and the termination",
    )
    parser.add_argument(
        "--hazard",
        action="store_true",
        help="interrupt spot instances at their advisor band's rate",
    )
    parser.add_argument(
        "--hazard-multiplier",
        type=float,
        default=1.0,
        help="scale the hazard rate (e.g. 1000 for demos)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for fault probabilities and hazard draws"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> layer.Options:
    start = None
    if args.history_start:
        start = datetime.fromisoformat(args.history_start.replace("Z", "+00:00"))
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start
    return layer.Options(
        prices=args.prices,
        price_region=args.price_region,
        history_start=start,
        speed=args.speed,
        notice_seconds=args.notice_seconds,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> None:
    """Run until SIGINT/SIGTERM. First stdout line: ``spotfleet-sim listening on <url>``."""
    args = parse_args(argv)
    began = time.perf_counter()
    server = Server(options_from(args), args.host, args.port, args.verbose)
    if args.hazard:
        server.app.interrupter.set_hazard(True, args.hazard_multiplier, args.seed)
    took = time.perf_counter() - began
    print(f"spotfleet-sim listening on {server.endpoint_url}", flush=True)
    clock = server.app.clock_json()
    print(
        f"started in {took:.2f}s; sim now {clock['now']} = history {clock['history_now']}; "
        f"speed {clock['speed']}",
        flush=True,
    )

    def _stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server._server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.serve_forever()
    sys.stdout.flush()

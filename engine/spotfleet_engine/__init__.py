"""spotfleet's pure decision engine: no I/O, no clock, no globals.

Everything here takes its inputs as arguments (including ``now``) so the live
operator, ``spotfleet recommend`` and every backtest strategy run the same code.
The bundled-data loaders (``catalog.load_bundled``, ``market.load_bundled_*``)
are the only functions that read files.
"""

from spotfleet_engine.catalog import Catalog, load_bundled
from spotfleet_engine.market import MarketSnapshot, snapshot_at
from spotfleet_engine.model import (
    CapacityUnit,
    Fleet,
    FleetInstance,
    InstanceType,
    Market,
    Policy,
    Pool,
    Requirements,
)
from spotfleet_engine.plan import Launch, Plan, Terminate
from spotfleet_engine.planner import decide

__version__ = "0.1.0"

__all__ = [
    "CapacityUnit",
    "Catalog",
    "Fleet",
    "FleetInstance",
    "InstanceType",
    "Launch",
    "Market",
    "MarketSnapshot",
    "Plan",
    "Policy",
    "Pool",
    "Requirements",
    "Terminate",
    "decide",
    "load_bundled",
    "snapshot_at",
]

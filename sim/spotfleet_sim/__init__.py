"""The stand-in cloud: moto's server app behind a market layer (prices, capacity, faults).

Run it with ``python -m spotfleet_sim --port N`` (or ``spotfleet sim``); drive it with
:class:`SimClient`. The client is re-exported here; the server modules (which import
moto) load only when used.
"""

from spotfleet_sim.client import Call, CallCounts, Clock, Pool, SimClient, SimError

__version__ = "0.1.0"
__all__ = ["Call", "CallCounts", "Clock", "Pool", "SimClient", "SimError"]

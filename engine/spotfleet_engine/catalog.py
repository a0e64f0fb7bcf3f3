"""The instance catalog of one region: types, on-demand prices, zone offerings.

The bundled snapshot (see ``data/README.md``) is loaded by :func:`load_bundled`;
the operator side may refresh it from AWS and build a :class:`Catalog` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from spotfleet_engine import model


@dataclass(frozen=True)
class Catalog:
    """Instance types of a region with their Linux on-demand price (USD/h).

    ``zones[type]`` lists the availability zones that offer the type; a type
    absent from ``on_demand_usd_per_hour`` has no known price and is never planned.
    """

    region: str
    types: Mapping[str, model.InstanceType]
    on_demand_usd_per_hour: Mapping[str, float]
    zones: Mapping[str, frozenset[str]] = field(default_factory=dict)

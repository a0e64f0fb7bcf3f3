"""The instance catalog of one region: types, on-demand prices, zone offerings.

The bundled snapshot (see ``data/README.md``) is loaded by :func:`load_bundled`;
the operator side may refresh it from AWS and build a :class:`Catalog` itself.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import importlib.resources
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

from spotfleet_engine import model

SPECS_FILE = "ec2_instance_types_specs_moto-5.2.5.csv.gz"
OFFERINGS_FILE = "ec2_instance_type_offerings_az_moto-5.2.5.csv.gz"
ON_DEMAND_FILE = "ec2_catalog_ondemand_spotavg_by_region_2024-04.csv.gz"

T = TypeVar("T")


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

    @functools.cached_property
    def _on_demand_pools(self) -> dict[str, tuple[model.Pool, ...]]:
        return {
            t: tuple(model.Pool(t, z, model.Market.ON_DEMAND) for z in sorted(zs))
            for t, zs in self.zones.items()
        }

    @functools.cached_property
    def _derived(self) -> dict[Hashable, object]:
        return {}

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, computed once per ``key`` for this catalog: the catalog is
        immutable, so what is derived from it only (e.g. the types a policy's
        requirements match) is too. ``key`` must name everything ``compute`` reads
        besides the catalog."""
        memo = self._derived
        if key not in memo:
            memo[key] = compute()
        return cast(T, memo[key])

    def on_demand_pools(self, instance_type: str) -> tuple[model.Pool, ...]:
        """On-demand pools of the type, one per offering zone, sorted (computed once)."""
        return self._on_demand_pools.get(instance_type, ())

    def on_demand_price(self, instance_type: str) -> float | None:
        """On-demand USD per instance-hour, or None when unknown."""
        return self.on_demand_usd_per_hour.get(instance_type)

    def all_zones(self) -> tuple[str, ...]:
        """Every zone that offers at least one type, sorted."""
        return tuple(sorted(set().union(*self.zones.values()))) if self.zones else ()

    def restricted_to(self, names: Iterable[str]) -> Catalog:
        """The same catalog keeping only the named types (unknown names are ignored)."""
        keep = set(names)
        return Catalog(
            region=self.region,
            types={n: t for n, t in self.types.items() if n in keep},
            on_demand_usd_per_hour={
                n: p for n, p in self.on_demand_usd_per_hour.items() if n in keep
            },
            zones={n: z for n, z in self.zones.items() if n in keep},
        )


def _rows(name: str) -> Iterator[dict[str, str]]:
    ref = importlib.resources.files("spotfleet_engine").joinpath("data", name)
    with ref.open("rb") as raw, gzip.open(raw, "rt", newline="") as text:
        yield from csv.DictReader(text)


def _arch(field_value: str) -> str:
    archs = field_value.split("|")
    if "x86_64" in archs:
        return "x86_64"
    if "arm64" in archs:
        return "arm64"
    return archs[0]  # "x86_64_mac" / "arm64_mac": never matched by a plain arch filter


def _bool(text: str) -> bool:
    return text.strip().lower() == "true"


@functools.lru_cache(maxsize=1)
def _specs() -> dict[str, model.InstanceType]:
    out: dict[str, model.InstanceType] = {}
    for r in _rows(SPECS_FILE):
        name = r["instance_type"]
        out[name] = model.InstanceType(
            name=name,
            family=r["family"] or name.split(".", 1)[0],
            vcpus=int(r["vcpus"]),
            memory_gib=int(r["memory_mib"]) / 1024.0,
            arch=_arch(r["architectures"]),
            gpus=int(r["gpu_count"] or 0),
            burstable=_bool(r["burstable"]),
            current_generation=_bool(r["current_generation"]),
            bare_metal=_bool(r["bare_metal"]),
        )
    return out


@functools.lru_cache(maxsize=1)
def _on_demand_rows() -> tuple[dict[str, str], ...]:
    return tuple(_rows(ON_DEMAND_FILE))


@functools.lru_cache(maxsize=1)
def _offerings() -> dict[str, dict[str, frozenset[str]]]:
    acc: dict[str, dict[str, set[str]]] = {}
    for r in _rows(OFFERINGS_FILE):
        if r["location_type"] != "availability-zone":
            continue
        acc.setdefault(r["region"], {}).setdefault(r["instance_type"], set()).add(r["location"])
    return {reg: {t: frozenset(z) for t, z in by.items()} for reg, by in acc.items()}


@functools.lru_cache(maxsize=32)
def load_bundled(region: str = "us-east-1") -> Catalog:
    """The bundled catalog of ``region`` (cached; the only I/O in this module).

    Specs come from moto 5.2.5's DescribeInstanceTypes data; types moto lacks
    (older GPU/FPGA generations) are filled from the vantage catalog's vCPU,
    memory, GPU, arch and generation columns (burstable = T family). The
    current-generation flag of every type is vantage's: moto's file marks 98
    current types previous generation (c4, c5, m4, m5, r4, r5, m6i, r6i, g5,
    c6gn, r7g, r7gd), so ``currentGenerationOnly`` would drop them. On-demand
    prices are vantage's Linux USD/h of April 2024. Zones are moto's AZ
    offerings; a type with a price but no offering row has an empty zone set.
    Raises ValueError for a region with no on-demand prices.
    """
    specs = _specs()
    types: dict[str, model.InstanceType] = {}
    prices: dict[str, float] = {}
    for r in _on_demand_rows():
        if r["region"] != region:
            continue
        name = r["instance_type"]
        try:
            price = float(r["ondemand_usd_per_hour"])
        except ValueError:
            continue
        if not price > 0:
            continue
        current = _bool(r["current_generation"])
        it = specs.get(name)
        if it is not None and it.current_generation != current:
            it = dataclasses.replace(it, current_generation=current)
        if it is None:
            family = name.split(".", 1)[0]
            it = model.InstanceType(
                name=name,
                family=family,
                vcpus=int(float(r["vcpus"])),
                memory_gib=float(r["memory_gib"]),
                arch=_arch(r["arch"]),
                gpus=int(float(r["gpu_count"] or 0)),
                burstable=family.startswith("t") and family[1:2].isdigit(),
                current_generation=current,
                bare_metal=name.endswith(".metal") or ".metal-" in name,
            )
        types[name] = it
        prices[name] = price
    if not types:
        raise ValueError(f"no bundled on-demand prices for region {region!r}")
    offered = _offerings().get(region, {})
    zones = {name: offered.get(name, frozenset()) for name in types}
    return Catalog(region=region, types=types, on_demand_usd_per_hour=prices, zones=zones)

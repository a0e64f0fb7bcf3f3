"""Convert a parsed spec into the engine's :class:`spotfleet_engine.model.Policy`.

Decimal strings become floats here (the engine computes in float USD/h); unset
optional sections take the models' defaults.
"""

from __future__ import annotations

from decimal import Decimal

from spotfleet_engine import model
from spotfleet_operator.api import spec as spec_model


def _f(text: str | None) -> float | None:
    return None if text is None else float(Decimal(text))


def to_engine_requirements(req: spec_model.InstanceRequirements) -> model.Requirements:
    """``spec.instanceRequirements`` as the engine's :class:`model.Requirements`."""
    vcpu = req.vcpu or spec_model.VcpuRange.model_validate({})
    mem = req.memory_gib or spec_model.MemoryRange.model_validate({})
    per = req.memory_gib_per_vcpu or spec_model.MemoryPerVcpuRange.model_validate({})
    gpu = req.gpu or spec_model.GpuRange.model_validate({})
    return model.Requirements(
        vcpu_min=vcpu.min,
        vcpu_max=vcpu.max,
        memory_gib_min=_f(mem.min),
        memory_gib_max=_f(mem.max),
        memory_per_vcpu_min=_f(per.min),
        memory_per_vcpu_max=_f(per.max),
        architectures=frozenset(req.architectures or ()),
        allowed_families=frozenset(req.allowed_families or ()),
        allowed_types=frozenset(req.allowed_types or ()),
        excluded_families=frozenset(req.excluded_families or ()),
        excluded_types=frozenset(req.excluded_types or ()),
        burstable=req.burstable,
        gpu_min=gpu.min,
        gpu_max=gpu.max,
        current_generation_only=req.current_generation_only,
        exclude_bare_metal=req.exclude_bare_metal,
    )


def to_engine_policy(spec: spec_model.SpotPolicySpec) -> model.Policy:
    """The engine's view of ``spec`` (capacity figures in ``spec.capacity.unit``)."""
    on_demand = spec.on_demand_or_default()
    strategy = spec.strategy_or_default()
    diversification = strategy.diversification or spec_model.Diversification.model_validate({})
    rebalance = spec.rebalance_or_default()
    return model.Policy(
        region=spec.region,
        target=float(spec.capacity.target),
        unit=model.CapacityUnit(spec.capacity.unit),
        zones=tuple(spec.availability_zones or ()),
        min_capacity=None if spec.capacity.min is None else float(spec.capacity.min),
        on_demand_base=float(on_demand.base),
        on_demand_percentage_above_base=float(on_demand.percentage_above_base),
        requirements=to_engine_requirements(spec.requirements_or_default()),
        objective=strategy.objective,
        max_spot_price_per_unit_hour=_f(strategy.max_spot_price_per_unit_hour),
        budget_per_hour=_f(strategy.budget_per_hour),
        min_pools=diversification.min_pools,
        max_pool_share_pct=float(diversification.max_pool_share_percent),
        rebalance_enabled=rebalance.enabled,
        min_savings_pct=float(rebalance.min_savings_percent),
        max_replacements_per_hour=rebalance.max_replacements_per_hour,
        horizon_hours=strategy.horizon_seconds / 3600.0,
    )

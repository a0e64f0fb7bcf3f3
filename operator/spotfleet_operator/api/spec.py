"""``SpotPolicy.spec``: what a fleet owner declares (pydantic models, the single source).

The CRD's OpenAPI schema (``crdgen``) and the reference page (``docgen``) are
generated from these classes: every field has a description, bounds and
patterns live in the types, and cross-field rules are :class:`base.Rule` s that
become CEL ``x-kubernetes-validations``. Defaults are applied by these models
when the operator parses an object, not by the API server, so what a user
applies is what they read back.

Units: capacity figures are in ``capacity.unit``; prices are decimal strings in
USD per hour; memory is GiB as decimal strings; durations are integer seconds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import pydantic
from pydantic.config import JsonDict

from spotfleet_operator.api import base

# ---------------------------------------------------------------------------
# Scalar types (patterns are RE2/Rust-regex compatible and anchored).
# ---------------------------------------------------------------------------

#: A non-negative decimal with at most 6 integer and 6 fractional digits, no sign/exponent.
PRICE_PATTERN = r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,6})?$"
#: A non-negative decimal GiB figure with at most 7 integer and 3 fractional digits.
GIB_PATTERN = r"^(0|[1-9][0-9]{0,6})(\.[0-9]{1,3})?$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"
ZONE_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}[a-z]$"
FAMILY_PATTERN = r"^[a-z0-9*?\[\]-]{1,24}$"
TYPE_PATTERN = r"^[a-z0-9*?\[\]-]{1,24}(\.[a-z0-9*?\[\]-]{1,24})?$"
SUBNET_ID_PATTERN = r"^subnet-[0-9a-f]{8,17}$"
SECURITY_GROUP_ID_PATTERN = r"^sg-[0-9a-f]{8,17}$"
IMAGE_ID_PATTERN = r"^ami-[0-9a-f]{8,17}$"
LAUNCH_TEMPLATE_ID_PATTERN = r"^lt-[0-9a-f]{8,17}$"
LAUNCH_TEMPLATE_NAME_PATTERN = r"^[a-zA-Z0-9()./_-]{3,128}$"
LAUNCH_TEMPLATE_VERSION_PATTERN = r"^(\$Latest|\$Default|[1-9][0-9]{0,8})$"
INSTANCE_PROFILE_PATTERN = r"^[a-zA-Z0-9+=,.@_-]{1,128}$"
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ROLE_ARN_PATTERN = r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[a-zA-Z0-9+=,.@_/-]{1,512}$"
EXTERNAL_ID_PATTERN = r"^[a-zA-Z0-9+=,.@:/_-]{2,}$"

#: Largest capacity target per unit ("unit-specific bounds").
MAX_TARGET: dict[str, int] = {"instances": 5_000, "vcpu": 500_000, "memoryGiB": 1_000_000}
MAX_ANY_TARGET = max(MAX_TARGET.values())

Price = Annotated[str, pydantic.StringConstraints(pattern=PRICE_PATTERN, max_length=13)]
GiB = Annotated[str, pydantic.StringConstraints(pattern=GIB_PATTERN, max_length=11)]
Zone = Annotated[str, pydantic.StringConstraints(pattern=ZONE_PATTERN, max_length=32)]
Family = Annotated[str, pydantic.StringConstraints(pattern=FAMILY_PATTERN, max_length=24)]
TypePattern = Annotated[str, pydantic.StringConstraints(pattern=TYPE_PATTERN, max_length=49)]
SubnetId = Annotated[str, pydantic.StringConstraints(pattern=SUBNET_ID_PATTERN, max_length=24)]
SecurityGroupId = Annotated[
    str, pydantic.StringConstraints(pattern=SECURITY_GROUP_ID_PATTERN, max_length=20)
]
TagValue = Annotated[str, pydantic.StringConstraints(max_length=256)]

Unit = Literal["vcpu", "memoryGiB", "instances"]
Architecture = Literal["x86_64", "arm64"]
Objective = Literal["lowestCost", "balanced", "lowestInterruption"]
BurstableChoice = Literal["include", "exclude", "only"]
RebalanceRecommendationAction = Literal["ignore", "replace"]
DeletionPolicy = Literal["Delete", "Orphan"]

#: Marks a list as a set for the API server (duplicates refused); see ``_unique``.
SET: JsonDict = {"x-kubernetes-list-type": "set"}


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        dup = next(v for i, v in enumerate(values) if v in values[:i])
        raise ValueError(f"duplicate value {dup!r}")
    return values


UniqueStrings = pydantic.AfterValidator(_unique)


def _has(value: object) -> bool:
    return value is not None


def _min_le_max(obj: object) -> bool:
    lo, hi = getattr(obj, "min", None), getattr(obj, "max", None)
    return lo is None or hi is None or lo <= hi


def _dec_min_le_max(obj: object) -> bool:
    lo, hi = getattr(obj, "min", None), getattr(obj, "max", None)
    return lo is None or hi is None or Decimal(lo) <= Decimal(hi)


_INT_RANGE_RULE = base.Rule(
    cel="!has(self.min) || !has(self.max) || self.min <= self.max",
    message="min must be less than or equal to max",
    field_path=".min",
    check=_min_le_max,
)
_DEC_RANGE_RULE = base.Rule(
    cel="!has(self.min) || !has(self.max) || double(self.min) <= double(self.max)",
    message="min must be less than or equal to max",
    field_path=".min",
    check=_dec_min_le_max,
)

# ---------------------------------------------------------------------------
# capacity and onDemand
# ---------------------------------------------------------------------------


def _unit_bound(unit: str, limit: int) -> base.Rule:
    def check(s: Capacity) -> bool:
        return s.unit != unit or s.target <= limit

    return base.Rule(
        cel=f"self.unit != '{unit}' || self.target <= {limit}",
        message=f"target must be at most {limit} when unit is {unit}",
        field_path=".target",
        check=check,
    )


class Capacity(base.ApiModel):
    """How much capacity the fleet holds, counted in one unit."""

    target: int = pydantic.Field(
        ge=0,
        le=MAX_ANY_TARGET,
        description=(
            "Capacity to hold, in `unit`. 0 scales the fleet to nothing. At most 5000 "
            "for instances, 500000 for vcpu, 1000000 for memoryGiB."
        ),
    )
    unit: Unit = pydantic.Field(
        description=(
            "What `target`, `min` and `onDemand.base` count: `vcpu` (virtual CPUs), "
            "`memoryGiB` (GiB of memory) or `instances`. An instance counts for its whole "
            "vCPU or memory size, so the fleet may overshoot by less than one instance."
        ),
    )
    min: int | None = pydantic.Field(
        default=None,
        ge=0,
        le=MAX_ANY_TARGET,
        description=(
            "The least acceptable capacity when the target cannot be met within the "
            "budget, price cap or available supply; must not exceed `target`. Unset: "
            "the target is a hard floor and a shortfall marks the policy Degraded."
        ),
    )

    cel_rules = (
        base.Rule(
            cel="!has(self.min) || self.min <= self.target",
            message="min must be less than or equal to target",
            field_path=".min",
            check=lambda s: s.min is None or s.min <= s.target,
        ),
        *(_unit_bound(unit, limit) for unit, limit in MAX_TARGET.items()),
    )


class OnDemand(base.ApiModel):
    """How much of the capacity is bought on-demand instead of spot."""

    base: int = pydantic.Field(
        default=0,
        ge=0,
        le=MAX_ANY_TARGET,
        description=(
            "Capacity, in `capacity.unit`, that is always on-demand, filled before any spot. "
            "Must not exceed `capacity.target`."
        ),
    )
    percentage_above_base: int = pydantic.Field(
        default=0,
        ge=0,
        le=100,
        description=(
            "Percent (0-100) of the capacity above `base` that is on-demand; the rest is spot. "
            "100 means no spot at all."
        ),
    )


# ---------------------------------------------------------------------------
# instanceRequirements
# ---------------------------------------------------------------------------


class VcpuRange(base.ApiModel):
    """Inclusive range of vCPUs per instance; an unset bound is open."""

    min: int | None = pydantic.Field(default=None, ge=1, le=1024, description="Fewest vCPUs.")
    max: int | None = pydantic.Field(default=None, ge=1, le=1024, description="Most vCPUs.")

    cel_rules = (_INT_RANGE_RULE,)


class GpuRange(base.ApiModel):
    """Inclusive range of GPUs per instance; an unset bound is open."""

    min: int | None = pydantic.Field(default=None, ge=0, le=64, description="Fewest GPUs.")
    max: int | None = pydantic.Field(
        default=None, ge=0, le=64, description="Most GPUs; 0 excludes GPU instances."
    )

    cel_rules = (_INT_RANGE_RULE,)


class MemoryRange(base.ApiModel):
    """Inclusive range of memory per instance in GiB (decimal strings such as "0.5", "64")."""

    min: GiB | None = pydantic.Field(default=None, description="Least memory per instance, GiB.")
    max: GiB | None = pydantic.Field(default=None, description="Most memory per instance, GiB.")

    cel_rules = (_DEC_RANGE_RULE,)


class MemoryPerVcpuRange(base.ApiModel):
    """Inclusive range of memory per vCPU in GiB (decimal strings): 2 compute, 8 memory-heavy."""

    min: GiB | None = pydantic.Field(default=None, description="Least GiB per vCPU.")
    max: GiB | None = pydantic.Field(default=None, description="Most GiB per vCPU.")

    cel_rules = (_DEC_RANGE_RULE,)


class InstanceRequirements(base.ApiModel):
    """Which instance types the fleet may use. Every set requirement must hold; unset means any.

    Name filters are shell-style patterns (`*`, `?`, `[...]`, lower case): families
    match the family ("m5*" matches m5, m5a, m5d...), types the full name ("m5.*",
    "c6g.large"). Exclusions win over allowances.
    """

    vcpu: VcpuRange | None = pydantic.Field(default=None, description="vCPUs per instance.")
    memory_gib: MemoryRange | None = pydantic.Field(
        default=None, alias="memoryGiB", description="Memory per instance in GiB."
    )
    memory_gib_per_vcpu: MemoryPerVcpuRange | None = pydantic.Field(
        default=None, alias="memoryGiBPerVcpu", description="Memory per vCPU in GiB."
    )
    architectures: Annotated[list[Architecture], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=2,
        json_schema_extra=SET,
        description="CPU architectures allowed (`x86_64`, `arm64`). Unset: both.",
    )
    allowed_families: Annotated[list[Family], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=50,
        json_schema_extra=SET,
        description='Only families matching one of these patterns ("m5", "c6*"). Unset: all.',
    )
    excluded_families: Annotated[list[Family], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=50,
        json_schema_extra=SET,
        description="Never families matching one of these patterns.",
    )
    allowed_types: Annotated[list[TypePattern], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=100,
        json_schema_extra=SET,
        description='Only types matching one of these patterns ("m5.*", "c6g.large"). Unset: all.',
    )
    excluded_types: Annotated[list[TypePattern], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=100,
        json_schema_extra=SET,
        description='Never types matching one of these patterns ("*.metal", "t2.*").',
    )
    burstable: BurstableChoice = pydantic.Field(
        default="include",
        description=(
            "Burstable-performance (T family) types: `include` them, `exclude` them, "
            "or use `only` them."
        ),
    )
    gpu: GpuRange | None = pydantic.Field(default=None, description="GPUs per instance.")
    current_generation_only: bool = pydantic.Field(
        default=False, description="Only types AWS lists as current generation."
    )
    exclude_bare_metal: bool = pydantic.Field(
        default=False, description="Never bare-metal (`*.metal*`) types."
    )

    cel_rules = (
        base.Rule(
            cel=(
                "!has(self.allowedFamilies) || !has(self.excludedFamilies) || "
                "!self.allowedFamilies.exists(x, x in self.excludedFamilies)"
            ),
            message="a family pattern cannot be both allowed and excluded",
            field_path=".excludedFamilies",
            check=lambda s: not (set(s.allowed_families or ()) & set(s.excluded_families or ())),
        ),
        base.Rule(
            cel=(
                "!has(self.allowedTypes) || !has(self.excludedTypes) || "
                "!self.allowedTypes.exists(x, x in self.excludedTypes)"
            ),
            message="a type pattern cannot be both allowed and excluded",
            field_path=".excludedTypes",
            check=lambda s: not (set(s.allowed_types or ()) & set(s.excluded_types or ())),
        ),
    )


# ---------------------------------------------------------------------------
# strategy and rebalance
# ---------------------------------------------------------------------------


class Diversification(base.ApiModel):
    """How spot capacity is spread over pools (instance type x zone) to survive interruptions."""

    min_pools: int = pydantic.Field(
        default=1,
        ge=1,
        le=100,
        description=(
            "The fleet is spread over at least this many pools (instance type x zone x "
            "market; on-demand pools count too)."
        ),
    )
    max_pool_share_percent: int = pydantic.Field(
        default=100,
        ge=1,
        le=100,
        description="No single pool holds more than this percent (1-100) of the target.",
    )


def _positive_price(field: str) -> base.Rule:
    alias = pydantic.alias_generators.to_camel(field)
    return base.Rule(
        cel=f"!has(self.{alias}) || double(self.{alias}) > 0.0",
        message=f"{alias} must be greater than 0",
        field_path=f".{alias}",
        check=lambda s: getattr(s, field) is None or Decimal(getattr(s, field)) > 0,
    )


class Strategy(base.ApiModel):
    """How the planner trades price against interruption risk, and hard cost caps."""

    objective: Objective = pydantic.Field(
        default="lowestCost",
        description=(
            "`lowestCost`: price plus expected replacement cost; `balanced`: interruption "
            "risk weighs three times as much; `lowestInterruption`: risk first, price "
            "breaks ties."
        ),
    )
    max_spot_price_per_unit_hour: Price | None = pydantic.Field(
        default=None,
        description=(
            "Spot pools whose price per capacity unit per hour exceeds this (USD, decimal "
            'string such as "0.025") are never used. Unset: no cap.'
        ),
    )
    budget_per_hour: Price | None = pydantic.Field(
        default=None,
        description=(
            "Cap on the whole fleet's cost in USD per hour (decimal string). When the target "
            "costs more, the planner holds as much as the budget allows, down to "
            "`capacity.min`. Unset: no cap."
        ),
    )
    diversification: Diversification | None = pydantic.Field(
        default=None, description="Spread over pools. Unset: minPools 1, maxPoolSharePercent 100."
    )
    horizon_seconds: int = pydantic.Field(
        default=86_400,
        ge=3_600,
        le=604_800,
        description=(
            "Planning horizon in seconds (1h-7d): interruption risk and whether a move "
            "pays for itself are judged over this time."
        ),
    )

    cel_rules = (
        _positive_price("max_spot_price_per_unit_hour"),
        _positive_price("budget_per_hour"),
    )


class Rebalance(base.ApiModel):
    """Whether and how running capacity is moved to cheaper or safer pools."""

    enabled: bool = pydantic.Field(
        default=True,
        description="Move running capacity when a better mix exists. false: only fill gaps.",
    )
    min_savings_percent: int = pydantic.Field(
        default=10,
        ge=0,
        le=100,
        description=(
            "A move happens only when it saves more than this percent (0-100) of the "
            "replaced instances' expected cost over the planning horizon, after switching "
            "costs. Per replaced instance, not per fleet: a move spread over several hours "
            "by maxReplacementsPerHour is judged on what each hour replaces. The move must "
            "also be expected to save USD after switching costs, with interruptions at "
            "their expected cost rather than the objective's aversion to them."
        ),
    )
    max_replacements_per_hour: int = pydantic.Field(
        default=10,
        ge=0,
        le=1_000,
        description="At most this many instances are replaced per hour to rebalance.",
    )
    on_rebalance_recommendation: RebalanceRecommendationAction = pydantic.Field(
        default="replace",
        description=(
            "When EC2 sends a rebalance recommendation for an instance: `replace` it "
            "proactively (launch elsewhere, then terminate) or `ignore` the signal."
        ),
    )


# ---------------------------------------------------------------------------
# launch, subnets, credentials
# ---------------------------------------------------------------------------


class LaunchTemplateRef(base.ApiModel):
    """An existing EC2 launch template, by ID or by name (exactly one)."""

    id: Annotated[str, pydantic.StringConstraints(pattern=LAUNCH_TEMPLATE_ID_PATTERN)] | None = (
        pydantic.Field(default=None, description="Launch template ID (`lt-...`).")
    )
    name: (
        Annotated[str, pydantic.StringConstraints(pattern=LAUNCH_TEMPLATE_NAME_PATTERN)] | None
    ) = pydantic.Field(default=None, description="Launch template name.")
    version: Annotated[
        str, pydantic.StringConstraints(pattern=LAUNCH_TEMPLATE_VERSION_PATTERN, max_length=10)
    ] = pydantic.Field(
        default="$Default",
        description="Version number, `$Latest` or `$Default`.",
    )

    cel_rules = (
        base.Rule(
            cel="has(self.id) != has(self.name)",
            message="exactly one of id or name must be set",
            check=lambda s: _has(s.id) != _has(s.name),
        ),
    )


class SecretKeyRef(base.ApiModel):
    """A key of a Secret in the policy's own namespace."""

    name: Annotated[
        str, pydantic.StringConstraints(pattern=SECRET_NAME_PATTERN, max_length=253)
    ] = pydantic.Field(description="Secret name (same namespace as the SpotPolicy).")
    key: Annotated[str, pydantic.StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)] = (
        pydantic.Field(description="Key within the Secret.")
    )


_RESERVED_TAG_PREFIXES = ("aws:", "spotfleet.dev/")


def _tags_ok(tags: dict[str, str] | None) -> bool:
    return tags is None or all(
        0 < len(k) <= 128 and not k.startswith(_RESERVED_TAG_PREFIXES) for k in tags
    )


_TAGS_RULE_CEL = (
    "!has(self.tags) || self.tags.all(k, size(k) > 0 && size(k) <= 128 && "
    "!k.startsWith('aws:') && !k.startsWith('spotfleet.dev/'))"
)


def _image_only(field: str) -> base.Rule:
    alias = pydantic.alias_generators.to_camel(field)

    def check(s: Launch) -> bool:
        return s.image_id is not None or getattr(s, field) is None

    return base.Rule(
        cel=f"!has(self.{alias}) || has(self.imageId)",
        message=f"{alias} is only valid with imageId (a launch template carries its own)",
        field_path=f".{alias}",
        reason="FieldValueForbidden",
        check=check,
    )


class Launch(base.ApiModel):
    """How instances are launched: an existing launch template, or an image plus settings.

    Exactly one of `launchTemplate` or `imageId`. With a template, its network and
    user data are used as they are; `tags` are added either way, on top of the
    ownership tags the operator always sets.
    """

    launch_template: LaunchTemplateRef | None = pydantic.Field(
        default=None, description="Use this existing launch template."
    )
    image_id: Annotated[str, pydantic.StringConstraints(pattern=IMAGE_ID_PATTERN)] | None = (
        pydantic.Field(
            default=None,
            description="AMI to launch (`ami-...`); its architecture must match the types.",
        )
    )
    security_group_ids: Annotated[list[SecurityGroupId], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=5,
        json_schema_extra=SET,
        description="Security groups (`sg-...`); only with `imageId`.",
    )
    instance_profile_name: (
        Annotated[str, pydantic.StringConstraints(pattern=INSTANCE_PROFILE_PATTERN)] | None
    ) = pydantic.Field(default=None, description="IAM instance profile name; only with `imageId`.")
    user_data_secret_ref: SecretKeyRef | None = pydantic.Field(
        default=None,
        description="User data taken from a Secret key in the same namespace; only with `imageId`.",
    )
    tags: dict[str, TagValue] | None = pydantic.Field(
        default=None,
        max_length=50,
        description=(
            "Extra EC2 tags (at most 50; keys 1-128 characters, values up to 256). Keys "
            "starting with `aws:` or `spotfleet.dev/` are reserved."
        ),
    )

    cel_rules = (
        base.Rule(
            cel="has(self.launchTemplate) != has(self.imageId)",
            message="exactly one of launchTemplate or imageId must be set",
            check=lambda s: _has(s.launch_template) != _has(s.image_id),
        ),
        *(
            _image_only(field)
            for field in ("security_group_ids", "instance_profile_name", "user_data_secret_ref")
        ),
        base.Rule(
            cel=_TAGS_RULE_CEL,
            message="tag keys must be 1-128 characters and not start with aws: or spotfleet.dev/",
            field_path=".tags",
            check=lambda s: _tags_ok(s.tags),
        ),
    )


class SubnetSelector(base.ApiModel):
    """Which subnets instances go into: explicit IDs or subnets carrying all the given tags."""

    ids: Annotated[list[SubnetId], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=16,
        json_schema_extra=SET,
        description="Subnet IDs (`subnet-...`).",
    )
    tags: dict[str, TagValue] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=10,
        description="Subnets carrying every one of these tags (value `*` matches any value).",
    )

    cel_rules = (
        base.Rule(
            cel="has(self.ids) != has(self.tags)",
            message="exactly one of ids or tags must be set",
            check=lambda s: _has(s.ids) != _has(s.tags),
        ),
    )


class SecretRef(base.ApiModel):
    """A Secret in the policy's own namespace (there is no namespace field on purpose)."""

    name: Annotated[
        str, pydantic.StringConstraints(pattern=SECRET_NAME_PATTERN, max_length=253)
    ] = pydantic.Field(
        description=(
            "Secret name. The Secret holds `aws_access_key_id` and `aws_secret_access_key` "
            "(and optionally `aws_session_token`)."
        )
    )


class Credentials(base.ApiModel):
    """The AWS identity the operator acts as for this policy: exactly one source.

    Never logged, never copied into status or events.
    """

    secret_ref: SecretRef | None = pydantic.Field(
        default=None, description="Static keys from a Secret in the same namespace."
    )
    assume_role_arn: (
        Annotated[str, pydantic.StringConstraints(pattern=ROLE_ARN_PATTERN, max_length=600)] | None
    ) = pydantic.Field(
        default=None,
        description="IAM role to assume through STS (`arn:aws:iam::<account>:role/<name>`).",
    )
    external_id: (
        Annotated[str, pydantic.StringConstraints(pattern=EXTERNAL_ID_PATTERN, max_length=1224)]
        | None
    ) = pydantic.Field(
        default=None, description="STS external ID for the role; only with `assumeRoleArn`."
    )

    cel_rules = (
        base.Rule(
            cel="has(self.secretRef) != has(self.assumeRoleArn)",
            message="exactly one of secretRef or assumeRoleArn must be set",
            check=lambda s: _has(s.secret_ref) != _has(s.assume_role_arn),
        ),
        base.Rule(
            cel="!has(self.externalId) || has(self.assumeRoleArn)",
            message="externalId is only valid with assumeRoleArn",
            field_path=".externalId",
            reason="FieldValueForbidden",
            check=lambda s: s.external_id is None or s.assume_role_arn is not None,
        ),
    )


# ---------------------------------------------------------------------------
# spec
# ---------------------------------------------------------------------------


def _zones_in_region(s: SpotPolicySpec) -> bool:
    return all(
        z.startswith(s.region) and len(z) == len(s.region) + 1 for z in (s.availability_zones or ())
    )


class SpotPolicySpec(base.ApiModel):
    """The fleet's desired shape: capacity, market mix, types, cost rules, how to launch."""

    region: Annotated[str, pydantic.StringConstraints(pattern=REGION_PATTERN, max_length=32)] = (
        pydantic.Field(
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "self == oldSelf",
                        "message": "region is immutable; create a new SpotPolicy instead",
                    }
                ]
            },
            description="AWS region of the fleet (`us-east-1`). Immutable after creation.",
        )
    )
    availability_zones: Annotated[list[Zone], UniqueStrings] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=16,
        json_schema_extra=SET,
        description="Only these zones of `region` (`us-east-1a`). Unset: every zone.",
    )
    subnet_selector: SubnetSelector | None = pydantic.Field(
        default=None,
        description="Subnets to launch into. Unset: the default subnet of each zone.",
    )
    capacity: Capacity = pydantic.Field(description="How much capacity to hold.")
    on_demand: OnDemand | None = pydantic.Field(
        default=None, description="The on-demand part of the mix. Unset: everything is spot."
    )
    instance_requirements: InstanceRequirements | None = pydantic.Field(
        default=None, description="Which instance types may be used. Unset: any type."
    )
    strategy: Strategy | None = pydantic.Field(
        default=None, description="Objective, price caps and diversification."
    )
    rebalance: Rebalance | None = pydantic.Field(
        default=None, description="Moving running capacity. Unset: enabled with defaults."
    )
    launch: Launch | None = pydantic.Field(
        default=None,
        description="How to launch instances. Required unless `dryRun` is true.",
    )
    credentials: Credentials = pydantic.Field(description="The AWS identity to act as.")
    suspend: bool = pydantic.Field(
        default=False,
        description="Stop reconciling: nothing is launched or terminated; status stays as it was.",
    )
    dry_run: bool = pydantic.Field(
        default=False,
        description=(
            "Decide and report in status and events what would be done, but never launch "
            "or terminate anything."
        ),
    )
    deletion_policy: DeletionPolicy = pydantic.Field(
        default="Delete",
        description=(
            "On deletion of the SpotPolicy: `Delete` terminates the instances it owns; "
            "`Orphan` leaves them running (untagged from the policy)."
        ),
    )

    cel_rules = (
        base.Rule(
            cel="!has(self.onDemand) || !has(self.onDemand.base) || "
            "self.onDemand.base <= self.capacity.target",
            message="onDemand.base must be less than or equal to capacity.target",
            field_path=".onDemand.base",
            check=lambda s: s.on_demand is None or s.on_demand.base <= s.capacity.target,
        ),
        base.Rule(
            cel="!has(self.availabilityZones) || self.availabilityZones.all(z, "
            "z.startsWith(self.region) && size(z) == size(self.region) + 1)",
            message="every availability zone must be a zone of spec.region",
            field_path=".availabilityZones",
            check=_zones_in_region,
        ),
        base.Rule(
            cel="has(self.launch) || (has(self.dryRun) && self.dryRun)",
            message="launch is required unless dryRun is true",
            field_path=".launch",
            reason="FieldValueRequired",
            check=lambda s: s.launch is not None or s.dry_run,
        ),
    )

    # -- defaults-resolved accessors the operator uses -------------------------

    def on_demand_or_default(self) -> OnDemand:
        """``on_demand`` with defaults filled in."""
        return self.on_demand or OnDemand.model_validate({})

    def requirements_or_default(self) -> InstanceRequirements:
        """``instance_requirements`` with defaults filled in."""
        return self.instance_requirements or InstanceRequirements.model_validate({})

    def strategy_or_default(self) -> Strategy:
        """``strategy`` with defaults filled in."""
        return self.strategy or Strategy.model_validate({})

    def rebalance_or_default(self) -> Rebalance:
        """``rebalance`` with defaults filled in."""
        return self.rebalance or Rebalance.model_validate({})

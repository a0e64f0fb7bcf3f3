"""Property: the parser never raises, whatever JSON it is given.

The strategies here (``spec_bodies``) are shared with the integration property
test, which sends the same kind of documents to the real API server.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spotfleet_operator import api
from spotfleet_operator.api import spec as spec_model

ABSENT = object()
DELETE = object()

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
borderline = st.sampled_from(
    [
        0,
        1,
        -1,
        100,
        101,
        5000,
        5001,
        500_001,
        1_000_001,
        2.5,
        "5",
        "0",
        "0.0",
        "-1",
        "1e3",
        ".5",
        "01",
        "us-east-1",
        "",
        "x" * 300,
        True,
        [],
        {},
        ["a", "a"],
    ]
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(ABSENT), strategy)


@st.composite
def _obj(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, strategy in fields.items():
        value = draw(strategy)
        if value is not ABSENT:
            out[key] = value
    return out


def _unique(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True)


small = st.integers(min_value=0, max_value=200)
prices = st.from_regex(spec_model.PRICE_PATTERN, fullmatch=True)
gibs = st.from_regex(spec_model.GIB_PATTERN, fullmatch=True)


def _range(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _obj({"min": _maybe(values), "max": _maybe(values)})


@st.composite
def valid_looking_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Specs built from well-typed values; cross-field rules may or may not hold."""
    region = draw(st.sampled_from(["us-east-1", "eu-west-1"]))
    spec: dict[str, Any] = {"region": region}
    if draw(st.booleans()):
        spec["availabilityZones"] = draw(_unique([region + z for z in "abcdef"]))
    target = draw(small)
    spec["capacity"] = {
        "target": target,
        "unit": draw(st.sampled_from(["vcpu", "memoryGiB", "instances"])),
    }
    if draw(st.booleans()):
        spec["capacity"]["min"] = draw(st.one_of(st.integers(0, target), small))
    spec["onDemand"] = draw(
        _maybe(
            _obj(
                {
                    "base": _maybe(st.integers(0, 60)),
                    "percentageAboveBase": _maybe(st.integers(0, 100)),
                }
            )
        )
    )
    spec["instanceRequirements"] = draw(
        _maybe(
            _obj(
                {
                    "vcpu": _maybe(_range(st.integers(1, 64))),
                    "memoryGiB": _maybe(_range(gibs)),
                    "memoryGiBPerVcpu": _maybe(_range(gibs)),
                    "architectures": _maybe(_unique(["x86_64", "arm64"])),
                    "allowedFamilies": _maybe(_unique(["m5", "c6g*", "r5*", "t3"])),
                    "excludedFamilies": _maybe(_unique(["t2", "m1", "t3"])),
                    "allowedTypes": _maybe(_unique(["m5.large", "c6g.*", "r5.2xlarge"])),
                    "excludedTypes": _maybe(_unique(["*.metal", "m5.large"])),
                    "burstable": _maybe(st.sampled_from(["include", "exclude", "only"])),
                    "gpu": _maybe(_range(st.integers(0, 8))),
                    "currentGenerationOnly": _maybe(st.booleans()),
                    "excludeBareMetal": _maybe(st.booleans()),
                }
            )
        )
    )
    spec["strategy"] = draw(
        _maybe(
            _obj(
                {
                    "objective": _maybe(
                        st.sampled_from(["lowestCost", "balanced", "lowestInterruption"])
                    ),
                    "maxSpotPricePerUnitHour": _maybe(prices),
                    "budgetPerHour": _maybe(prices),
                    "diversification": _maybe(
                        _obj(
                            {
                                "minPools": _maybe(st.integers(1, 10)),
                                "maxPoolSharePercent": _maybe(st.integers(1, 100)),
                            }
                        )
                    ),
                    "horizonSeconds": _maybe(st.integers(3600, 604800)),
                }
            )
        )
    )
    spec["rebalance"] = draw(
        _maybe(
            _obj(
                {
                    "enabled": _maybe(st.booleans()),
                    "minSavingsPercent": _maybe(st.integers(0, 100)),
                    "maxReplacementsPerHour": _maybe(st.integers(0, 50)),
                    "onRebalanceRecommendation": _maybe(st.sampled_from(["ignore", "replace"])),
                }
            )
        )
    )
    template = _obj(
        {
            "launchTemplate": _obj(
                {
                    "name": st.sampled_from(["web-node", "batch"]),
                    "version": _maybe(st.sampled_from(["$Latest", "$Default", "3"])),
                }
            ),
            "tags": _maybe(st.dictionaries(st.sampled_from(["team", "app"]), st.text(max_size=5))),
        }
    )
    image = _obj(
        {
            "imageId": st.just("ami-0abcdef1234567890"),
            "securityGroupIds": _maybe(_unique(["sg-0123456789abcdef0", "sg-0fedcba987654321f"])),
            "instanceProfileName": _maybe(st.just("node")),
            "userDataSecretRef": _maybe(st.just({"name": "boot", "key": "user-data"})),
        }
    )
    spec["launch"] = draw(st.one_of(template, image, template, image, st.just(ABSENT)))
    spec["credentials"] = draw(
        st.one_of(
            st.just({"secretRef": {"name": "aws"}}),
            _obj(
                {
                    "assumeRoleArn": st.just("arn:aws:iam::123456789012:role/spotfleet"),
                    "externalId": _maybe(st.just("ext-1234")),
                }
            ),
        )
    )
    for flag in ("suspend", "dryRun"):
        spec[flag] = draw(_maybe(st.booleans()))
    spec["deletionPolicy"] = draw(_maybe(st.sampled_from(["Delete", "Orphan"])))
    return {k: v for k, v in spec.items() if v is not ABSENT}


#: Every field path a mutation may hit (created on the way when absent).
FIELD_PATHS: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split("."))
    for p in (
        "region",
        "availabilityZones",
        "capacity",
        "capacity.target",
        "capacity.unit",
        "capacity.min",
        "onDemand.base",
        "onDemand.percentageAboveBase",
        "instanceRequirements.vcpu.min",
        "instanceRequirements.vcpu.max",
        "instanceRequirements.memoryGiB.min",
        "instanceRequirements.memoryGiBPerVcpu.max",
        "instanceRequirements.architectures",
        "instanceRequirements.allowedFamilies",
        "instanceRequirements.excludedTypes",
        "instanceRequirements.burstable",
        "instanceRequirements.gpu.max",
        "instanceRequirements.currentGenerationOnly",
        "strategy.objective",
        "strategy.maxSpotPricePerUnitHour",
        "strategy.budgetPerHour",
        "strategy.diversification.minPools",
        "strategy.diversification.maxPoolSharePercent",
        "strategy.horizonSeconds",
        "rebalance.enabled",
        "rebalance.minSavingsPercent",
        "rebalance.maxReplacementsPerHour",
        "rebalance.onRebalanceRecommendation",
        "launch",
        "launch.launchTemplate.version",
        "launch.imageId",
        "launch.tags",
        "credentials",
        "credentials.secretRef",
        "credentials.assumeRoleArn",
        "credentials.externalId",
        "suspend",
        "dryRun",
        "deletionPolicy",
        "unknownField",
        "capacity.unknownField",
    )
)


def _mutate(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = spec
    for key in path[:-1]:
        if not isinstance(node, dict):
            return
        node = node.setdefault(key, {})
    if not isinstance(node, dict):
        return
    if value is DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid-looking spec with zero to two fields set to junk, borderline or deleted."""
    spec = draw(valid_looking_specs())
    for path, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(FIELD_PATHS),
                st.one_of(st.just(DELETE), borderline, any_json),
            ),
            max_size=2,
        )
    ):
        _mutate(spec, path, value)
    return spec


#: Mostly structure-aware specs (valid-looking, then mutated), sometimes any JSON at all.
spec_bodies = st.one_of(mutated_specs(), mutated_specs(), mutated_specs(), any_json)


def manifest(spec: Any, name: str = "prop") -> dict[str, Any]:
    """A SpotPolicy manifest around ``spec``."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_bodies)
def test_parse_policy_never_raises_and_accepted_specs_convert(spec: Any) -> None:
    result = api.parse_policy(manifest(spec))
    assert isinstance(result, api.ParsedPolicy | api.InvalidSpec)
    if isinstance(result, api.InvalidSpec):
        assert result.errors and result.message
        assert all(e.path.startswith("spec") for e in result.errors)
    else:
        policy = api.to_engine_policy(result.spec)
        assert policy.problems() == []


@settings(max_examples=200, deadline=None)
@given(any_json)
def test_parse_policy_never_raises_on_any_body(body: Any) -> None:
    result = api.parse_policy(body)
    assert isinstance(result, api.InvalidSpec)
    assert result.message

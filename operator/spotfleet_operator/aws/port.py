"""The port between the operator and a cloud: what reconcile, finalize and the jobs
need from EC2, as a typed protocol with its contract. :class:`spotfleet_operator.aws.ec2.Ec2`
implements it with boto3; the component tests' fake implements it in memory.

Contract for every implementation:
- One object acts for ONE tenant (credentials) in ONE region.
- Failures raise :class:`~spotfleet_operator.aws.errors.AwsError`, classified once
  (:mod:`~spotfleet_operator.aws.errors`); nothing else escapes.
- Reads never change anything. Only the methods in :data:`MUTATING_METHODS` do, and
  a dry-run policy never calls them (:class:`DryRunGuard`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from spotfleet_engine import model
from spotfleet_operator.aws import errors

TAG_PREFIX = "spotfleet.dev/"
TAG_POLICY_UID = TAG_PREFIX + "policy-uid"
TAG_POLICY = TAG_PREFIX + "policy"  # "namespace/name"
TAG_POOL = TAG_PREFIX + "pool"  # Pool.key()
TAG_MANAGED = TAG_PREFIX + "managed-by"
TAG_SPEC_HASH = TAG_PREFIX + "launch-spec-hash"
OWNERSHIP_KEYS = (TAG_POLICY_UID, TAG_POLICY, TAG_POOL, TAG_MANAGED)

#: Port method -> the EC2 API operations it may call, and whether it changes anything.
#: The one definition of "mutating": the dry-run guard, the fake, the metrics and the
#: tests (and the check of the stand-in cloud's own list) all read it.
OPERATIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "account_id": (("GetCallerIdentity",), False),
    "owned_instances": (("DescribeInstances",), False),
    "spot_price_history": (("DescribeSpotPriceHistory",), False),
    "subnets_by_zone": (("DescribeSubnets",), False),
    "launch_templates": (("DescribeLaunchTemplates",), False),
    "create_launch_template": (("CreateLaunchTemplate",), True),
    "launch": (("CreateFleet",), True),
    "terminate": (("TerminateInstances",), True),
    "untag": (("DeleteTags",), True),
    "delete_launch_template": (("DeleteLaunchTemplate",), True),
}
MUTATING_METHODS = frozenset(m for m, (_, mutating) in OPERATIONS.items() if mutating)
MUTATING_OPERATIONS = frozenset(
    op for ops, mutating in OPERATIONS.values() if mutating for op in ops
)


def ownership_tags(policy_uid: str, namespace: str, name: str, pool: model.Pool) -> dict[str, str]:
    """The tags that make an instance part of a policy's fleet."""
    return {
        TAG_POLICY_UID: policy_uid,
        TAG_POLICY: f"{namespace}/{name}",
        TAG_POOL: pool.key(),
        TAG_MANAGED: "spotfleet",
    }


def launch_template_name(policy_uid: str) -> str:
    """The per-policy template of releases before shared templates (``spotfleet-<uid>``):
    only deleted now, never created."""
    return f"spotfleet-{policy_uid}"


SHARED_TEMPLATE_PREFIX = "spotfleet-spec-"


def shared_template_name(spec_hash: str) -> str:
    """The launch template of one launch spec, shared by every policy of the account that
    launches with it: ``spotfleet-spec-<spec hash>`` (a spec change is a new template)."""
    return SHARED_TEMPLATE_PREFIX + spec_hash


def idempotency_token(
    policy_uid: str, generation: int, plan_hash: str, pool: model.Pool, seen: Sequence[str]
) -> str:
    """ClientToken for one pool's launch: (policy uid, generation, plan hash, pool, and
    the instance ids already seen in that pool). Re-running the same reconcile after a
    crash repeats the token (AWS answers with the original launch); once an instance is
    lost its id leaves ``seen`` and the replacement gets a new token. <= 64 chars."""
    text = "\n".join([policy_uid, str(generation), plan_hash, pool.key(), *sorted(seen)])
    return "sf-" + hashlib.sha256(text.encode()).hexdigest()[:48]


@dataclass(frozen=True)
class OwnedInstance:
    """A pending or running instance carrying a policy's ownership tags."""

    instance_id: str
    pool: model.Pool
    state: str  # "pending" | "running"
    launched_at: dt.datetime
    policy_uid: str
    policy_ref: str  # "namespace/name"
    spec_hash: str = ""  # the launch spec it was launched with ("" when not tagged)


@dataclass(frozen=True)
class LaunchSpec:
    """What every instance of a policy is launched with (spec.launch)."""

    image_id: str | None = None
    launch_template_name: str | None = None  # the user's own template (used as is)
    launch_template_version: str | None = None
    security_group_ids: tuple[str, ...] = ()
    user_data: str | None = None
    iam_instance_profile_name: str | None = None

    def content_hash(self) -> str:
        """16 hex digits identifying the template data (stored as a template tag)."""
        return hashlib.sha256(
            json.dumps(self.__dict__, sort_keys=True, default=list).encode()
        ).hexdigest()[:16]


@dataclass(frozen=True)
class TemplateInfo:
    """A launch template the operator made: its name, id, the spec hash it holds, and when
    it was created (None: not known)."""

    name: str
    template_id: str
    spec_hash: str
    created: dt.datetime | None = None


@dataclass(frozen=True)
class LaunchError:
    """One failed pool of a CreateFleet answer."""

    pool: model.Pool
    code: str
    message: str

    @property
    def kind(self) -> errors.ErrorClass:
        return errors.classify_code(self.code)


@dataclass(frozen=True)
class LaunchResult:
    """What one launch got: instance ids and the pools that failed (a partial fill has both)."""

    instance_ids: tuple[str, ...] = ()
    errors: tuple[LaunchError, ...] = ()
    request_id: str = ""  # the AWS request id of the answer (the audit store's actions)


@dataclass(frozen=True)
class TerminateResult:
    """What a terminate got: the ids EC2 reported terminating, and the AWS request id of
    each batch's answer (the audit store's actions)."""

    instance_ids: tuple[str, ...] = ()
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PricePoint:
    """One DescribeSpotPriceHistory row (USD per instance-hour, Linux/UNIX)."""

    instance_type: str
    zone: str
    at: dt.datetime
    price: float


class CloudProvider(Protocol):
    """EC2 for one tenant in one region (see the module docstring for the contract)."""

    async def account_id(self) -> str:
        """The AWS account the credentials act in (STS GetCallerIdentity, which needs no
        permission): tenants of one account share its instance sweep."""
        ...

    async def owned_instances(self, policy_uid: str | None = None) -> list[OwnedInstance]:
        """Pending and running instances with the ownership tags: of ``policy_uid``, or of
        every policy when None (the shared sweep). Sorted by instance id."""
        ...

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> Sequence[PricePoint]:
        """Every Linux/UNIX spot price change since ``start`` in every zone (paginated)."""
        ...

    async def subnets_by_zone(
        self, subnet_ids: Sequence[str] = (), tags: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Zone -> subnet id of the selected subnets (by ids, or carrying every tag; value
        ``*`` matches any value); the one with the most free addresses per zone."""
        ...

    async def launch_templates(self) -> dict[str, TemplateInfo]:
        """Every launch template the operator made in this account and region, by name
        (one paginated call: templates are looked up, never discovered by a failing call)."""
        ...

    async def create_launch_template(self, spec: LaunchSpec, tags: dict[str, str]) -> TemplateInfo:
        """Create the shared template of ``spec`` (:func:`shared_template_name`). Idempotent
        for the same spec: a retry, or another policy's create, gets the same template."""
        ...

    async def launch(
        self,
        pool: model.Pool,
        count: int,
        template: str,
        token: str,
        tags: dict[str, str],
        subnet_id: str | None = None,
        template_version: str | None = None,
    ) -> LaunchResult:
        """Launch ``count`` instances in exactly ``pool`` (EC2 Fleet ``type=instant``).
        Idempotent by ``token``: the same token returns the original launch, never a
        second one. Capacity and quota failures come back in ``errors``, not raised."""
        ...

    async def terminate(self, instance_ids: Sequence[str]) -> TerminateResult:
        """Terminate in batches; ids already gone (not found) are not an error. Returns
        the ids EC2 reported terminating and each answered batch's request id."""
        ...

    async def untag(self, instances: Sequence[OwnedInstance]) -> None:
        """Remove exactly the ownership tags (the instances are orphaned, left running)."""
        ...

    async def delete_launch_template(self, name: str) -> bool:
        """Delete a template the operator made; False (not an error) when already gone."""
        ...


class DryRunViolation(RuntimeError):
    """A dry-run policy reached a mutating call: a bug, never an AWS error."""


class DryRunGuard:
    """Wraps a CloudProvider for a dry-run policy: reads pass through, any method in
    :data:`MUTATING_METHODS` raises :class:`DryRunViolation` instead of calling AWS."""

    def __init__(self, inner: CloudProvider) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in MUTATING_METHODS:

            async def refused(*_: Any, **__: Any) -> Any:
                raise DryRunViolation(f"dry run: {name} would change EC2")

            return refused
        return getattr(self._inner, name)

"""The EC2 adapter: the only code that calls EC2 (through boto3, off the event loop).

Ownership: every instance and fleet the operator launches carries the tags in
:func:`ownership_tags`; the fleet snapshot is rebuilt from them on every
reconcile, so a restarted operator adopts what it launched. Launches use EC2
Fleet ``type=instant`` with one override per pool and an idempotency token.
All list calls paginate. Errors are raised as :class:`errors.AwsError`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from spotfleet_engine import model
from spotfleet_operator.aws import credentials, errors

TAG_PREFIX = "spotfleet.dev/"
TAG_POLICY_UID = TAG_PREFIX + "policy-uid"
TAG_POLICY = TAG_PREFIX + "policy"  # "namespace/name"
TAG_POOL = TAG_PREFIX + "pool"  # Pool.key()
TAG_MANAGED = TAG_PREFIX + "managed-by"
TAG_SPEC_HASH = TAG_PREFIX + "launch-spec-hash"
OWNERSHIP_KEYS = (TAG_POLICY_UID, TAG_POLICY, TAG_POOL, TAG_MANAGED)
#: EC2 mutating operations (used by dry-run accounting and metrics).
MUTATING = frozenset(
    {
        "RunInstances",
        "CreateFleet",
        "TerminateInstances",
        "CreateLaunchTemplate",
        "CreateLaunchTemplateVersion",
        "ModifyLaunchTemplate",
        "DeleteLaunchTemplate",
        "CreateTags",
        "DeleteTags",
        "DeleteFleets",
    }
)
TERMINATE_BATCH = 500

#: Called after every AWS call with (operation, error code or "").
CallObserver = Callable[[str, str], None]


def ownership_tags(policy_uid: str, namespace: str, name: str, pool: model.Pool) -> dict[str, str]:
    """The tags that make an instance part of a policy's fleet."""
    return {
        TAG_POLICY_UID: policy_uid,
        TAG_POLICY: f"{namespace}/{name}",
        TAG_POOL: pool.key(),
        TAG_MANAGED: "spotfleet",
    }


def launch_template_name(policy_uid: str) -> str:
    """One launch template per policy, named after its uid (stable across renames)."""
    return f"spotfleet-{policy_uid}"


def idempotency_token(
    policy_uid: str, generation: int, plan_hash: str, pool: model.Pool, seen: Iterable[str]
) -> str:
    """ClientToken for one pool's launch: (policy uid, generation, plan hash, pool, and
    the instance ids already seen in that pool). Re-running the same reconcile after a
    crash repeats the token (AWS answers with the original launch); once an instance is
    lost its id leaves ``seen`` and the replacement gets a new token. <= 64 chars."""
    text = "\n".join([policy_uid, str(generation), plan_hash, pool.key(), *sorted(seen)])
    return "sf-" + hashlib.sha256(text.encode()).hexdigest()[:48]


@dataclass(frozen=True)
class OwnedInstance:
    """An instance carrying a policy's ownership tags."""

    instance_id: str
    pool: model.Pool
    state: str
    launched_at: dt.datetime
    policy_uid: str
    policy_ref: str


@dataclass(frozen=True)
class LaunchSpec:
    """What every instance of a policy is launched with (spec.launch)."""

    image_id: str | None = None
    launch_template_name: str | None = None  # user's own template (used as is)
    launch_template_version: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    user_data: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    iam_instance_profile_name: str | None = None

    def content_hash(self) -> str:
        return hashlib.sha256(
            json.dumps(self.__dict__, sort_keys=True, default=list).encode()
        ).hexdigest()[:16]


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
    instance_ids: tuple[str, ...] = ()
    errors: tuple[LaunchError, ...] = ()
    fleet_id: str | None = None


@dataclass(frozen=True)
class PricePoint:
    instance_type: str
    zone: str
    at: dt.datetime
    price: float


@dataclass
class Ec2:
    """EC2 calls for one tenant and region. Public methods are coroutines that run
    the blocking boto3 call in a worker thread."""

    sessions: credentials.SessionCache
    creds: credentials.TenantCredentials
    region: str
    observer: CallObserver | None = None
    _client: Any = field(default=None, init=False, repr=False)

    def client(self) -> Any:
        if self._client is None:
            c = self.sessions.client("ec2", self.creds, self.region)
            if self.observer is not None:
                obs = self.observer

                def after(event_name: str, parsed: Any = None, **_: Any) -> None:
                    op = event_name.rsplit(".", 1)[-1]
                    code = ""
                    if isinstance(parsed, dict):
                        code = str(parsed.get("Error", {}).get("Code", ""))
                    obs(op, code)

                c.meta.events.register("after-call.ec2", after)  # type: ignore[attr-defined]
            self._client = c
        return self._client

    async def _call(self, op: str, fn: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise errors.AwsError.wrap(op, e) from None

    # ---- observe ---------------------------------------------------------

    async def owned_instances(self, policy_uid: str | None = None) -> list[OwnedInstance]:
        """Pending/running instances with the ownership tags (of one policy, or of any)."""
        filters: list[dict[str, Any]] = [
            {"Name": "instance-state-name", "Values": ["pending", "running"]}
        ]
        if policy_uid is None:
            filters.append({"Name": "tag-key", "Values": [TAG_POLICY_UID]})
        else:
            filters.append({"Name": "tag:" + TAG_POLICY_UID, "Values": [policy_uid]})

        def run() -> list[OwnedInstance]:
            out: list[OwnedInstance] = []
            pages = self.client().get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for res in page.get("Reservations", []):
                    for inst in res.get("Instances", []):
                        owned = _owned(inst)
                        if owned is not None:
                            out.append(owned)
            return sorted(out, key=lambda o: o.instance_id)

        result: list[OwnedInstance] = await self._call("DescribeInstances", run)
        return result

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> list[PricePoint]:
        """Linux/UNIX spot price changes since ``start`` (every zone), paginated."""
        kwargs: dict[str, Any] = {"StartTime": start, "ProductDescriptions": ["Linux/UNIX"]}
        if end is not None:
            kwargs["EndTime"] = end
        if instance_types:
            kwargs["InstanceTypes"] = list(instance_types)

        def run() -> list[PricePoint]:
            out = []
            for page in (
                self.client().get_paginator("describe_spot_price_history").paginate(**kwargs)
            ):
                for row in page.get("SpotPriceHistory", []):
                    out.append(
                        PricePoint(
                            row["InstanceType"],
                            row["AvailabilityZone"],
                            row["Timestamp"],
                            float(row["SpotPrice"]),
                        )
                    )
            return out

        result: list[PricePoint] = await self._call("DescribeSpotPriceHistory", run)
        return result

    async def subnets_by_zone(
        self, subnet_ids: Sequence[str] = (), tags: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Zone -> subnet id for the selected subnets (by ids, or carrying every tag;
        value ``*`` matches any value). With several subnets in a zone, the one with
        the most free addresses wins."""
        filters: list[dict[str, Any]] = []
        for k, v in (tags or {}).items():
            filters.append(
                {"Name": "tag-key", "Values": [k]}
                if v == "*"
                else {"Name": f"tag:{k}", "Values": [v]}
            )
        kwargs: dict[str, Any] = {}
        if subnet_ids:
            kwargs["SubnetIds"] = list(subnet_ids)
        if filters:
            kwargs["Filters"] = filters

        def run() -> dict[str, str]:
            best: dict[str, tuple[int, str]] = {}
            for page in self.client().get_paginator("describe_subnets").paginate(**kwargs):
                for sn in page.get("Subnets", []):
                    zone, free = sn["AvailabilityZone"], int(sn.get("AvailableIpAddressCount", 0))
                    if zone not in best or free > best[zone][0]:
                        best[zone] = (free, sn["SubnetId"])
            return {z: sid for z, (_, sid) in best.items()}

        result: dict[str, str] = await self._call("DescribeSubnets", run)
        return result

    # ---- act -------------------------------------------------------------

    async def ensure_launch_template(
        self, policy_uid: str, spec: LaunchSpec, tags: dict[str, str]
    ) -> str:
        """Create (or update, when ``spec`` changed) the policy's launch template; returns its name.
        A user-supplied template name is returned untouched."""
        if spec.launch_template_name:
            return spec.launch_template_name
        name = launch_template_name(policy_uid)
        digest = spec.content_hash()
        data: dict[str, Any] = {}
        if spec.image_id:
            data["ImageId"] = spec.image_id
        if spec.security_group_ids:
            data["SecurityGroupIds"] = list(spec.security_group_ids)
        if spec.user_data:
            data["UserData"] = base64.b64encode(spec.user_data.encode()).decode()
        if spec.iam_instance_profile_name:
            data["IamInstanceProfile"] = {"Name": spec.iam_instance_profile_name}
        data["MetadataOptions"] = {"HttpTokens": "required"}
        lt_tags = [{"Key": k, "Value": v} for k, v in {**tags, TAG_SPEC_HASH: digest}.items()]

        def run() -> str:
            c = self.client()
            try:
                found = c.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
            except botocore.exceptions.ClientError as e:
                if errors.classify(e) not in (
                    errors.ErrorClass.NOT_FOUND,
                    errors.ErrorClass.INVALID,
                ):
                    raise
                found = []
            if not found:
                c.create_launch_template(
                    LaunchTemplateName=name,
                    LaunchTemplateData=data,
                    ClientToken=("lt-" + policy_uid + digest)[:64],
                    TagSpecifications=[{"ResourceType": "launch-template", "Tags": lt_tags}],
                )
                return name
            current = {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}
            if current.get(TAG_SPEC_HASH) != digest:
                v = c.create_launch_template_version(
                    LaunchTemplateName=name, LaunchTemplateData=data
                )
                c.modify_launch_template(
                    LaunchTemplateName=name,
                    DefaultVersion=str(v["LaunchTemplateVersion"]["VersionNumber"]),
                )
                c.create_tags(
                    Resources=[found[0]["LaunchTemplateId"]],
                    Tags=[{"Key": TAG_SPEC_HASH, "Value": digest}],
                )
            return name

        result: str = await self._call("EnsureLaunchTemplate", run)
        return result

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
        """CreateFleet type=instant for ``count`` instances in exactly ``pool``."""
        override: dict[str, Any] = {
            "InstanceType": pool.instance_type,
            "AvailabilityZone": pool.zone,
        }
        if subnet_id:
            override["SubnetId"] = subnet_id
        spot = pool.market is model.Market.SPOT
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        req: dict[str, Any] = {
            "ClientToken": token,
            "Type": "instant",
            "LaunchTemplateConfigs": [
                {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateName": template,
                        "Version": template_version or "$Default",
                    },
                    "Overrides": [override],
                }
            ],
            "TargetCapacitySpecification": {
                "TotalTargetCapacity": count,
                "OnDemandTargetCapacity": 0 if spot else count,
                "SpotTargetCapacity": count if spot else 0,
                "DefaultTargetCapacityType": "spot" if spot else "on-demand",
            },
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "fleet", "Tags": tag_list},
            ],
        }
        if spot:
            req["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}

        def run() -> LaunchResult:
            out = self.client().create_fleet(**req)
            ids = tuple(
                i for block in out.get("Instances", []) for i in block.get("InstanceIds", [])
            )
            errs = tuple(
                LaunchError(pool, e.get("ErrorCode", ""), e.get("ErrorMessage", ""))
                for e in out.get("Errors", [])
            )
            return LaunchResult(ids, errs, out.get("FleetId"))

        result: LaunchResult = await self._call("CreateFleet", run)
        return result

    async def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        """Terminate in batches; ids already gone are tolerated. Returns what was terminated."""
        done: list[str] = []
        for i in range(0, len(instance_ids), TERMINATE_BATCH):
            batch = list(instance_ids[i : i + TERMINATE_BATCH])

            def run(batch: list[str] = batch) -> list[str]:
                try:
                    out = self.client().terminate_instances(InstanceIds=batch)
                    return [x["InstanceId"] for x in out.get("TerminatingInstances", [])]
                except botocore.exceptions.ClientError as e:
                    if errors.classify(e) is errors.ErrorClass.NOT_FOUND:
                        return []
                    raise

            done.extend(await self._call("TerminateInstances", run))
        return done

    async def untag(self, instances: Sequence[OwnedInstance]) -> None:
        """Remove the ownership tags (orphan the instances). Values are given with the
        keys (DeleteTags then removes exactly our tags), grouped per pool and batched."""
        groups: dict[tuple[str, str, str], list[str]] = {}
        for o in instances:
            groups.setdefault((o.policy_uid, o.policy_ref, o.pool.key()), []).append(o.instance_id)
        for (uid, ref, pool), ids in sorted(groups.items()):
            tags = [
                {"Key": TAG_POLICY_UID, "Value": uid},
                {"Key": TAG_POLICY, "Value": ref},
                {"Key": TAG_POOL, "Value": pool},
                {"Key": TAG_MANAGED, "Value": "spotfleet"},
            ]
            for i in range(0, len(ids), TERMINATE_BATCH):
                batch = ids[i : i + TERMINATE_BATCH]

                def run(batch: list[str] = batch, tags: list[dict[str, str]] = tags) -> None:
                    self.client().delete_tags(Resources=batch, Tags=tags)

                await self._call("DeleteTags", run)

    async def delete_launch_template(self, policy_uid: str) -> bool:
        """Delete the policy's own template; False when it was already gone."""
        name = launch_template_name(policy_uid)

        def run() -> bool:
            try:
                self.client().delete_launch_template(LaunchTemplateName=name)
                return True
            except botocore.exceptions.ClientError as e:
                if errors.classify(e) in (errors.ErrorClass.NOT_FOUND, errors.ErrorClass.INVALID):
                    return False
                raise

        result: bool = await self._call("DeleteLaunchTemplate", run)
        return result

    async def check_identity(self) -> str:
        """Cheap authenticated read (DescribeAvailabilityZones) proving the credentials work;
        returns the zones' names joined (for logs)."""

        def run() -> str:
            zones = self.client().describe_availability_zones()["AvailabilityZones"]
            return ",".join(sorted(z["ZoneName"] for z in zones))

        result: str = await self._call("DescribeAvailabilityZones", run)
        return result


def _owned(inst: dict[str, Any]) -> OwnedInstance | None:
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    uid = tags.get(TAG_POLICY_UID)
    if not uid:
        return None
    try:
        pool = model.Pool.parse(tags[TAG_POOL])
    except (KeyError, ValueError):
        market = (
            model.Market.SPOT if inst.get("InstanceLifecycle") == "spot" else model.Market.ON_DEMAND
        )
        pool = model.Pool(inst["InstanceType"], inst["Placement"]["AvailabilityZone"], market)
    launched = inst.get("LaunchTime") or dt.datetime.now(dt.UTC)
    if launched.tzinfo is None:
        launched = launched.replace(tzinfo=dt.UTC)
    return OwnedInstance(
        inst["InstanceId"], pool, inst["State"]["Name"], launched, uid, tags.get(TAG_POLICY, "")
    )

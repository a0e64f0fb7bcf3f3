"""The EC2 adapter: the :class:`~spotfleet_operator.aws.port.CloudProvider` the operator
runs on, over boto3. The only code that calls EC2 for a tenant.

Blocking boto3 calls run on the AWS thread pool of :class:`Calls` (never the event
loop's default executor, which Kubernetes calls and everything else share), at most
``per_tenant`` of them at once for one tenant, each within ``timeout`` seconds
(retries included): a tenant whose endpoint hangs holds at most its own share of the
pool and fails in bounded time, and no other tenant waits for it. Request shapes
come from :mod:`~spotfleet_operator.aws.requests`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import botocore.exceptions

from spotfleet_engine import model
from spotfleet_operator.aws import credentials, errors, port, requests

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

T = TypeVar("T")
#: How many requests' deadlines a paginated read gets (a full 72-hour price history is
#: about a dozen pages).
PAGED = 20


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome so it is never reported as unhandled."""
    if not fut.cancelled():
        fut.exception()


class Calls:
    """Where blocking AWS calls run: one bounded thread pool, a per-tenant share of it,
    and a deadline per call."""

    def __init__(self, workers: int, per_tenant: int, timeout: float) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="aws")
        self.per_tenant = max(1, per_tenant)
        self.timeout = timeout
        self._limits: dict[str, asyncio.Semaphore] = {}

    def _limit(self, tenant: str) -> asyncio.Semaphore:
        sem = self._limits.get(tenant)
        if sem is None:
            sem = self._limits[tenant] = asyncio.Semaphore(self.per_tenant)
        return sem

    async def run(self, tenant: str, op: str, fn: Callable[[], T], pages: int = 1) -> T:
        """``fn()`` on the pool as ``tenant``; AWS failures and the deadline (``timeout``
        per request, times ``pages`` for a paginated read: each page is a request of its
        own, itself bounded by botocore's per-attempt timeouts) become AwsError."""
        deadline = self.timeout * max(1, pages)
        loop = asyncio.get_running_loop()
        sem = self._limit(tenant)
        await sem.acquire()
        # the tenant's share is released when the THREAD is done, not when we stop
        # waiting: a call abandoned at its deadline still holds its worker
        fut = loop.run_in_executor(self.pool, fn)
        fut.add_done_callback(lambda _: sem.release())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), deadline)
        except TimeoutError:
            fut.add_done_callback(_consume)
            raise errors.AwsError(
                op, "Timeout", f"no answer within {deadline:g} s", errors.ErrorClass.TRANSIENT
            ) from None
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise errors.AwsError.wrap(op, e) from None

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Ec2:
    """EC2 for one tenant and region (implements :class:`port.CloudProvider`)."""

    clients: credentials.ClientCache
    calls: Calls
    creds: credentials.TenantCredentials
    region: str
    _tenant: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._tenant = credentials.fingerprint(self.creds)

    def client(self) -> EC2Client:
        """The shared EC2 client of the region (calls go through :meth:`_call`, which
        signs them as this tenant)."""
        c: EC2Client = self.clients.client("ec2", self.region)
        return c

    async def _call(self, op: str, fn: Callable[[], T], pages: int = 1) -> T:
        creds, region = self.creds, self.region
        return await self.calls.run(
            self._tenant, op, lambda: self.clients.call(creds, region, fn), pages
        )

    # ---- observe ---------------------------------------------------------------

    async def account_id(self) -> str:
        def run() -> str:
            sts: Any = self.clients.client("sts", self.region)
            return str(sts.get_caller_identity()["Account"])

        return await self._call("GetCallerIdentity", run)

    async def owned_instances(self, policy_uid: str | None = None) -> list[port.OwnedInstance]:
        filters = requests.owned_instances_filters(policy_uid)

        def run() -> list[port.OwnedInstance]:
            out: list[port.OwnedInstance] = []
            pages = self.client().get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for res in page.get("Reservations", []):
                    for inst in res.get("Instances", []):
                        owned = owned_instance(inst)
                        if owned is not None:
                            out.append(owned)
            return sorted(out, key=lambda o: o.instance_id)

        return await self._call("DescribeInstances", run, PAGED)

    async def spot_price_history(
        self, start: dt.datetime, end: dt.datetime | None = None, instance_types: Sequence[str] = ()
    ) -> list[port.PricePoint]:
        kwargs = requests.spot_price_history(start, end, instance_types)

        def run() -> list[port.PricePoint]:
            out = []
            paginator = self.client().get_paginator("describe_spot_price_history")
            for page in paginator.paginate(**kwargs):
                for row in page.get("SpotPriceHistory", []):
                    out.append(
                        port.PricePoint(
                            row["InstanceType"],
                            row["AvailabilityZone"],
                            utc(row["Timestamp"]),
                            float(row["SpotPrice"]),
                        )
                    )
            return out

        return await self._call("DescribeSpotPriceHistory", run, PAGED)

    async def subnets_by_zone(
        self, subnet_ids: Sequence[str] = (), tags: dict[str, str] | None = None
    ) -> dict[str, str]:
        kwargs = requests.subnets(subnet_ids, tags)

        def run() -> dict[str, str]:
            best: dict[str, tuple[int, str]] = {}
            for page in self.client().get_paginator("describe_subnets").paginate(**kwargs):
                for sn in page.get("Subnets", []):
                    zone, free = sn["AvailabilityZone"], int(sn.get("AvailableIpAddressCount", 0))
                    if zone not in best or free > best[zone][0]:
                        best[zone] = (free, sn["SubnetId"])
            return {z: sid for z, (_, sid) in best.items()}

        return await self._call("DescribeSubnets", run)

    async def launch_templates(self) -> dict[str, port.TemplateInfo]:
        filters = requests.launch_templates_filters()

        def run() -> dict[str, port.TemplateInfo]:
            out: dict[str, port.TemplateInfo] = {}
            paginator = self.client().get_paginator("describe_launch_templates")
            for page in paginator.paginate(Filters=filters):
                for lt in page.get("LaunchTemplates", []):
                    tags = {t["Key"]: t["Value"] for t in lt.get("Tags", [])}
                    name = lt["LaunchTemplateName"]
                    out[name] = port.TemplateInfo(
                        name,
                        lt["LaunchTemplateId"],
                        tags.get(port.TAG_SPEC_HASH, ""),
                        utc(lt["CreateTime"]) if lt.get("CreateTime") else None,
                    )
            return out

        return await self._call("DescribeLaunchTemplates", run, PAGED)

    # ---- act -------------------------------------------------------------------

    async def create_launch_template(
        self, spec: port.LaunchSpec, tags: dict[str, str]
    ) -> port.TemplateInfo:
        req = requests.create_launch_template(spec, tags)

        def run() -> port.TemplateInfo:
            out = self.client().create_launch_template(**req)["LaunchTemplate"]
            return port.TemplateInfo(
                out["LaunchTemplateName"],
                out["LaunchTemplateId"],
                spec.content_hash(),
                utc(out["CreateTime"]) if out.get("CreateTime") else None,
            )

        return await self._call("CreateLaunchTemplate", run)

    async def launch(
        self,
        pool: model.Pool,
        count: int,
        template: str,
        token: str,
        tags: dict[str, str],
        subnet_id: str | None = None,
        template_version: str | None = None,
    ) -> port.LaunchResult:
        req = requests.create_fleet(pool, count, template, token, tags, subnet_id, template_version)

        def run() -> port.LaunchResult:
            out = self.client().create_fleet(**req)
            ids = tuple(
                i for block in out.get("Instances", []) for i in block.get("InstanceIds", [])
            )
            errs = tuple(
                port.LaunchError(pool, e.get("ErrorCode", ""), e.get("ErrorMessage", ""))
                for e in out.get("Errors", [])
            )
            rid = errors.request_id(out)
            return port.LaunchResult(ids, errs, rid)

        return await self._call("CreateFleet", run)

    async def terminate(self, instance_ids: Sequence[str]) -> port.TerminateResult:
        done: list[str] = []
        rids: list[str] = []
        for batch in requests.batches(instance_ids):

            def run(batch: list[str] = batch) -> tuple[list[str], str]:
                try:
                    out = self.client().terminate_instances(InstanceIds=batch)
                except botocore.exceptions.ClientError as e:
                    if errors.classify(e) is errors.ErrorClass.NOT_FOUND:
                        return [], errors.request_id(e.response)
                    raise
                rid = errors.request_id(out)
                return [x["InstanceId"] for x in out.get("TerminatingInstances", [])], rid

            got, rid = await self._call("TerminateInstances", run)
            done.extend(got)
            if rid:
                rids.append(rid)
        return port.TerminateResult(tuple(done), tuple(rids))

    async def untag(self, instances: Sequence[port.OwnedInstance]) -> None:
        for resources, tag_list in requests.untag(instances):

            def run(resources: list[str] = resources, tag_list: Any = tag_list) -> None:
                self.client().delete_tags(Resources=resources, Tags=tag_list)

            await self._call("DeleteTags", run)

    async def delete_launch_template(self, name: str) -> bool:
        def run() -> bool:
            try:
                self.client().delete_launch_template(LaunchTemplateName=name)
                return True
            except botocore.exceptions.ClientError as e:
                if errors.classify(e) in (errors.ErrorClass.NOT_FOUND, errors.ErrorClass.INVALID):
                    return False
                raise

        return await self._call("DeleteLaunchTemplate", run)


def utc(t: dt.datetime) -> dt.datetime:
    """``t`` as an aware UTC datetime (botocore hands out dateutil time zones, one object
    per parsed timestamp: kept by the thousand in a market snapshot)."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def owned_instance(inst: Any) -> port.OwnedInstance | None:
    """An instance of a DescribeInstances answer as an OwnedInstance (None without our
    uid tag). A missing or malformed pool tag falls back to the instance's own type,
    zone and lifecycle, so a hand-edited tag never hides an instance."""
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    uid = tags.get(port.TAG_POLICY_UID)
    if not uid:
        return None
    try:
        pool = model.Pool.parse(tags[port.TAG_POOL])
    except (KeyError, ValueError):
        market = (
            model.Market.SPOT if inst.get("InstanceLifecycle") == "spot" else model.Market.ON_DEMAND
        )
        pool = model.Pool(inst["InstanceType"], inst["Placement"]["AvailabilityZone"], market)
    launched = utc(inst.get("LaunchTime") or dt.datetime.now(dt.UTC))
    return port.OwnedInstance(
        inst["InstanceId"],
        pool,
        inst["State"]["Name"],
        launched,
        uid,
        tags.get(port.TAG_POLICY, ""),
        tags.get(port.TAG_SPEC_HASH, ""),
    )

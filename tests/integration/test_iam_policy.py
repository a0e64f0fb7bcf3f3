"""docs/iam-policy.json holds exactly the AWS actions the operator calls: the operations
of the cloud port (``port.OPERATIONS``), of the interruption queue (``aws/queue.py``) and
sts:AssumeRole (``aws/credentials.py``), plus the two actions AWS authorises those calls
with (CreateFleet launches through RunInstances; tagging at creation needs CreateTags).
A real run of the operator's AWS adapters against the stand-in cloud must call exactly
the document's actions, each identity (tenant, operator) only its own statements'."""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from spotfleet_engine import model
from spotfleet_operator.aws import credentials, ec2, port, queue
from tests.fixtures import cloud as cloud_fx

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "docs" / "iam-policy.json"
AWS = REPO / "operator" / "spotfleet_operator" / "aws"
#: Actions AWS checks for a call although the operator never calls them itself.
IMPLIED = {"ec2:CreateTags", "ec2:RunInstances"}
#: API operation -> IAM action, where the names differ.
ACTION_OF = {
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
SERVICE_OF = {"GetCallerIdentity": "sts", "AssumeRole": "sts"}
TENANT_KEY, OPERATOR_KEY = "AKIATENANTEXAMPLE001", "AKIAOPERATOREXAMPLE1"
SETUP_KEY = "testing"  # the test's own set-up calls (moto's dummy keys)


def action(operation: str, service: str = "ec2") -> str:
    return ACTION_OF.get(operation, f"{SERVICE_OF.get(operation, service)}:{operation}")


def statements() -> dict[str, set[str]]:
    """Sid -> actions of the document."""
    doc = json.loads(DOCUMENT.read_text())
    assert doc["Version"] == "2012-10-17"
    out: dict[str, set[str]] = {}
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow" and st["Sid"] not in out
        acts = st["Action"]
        out[st["Sid"]] = {acts} if isinstance(acts, str) else set(acts)
    return out


def of(prefix: str) -> set[str]:
    return {a for sid, acts in statements().items() if sid.startswith(prefix) for a in acts}


def queue_operations() -> set[str]:
    """The operation names aws/queue.py passes to ``self.calls.run(tenant, "<Op>", ...)``
    or ``self._batched("<Op>", ...)``."""
    tree = ast.parse((AWS / "queue.py").read_text())
    ops = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            ops.add(str(node.args[1].value))
        elif (  # self._batched("<Op>", ...)
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "_batched"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            ops.add(str(node.args[0].value))
    return ops


def called_by_tenants() -> set[str]:
    return {action(op) for ops, _ in port.OPERATIONS.values() for op in ops}


def called_by_the_operator() -> set[str]:
    assert ".assume_role(" in (AWS / "credentials.py").read_text()
    return {action(op, "sqs") for op in queue_operations()} | {"sts:AssumeRole"}


def test_the_document_lists_exactly_what_the_code_calls() -> None:
    assert queue_operations() == {
        "ReceiveMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibilityBatch",
    }
    tenant, operator = of("Tenant"), of("Operator")
    assert set(statements()) == {
        sid for sid in statements() if sid.startswith(("Tenant", "Operator"))
    }
    assert tenant == called_by_tenants() | IMPLIED, tenant ^ (called_by_tenants() | IMPLIED)
    assert operator == called_by_the_operator(), operator ^ called_by_the_operator()
    assert statements()["TenantImpliedByCreateCalls"] == IMPLIED
    # the mutating operations of the port are exactly the tenant's "Act" statement
    assert statements()["TenantAct"] == {action(op) for op in port.MUTATING_OPERATIONS}


async def _drive(cloud: cloud_fx.Cloud, queue_url: str) -> None:
    """Every method of the EC2 adapter and of the queue, as the running operator calls them."""
    clients = credentials.ClientCache(cloud.endpoint_url)
    calls = ec2.Calls(4, 2, 60.0)
    try:
        tenant = ec2.Ec2(
            clients, calls, credentials.StaticKeys(TENANT_KEY, "tenant-secret"), "us-east-1"
        )
        assert await tenant.account_id()
        now = dt.datetime.now(dt.UTC)
        assert await tenant.spot_price_history(now - dt.timedelta(hours=1), now, ["m5.large"])
        subnets = await tenant.subnets_by_zone(tags={"*": "*"})
        assert await tenant.launch_templates() == {}
        spec = port.LaunchSpec(image_id="ami-0123456789abcdef0")
        pool = model.Pool("m5.large", "us-east-1a", model.Market.SPOT)
        owner = port.ownership_tags("uid-1", "team-a", "web", pool)
        template = await tenant.create_launch_template(spec, owner)
        launched = await tenant.launch(
            pool, 2, template.name, "sf-iam-test", owner, subnets.get("us-east-1a")
        )
        assert len(launched.instance_ids) == 2, launched
        owned = await tenant.owned_instances("uid-1")
        assert {o.instance_id for o in owned} == set(launched.instance_ids)
        await tenant.untag(owned[:1])
        gone = await tenant.terminate(list(launched.instance_ids))
        assert set(gone.instance_ids) == set(launched.instance_ids) and gone.request_ids
        assert await tenant.delete_launch_template(template.name)
        # a tenant that names a role: the operator assumes it, then acts as the role
        role = credentials.AssumeRole("arn:aws:iam::123456789012:role/spotfleet-tenant-b")
        assumed = ec2.Ec2(clients, calls, role, "us-east-1")
        assert await assumed.account_id()
        assert await assumed.owned_instances(None) == []
        # the interruption queue, with the operator's own identity
        q = queue.Queue(clients, calls, queue_url, "us-east-1")
        messages = await q.receive(wait_seconds=1)
        assert len(messages) == 2, messages
        first, second = messages
        await q.release([second.receipt], 0)
        await q.delete([first.receipt])
    finally:
        calls.shutdown()


def test_a_real_run_calls_exactly_the_documents_actions(
    cloud_reset: cloud_fx.Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = cloud_reset
    sqs = cloud.boto3_client("sqs")
    url = sqs.create_queue(QueueName="spotfleet-interruptions")["QueueUrl"]
    for n in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}))
    cloud.client.reset_call_counts()
    # the operator's own identity is its environment's (IRSA, a Secret's keys...)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", OPERATOR_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret")
    asyncio.run(_drive(cloud, url))

    by_key = cloud.client.call_counts().by_access_key
    assert SETUP_KEY not in by_key and "" not in by_key, by_key
    sqs_ops = queue_operations()
    recorded = {
        key: {action(op, "sqs" if op in sqs_ops else "ec2") for op in ops}
        for key, ops in by_key.items()
    }
    operator = recorded.pop(OPERATOR_KEY)
    tenant = recorded.pop(TENANT_KEY)
    (assumed,) = recorded.values()  # the role's temporary keys (moto's ASIA...)
    assert operator == of("Operator"), operator ^ of("Operator")
    assert tenant | assumed <= of("Tenant"), (tenant | assumed) - of("Tenant")
    # nothing missing: every action in the document was called, or is implied by one
    assert tenant == of("Tenant") - IMPLIED, tenant ^ (of("Tenant") - IMPLIED)
    assert assumed == {"sts:GetCallerIdentity", "ec2:DescribeInstances"}

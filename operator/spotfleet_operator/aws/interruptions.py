"""EC2 spot interruption warnings and rebalance recommendations, as EventBridge
delivers them to an SQS queue, turned into :class:`Notice` objects."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from spotfleet_operator.aws import credentials, ec2, errors

INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"


@dataclass(frozen=True)
class Notice:
    """One notice about one instance; ``owner_uid``/``owner_ref`` from its tags ("" if not ours)."""

    kind: str  # INTERRUPTION | REBALANCE
    instance_id: str
    owner_uid: str
    owner_ref: str  # "namespace/name"
    pool_key: str


def parse_event(body: str) -> tuple[str, str] | None:
    """(detail-type, instance id) of an EventBridge EC2 event, or None for anything else."""
    try:
        ev = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(ev, dict) or ev.get("source") != "aws.ec2":
        return None
    kind = ev.get("detail-type")
    detail = ev.get("detail") or {}
    iid = detail.get("instance-id") if isinstance(detail, dict) else None
    if kind in (INTERRUPTION, REBALANCE) and isinstance(iid, str):
        return str(kind), iid
    return None


class Queue:
    """Drains one SQS queue with the operator's own identity."""

    def __init__(self, sessions: credentials.SessionCache, queue_url: str, region: str) -> None:
        self.sessions = sessions
        self.queue_url = queue_url
        self.region = region

    async def receive(self, wait_seconds: int = 1) -> list[Notice]:
        """Receive up to 10 messages, resolve each instance's owner, delete them."""

        def run() -> list[Notice]:
            sqs: Any = self.sessions.client("sqs", None, self.region)
            ec2c: Any = self.sessions.client("ec2", None, self.region)
            out = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
            )
            notices: list[Notice] = []
            for msg in out.get("Messages", []):
                parsed = parse_event(msg.get("Body", ""))
                if parsed is not None:
                    kind, iid = parsed
                    tags: dict[str, str] = {}
                    try:
                        res = ec2c.describe_instances(InstanceIds=[iid])
                        for r in res.get("Reservations", []):
                            for inst in r.get("Instances", []):
                                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    except botocore.exceptions.ClientError as e:
                        if errors.classify(e) is not errors.ErrorClass.NOT_FOUND:
                            raise
                    notices.append(
                        Notice(
                            kind,
                            iid,
                            tags.get(ec2.TAG_POLICY_UID, ""),
                            tags.get(ec2.TAG_POLICY, ""),
                            tags.get(ec2.TAG_POOL, ""),
                        )
                    )
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=msg["ReceiptHandle"])
            return notices

        try:
            return await asyncio.to_thread(run)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise errors.AwsError.wrap("ReceiveMessage", e) from None

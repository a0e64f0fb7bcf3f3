"""The interruption queue: EC2 events that EventBridge delivers to SQS, received with
the operator's own identity, parsed defensively into :class:`Notice` objects.

:func:`parse_event` never raises, whatever the body (malformed, foreign, deeply
nested, huge): anything that is not one of :data:`KINDS` for an instance id is None.
Messages are deleted by the drainer only after they were handled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spotfleet_operator.aws import credentials, ec2

INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
KINDS = (INTERRUPTION, REBALANCE, STATE_CHANGE)
#: Bodies larger than SQS's own limit are not EC2 events.
MAX_BODY = 262_144
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


@dataclass(frozen=True)
class Notice:
    """One EC2 event about one instance (``state`` only for state changes)."""

    kind: str
    instance_id: str
    state: str = ""


@dataclass(frozen=True)
class Message:
    """One SQS message: its receipt (to delete it) and how often it was received."""

    message_id: str
    receipt: str
    body: str
    receive_count: int


def parse_event(body: object) -> Notice | None:
    """The notice in an EventBridge EC2 event body, or None for anything else."""
    if not isinstance(body, str) or len(body) > MAX_BODY:
        return None
    try:
        ev = json.loads(body)
    except (ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(ev, dict) or ev.get("source") != "aws.ec2":
        return None
    kind = ev.get("detail-type")
    detail = ev.get("detail")
    if kind not in KINDS or not isinstance(detail, dict):
        return None
    iid = detail.get("instance-id")
    if not isinstance(iid, str) or not _INSTANCE_ID.match(iid):
        return None
    state = detail.get("state") if kind == STATE_CHANGE else ""
    return Notice(str(kind), iid, state if isinstance(state, str) else "")


#: The SQS batch operations the queue sends -> their boto3 method.
_BATCH_METHODS = {
    "DeleteMessageBatch": "delete_message_batch",
    "ChangeMessageVisibilityBatch": "change_message_visibility_batch",
}


class Queue:
    """One SQS queue drained with the operator's own identity (blocking calls run on the
    AWS thread pool)."""

    def __init__(
        self,
        clients: credentials.ClientCache,
        calls: ec2.Calls,
        queue_url: str,
        region: str,
    ) -> None:
        self.clients = clients
        self.calls = calls
        self.queue_url = queue_url
        self.region = region

    def _sqs(self) -> Any:
        return self.clients.client("sqs", self.region)

    async def receive(self, wait_seconds: int = 1, max_messages: int = 10) -> list[Message]:
        """Up to ``max_messages`` messages (long poll of ``wait_seconds``)."""

        def run() -> list[Message]:
            out = self._sqs().receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            msgs = []
            for m in out.get("Messages", []):
                attrs = m.get("Attributes") or {}
                try:
                    count = int(attrs.get("ApproximateReceiveCount", "1"))
                except ValueError:
                    count = 1
                msgs.append(
                    Message(m.get("MessageId", ""), m["ReceiptHandle"], m.get("Body", ""), count)
                )
            return msgs

        return await self.calls.run(
            "operator", "ReceiveMessage", lambda: self.clients.call(None, self.region, run)
        )

    async def delete(self, receipts: Sequence[str]) -> None:
        """Delete handled messages (batches of ten)."""
        await self._batched("DeleteMessageBatch", receipts, {})

    async def release(self, receipts: Sequence[str], after_seconds: int = 0) -> None:
        """Make messages visible again after ``after_seconds`` (batches of ten): another
        shard's operator may own their instances, or the sweeps have not seen them yet."""
        extra = {"VisibilityTimeout": after_seconds}
        await self._batched("ChangeMessageVisibilityBatch", receipts, extra)

    async def _batched(
        self, operation: str, receipts: Sequence[str], extra: Mapping[str, Any]
    ) -> None:
        """One SQS batch ``operation`` per ten receipts (each entry ``extra`` too)."""
        method = _BATCH_METHODS[operation]
        for i in range(0, len(receipts), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": r, **extra}
                for n, r in enumerate(receipts[i : i + 10])
            ]

            def run(entries: list[dict[str, Any]] = entries) -> None:
                self.clients.call(
                    None,
                    self.region,
                    lambda: getattr(self._sqs(), method)(QueueUrl=self.queue_url, Entries=entries),
                )

            await self.calls.run("operator", operation, run)

"""The EventBridge rule and SQS queue that deliver EC2 spot interruption warnings,
rebalance recommendations and state changes to the operator (what a user sets up once
per account and region; ``spotfleet demo`` does it in the stand-in cloud)."""

from __future__ import annotations

import json
from typing import Any

from spotfleet_operator.aws import credentials, queue

EVENT_PATTERN = {"source": ["aws.ec2"], "detail-type": list(queue.KINDS)}


def ensure_interruption_queue(
    clients: credentials.ClientCache, region: str, name: str = "spotfleet-interruptions"
) -> str:
    """Create (idempotently) the queue, the rule and its target; return the queue URL.
    Blocking (boto3): call it from a thread in async code."""
    sqs: Any = clients.client("sqs", region)
    events: Any = clients.client("events", region)
    url = str(sqs.create_queue(QueueName=name)["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name=name, EventPattern=json.dumps(EVENT_PATTERN), State="ENABLED")
    events.put_targets(Rule=name, Targets=[{"Id": "spotfleet-queue", "Arn": arn}])
    return url

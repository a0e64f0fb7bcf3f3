"""AWS wire formats the layer speaks: EC2 query requests in, EC2 XML and JSON errors out.

Responses are serialised from botocore's own EC2 service model, so element
names and list wrapping are exactly what boto3's parser expects.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import botocore.model
import botocore.session

EC2_NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"

#: HTTP status AWS uses for the error codes the layer produces.
ERROR_STATUS = {
    "RequestLimitExceeded": 503,
    "InsufficientInstanceCapacity": 500,
    "InternalError": 500,
    "UnauthorizedOperation": 403,
    "AuthFailure": 401,
    "IdempotentParameterMismatch": 400,
    "InvalidParameterValue": 400,
    "MissingParameter": 400,
    "InvalidLaunchTemplateName.NotFoundException": 400,
    "InvalidLaunchTemplateId.NotFound": 400,
    "NotImplementedBySimulator": 501,
    "ServiceUnavailable": 503,
    "BadGateway": 502,
    "GatewayTimeout": 504,
    "VcpuLimitExceeded": 400,
    "MaxSpotInstanceCountExceeded": 400,
}


def parse_time(text: str) -> datetime:
    """ISO-8601 (or epoch seconds) to an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_query(body: bytes) -> dict[str, str]:
    """Flat ``Key.1.Sub=value`` form parameters of an EC2/STS query request."""
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def nest(flat: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``A.1.B=x`` keys into ``{"A": [{"B": "x"}]}`` (numeric parts become lists)."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
    return _listify(root)  # type: ignore[no-any-return]


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


@functools.cache
def ec2_model() -> botocore.model.ServiceModel:
    """botocore's EC2 service model (loaded once)."""
    return botocore.session.get_session().get_service_model("ec2")


def request_id() -> str:
    return str(uuid.uuid4())


def ec2_response(operation: str, data: Mapping[str, Any]) -> bytes:
    """Serialise ``data`` (boto3-shaped output dict) as the EC2 XML response of ``operation``."""
    shape = ec2_model().operation_model(operation).output_shape
    assert isinstance(shape, botocore.model.StructureShape)
    inner = f"<requestId>{request_id()}</requestId>" + _members(shape, data)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{operation}Response xmlns="{EC2_NAMESPACE}">'
        f"{inner}</{operation}Response>"
    ).encode()


def _members(shape: botocore.model.StructureShape, data: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for name, member in shape.members.items():
        if name not in data or data[name] is None:
            continue
        tag = member.serialization.get("name", name[:1].lower() + name[1:])
        parts.append(f"<{tag}>{_value(member, data[name])}</{tag}>")
    return "".join(parts)


def _value(shape: botocore.model.Shape, value: Any) -> str:
    if isinstance(shape, botocore.model.StructureShape):
        return _members(shape, value)
    if isinstance(shape, botocore.model.ListShape):
        item = shape.member.serialization.get("name", "item")
        return "".join(f"<{item}>{_value(shape.member, v)}</{item}>" for v in value)
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        at = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
        at = at.astimezone(UTC)  # milliseconds, truncated (never later than the value)
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return escape(str(value))


def ec2_error(code: str, message: str) -> tuple[int, bytes]:
    """(HTTP status, body) of an EC2 error response."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{request_id()}</RequestID></Response>"
    )
    return ERROR_STATUS.get(code, 400), body.encode()


def query_error(code: str, message: str) -> tuple[int, bytes]:
    """(HTTP status, body) of a query-protocol error (STS, SQS query)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Type>'
        f"{'Receiver' if ERROR_STATUS.get(code, 400) >= 500 else 'Sender'}</Type>"
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{request_id()}</RequestId></ErrorResponse>"
    )
    return ERROR_STATUS.get(code, 400), body.encode()


def json_error(code: str, message: str) -> tuple[int, bytes]:
    """(HTTP status, body) of a JSON-protocol error (EventBridge, SQS JSON)."""
    return ERROR_STATUS.get(code, 400), json.dumps({"__type": code, "message": message}).encode()

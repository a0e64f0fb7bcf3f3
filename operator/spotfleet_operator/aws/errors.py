"""Every AWS error the operator sees is classified here, in one place.

The class decides what reconcile does (the table in :mod:`spotfleet_operator.failures`):
CAPACITY marks the pool unavailable for a while and re-plans; QUOTA (an account
limit) marks the pool and reports QuotaExceeded; THROTTLING backs off; AUTH sets
CredentialsValid=False and stops acting; NOT_FOUND is tolerated where the resource
was meant to go away; INVALID cannot succeed until the spec or the account changes;
everything else is TRANSIENT (retry with backoff, Degraded after N failures).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import botocore.exceptions


class ErrorClass(enum.StrEnum):
    CAPACITY = "Capacity"
    QUOTA = "Quota"
    THROTTLING = "Throttling"
    AUTH = "Auth"
    NOT_FOUND = "NotFound"
    INVALID = "InvalidRequest"
    TRANSIENT = "Transient"


CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "SpotMaxPriceTooLow",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "Unsupported",  # type not offered in that zone
        "UnfulfillableCapacity",
    }
)
QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"}
)
THROTTLING_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
        "ExpiredTokenException",
        "OptInRequired",
    }
)
NOT_FOUND_CODES = frozenset(
    {
        "InvalidInstanceID.NotFound",
        "InvalidLaunchTemplateName.NotFoundException",
        "InvalidLaunchTemplateId.NotFound",
        "InvalidLaunchTemplateId.Malformed",
    }
)


def classify_code(code: str) -> ErrorClass:
    """Class of an AWS error code (as in ClientError or CreateFleet's Errors list)."""
    if code in CAPACITY_CODES:
        return ErrorClass.CAPACITY
    if code in QUOTA_CODES:
        return ErrorClass.QUOTA
    if code in THROTTLING_CODES:
        return ErrorClass.THROTTLING
    if code in AUTH_CODES:
        return ErrorClass.AUTH
    if code in NOT_FOUND_CODES or code.endswith(".NotFound"):
        return ErrorClass.NOT_FOUND
    if code.startswith("Invalid") or code in {"MissingParameter", "ValidationError"}:
        return ErrorClass.INVALID
    return ErrorClass.TRANSIENT


def error_code(exc: BaseException) -> str:
    """The AWS error code of an exception ("" when it is not an AWS error)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return "AuthFailure"
    return type(exc).__name__


def classify(exc: BaseException) -> ErrorClass:
    """Class of an exception raised by boto3/botocore."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return classify_code(error_code(exc))
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return ErrorClass.AUTH
    return ErrorClass.TRANSIENT


def request_id(response: Mapping[str, Any]) -> str:
    """The AWS request id of an answer (a botocore response or error response; "")."""
    return str((response.get("ResponseMetadata") or {}).get("RequestId", ""))


class AwsError(Exception):
    """An AWS failure the operator understands: ``kind`` says how to react.

    The message is the AWS error message or the exception text; it may echo request
    data, so everything the operator writes passes through :mod:`spotfleet_operator.scrub`.
    ``code`` identifies the error for de-duplication (never the message: messages can
    embed request ids and signatures).
    """

    def __init__(
        self, operation: str, code: str, message: str, kind: ErrorClass, request_id: str = ""
    ) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.kind = kind
        self.request_id = request_id  # of AWS's error answer ("" without one): for the audit

    @classmethod
    def wrap(cls, operation: str, exc: BaseException) -> AwsError:
        code = error_code(exc)
        msg = str(exc)
        rid = ""
        if isinstance(exc, botocore.exceptions.ClientError):
            msg = str(exc.response.get("Error", {}).get("Message", "")) or msg
            rid = request_id(exc.response)
        return cls(operation, code, msg, classify(exc), rid)

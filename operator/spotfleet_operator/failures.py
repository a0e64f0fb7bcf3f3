"""Failures as values, and the one table that maps each to a condition reason and a retry.

A reconcile never raises for what a user or AWS can cause: each stage returns a
:class:`Failure`; :data:`RULES` says which reason the conditions carry, whether the
credentials are at fault, whether the policy is Degraded at once or only after
``failures_before_degraded`` consecutive failures, and how to retry — the Kopf way:
:func:`retry_error` gives the ``kopf.TemporaryError(delay=...)`` (one backoff rule,
:meth:`OperatorConfig.retry_delay`) or the ``kopf.PermanentError`` (nothing but a change
of the spec, the Secret or the account can help) that the reconcile loop obeys.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import kopf

from spotfleet_operator import config
from spotfleet_operator.api import conditions as cond
from spotfleet_operator.aws import errors


class Kind(enum.StrEnum):
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_INVALID = "SecretInvalid"
    ACCESS_DENIED = "AccessDenied"
    THROTTLED = "Throttled"
    AWS_ERROR = "AWSError"
    INVALID_LAUNCH = "InvalidLaunchRequest"
    NO_MATCHING_SUBNETS = "NoMatchingSubnets"
    QUOTA_EXCEEDED = "QuotaExceeded"
    KUBE_ERROR = "KubernetesError"


@dataclass(frozen=True)
class Rule:
    """How the operator reacts to one kind of failure."""

    reason: str  # condition reason (CamelCase)
    permanent: bool  # retrying cannot help until something changes
    credentials: bool  # CredentialsValid=False
    degraded_at_once: bool  # Degraded=True on the first occurrence


RULES: dict[Kind, Rule] = {
    Kind.INVALID_SPEC: Rule(cond.INVALID_SPEC, True, False, True),
    # credentials are fixed without a spec change (a Secret created, keys rotated):
    # retried with backoff, not parked
    Kind.SECRET_NOT_FOUND: Rule(cond.SECRET_NOT_FOUND, False, True, True),
    Kind.SECRET_INVALID: Rule(cond.SECRET_INVALID, False, True, True),
    Kind.ACCESS_DENIED: Rule(cond.ACCESS_DENIED, False, True, True),
    Kind.THROTTLED: Rule(cond.THROTTLED, False, False, False),
    Kind.AWS_ERROR: Rule(cond.AWS_ERROR, False, False, False),
    Kind.INVALID_LAUNCH: Rule(cond.INVALID_LAUNCH_REQUEST, True, False, True),
    Kind.NO_MATCHING_SUBNETS: Rule(cond.NO_MATCHING_SUBNETS, True, False, True),
    Kind.QUOTA_EXCEEDED: Rule(cond.QUOTA_EXCEEDED, False, False, True),
    Kind.KUBE_ERROR: Rule(cond.RECONCILE_ERROR, False, False, False),
}

#: Permanent failures are still re-checked this often (seconds), in case what blocked
#: them changed without a spec change (a Secret created, a quota raised).
PERMANENT_RECHECK_SECONDS = 300.0


@dataclass(frozen=True)
class Failure:
    """What stopped a reconcile: ``code`` identifies it for de-duplication (never the
    message, which can embed request ids and signatures); ``message`` is for users."""

    kind: Kind
    message: str
    code: str = ""

    @property
    def rule(self) -> Rule:
        return RULES[self.kind]

    @property
    def reason(self) -> str:
        return self.rule.reason

    def identity(self) -> tuple[str, str]:
        return (self.reason, self.code or self.kind.value)


def from_aws(e: errors.AwsError) -> Failure:
    """The failure an AWS error stands for."""
    kind = {
        errors.ErrorClass.AUTH: Kind.ACCESS_DENIED,
        errors.ErrorClass.THROTTLING: Kind.THROTTLED,
        errors.ErrorClass.INVALID: Kind.INVALID_LAUNCH,
        errors.ErrorClass.QUOTA: Kind.QUOTA_EXCEEDED,
    }.get(e.kind, Kind.AWS_ERROR)
    prefix = "AWS refused the credentials: " if kind is Kind.ACCESS_DENIED else ""
    return Failure(kind, prefix + str(e), f"{e.operation}:{e.code}")


def retry_error(
    failure: Failure, consecutive: int, cfg: config.OperatorConfig
) -> kopf.TemporaryError | kopf.PermanentError:
    """How to retry after ``consecutive`` failures in a row (>= 1): a TemporaryError with
    the backoff delay, or a PermanentError."""
    if failure.rule.permanent:
        return kopf.PermanentError(f"{failure.reason}: {failure.message}")
    return kopf.TemporaryError(
        f"{failure.reason}: {failure.message}", delay=cfg.retry_delay(consecutive)
    )


def degraded(failure: Failure, consecutive: int, cfg: config.OperatorConfig) -> bool:
    """Whether the policy counts as Degraded after ``consecutive`` such failures."""
    return failure.rule.degraded_at_once or consecutive >= cfg.failures_before_degraded

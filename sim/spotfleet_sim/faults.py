"""Injected faults: AWS errors (by count or probability) and hung calls, per operation.

An error rule answers matching calls with an AWS-shaped error instead of the real
answer: throttling (``RequestLimitExceeded``, 503), capacity, authorisation, internal
errors, and the 5xx a front end gives under load (``ServiceUnavailable`` 503,
``BadGateway`` 502 and ``GatewayTimeout`` 504, the last two with a non-AWS body as a
load balancer sends). A hang rule holds matching calls for some wall seconds and
then lets them through to their real answer. Rules match an operation (``*`` = any)
and optionally one access key id (one tenant's credentials).
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

#: Codes the layer knows how to shape; others are refused by :meth:`FaultBook.add`.
KNOWN_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "InsufficientInstanceCapacity",
        "UnauthorizedOperation",
        "AuthFailure",
        "InternalError",
        "ServiceUnavailable",
        "BadGateway",
        "GatewayTimeout",
    }
)

#: Codes answered like a front end's gateway error: HTML body, no AWS error document.
GATEWAY_CODES = frozenset({"BadGateway", "GatewayTimeout"})

#: The code a 5xx burst of each status uses.
BURST_CODES = {
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

DEFAULT_MESSAGES = {
    "RequestLimitExceeded": "Request limit exceeded.",
    "InsufficientInstanceCapacity": (
        "We currently do not have sufficient capacity to fulfill your request."
    ),
    "UnauthorizedOperation": "You are not authorized to perform this operation.",
    "AuthFailure": "AWS was not able to validate the provided access credentials",
    "InternalError": "An internal error has occurred.",
    "ServiceUnavailable": "The service is unavailable. Please try again shortly.",
    "BadGateway": "Bad Gateway",
    "GatewayTimeout": "Gateway Timeout",
}


@dataclass
class FaultRule:
    """Fail calls to ``operation`` (``*`` = any) with ``code``.

    ``count``: fail the next N matching calls then retire; ``probability``: fail each
    matching call with that chance (forever, until cleared). ``access_key_id``: only
    calls signed with that key. ``injected`` counts hits.
    """

    operation: str
    code: str
    count: int | None = None
    probability: float | None = None
    message: str | None = None
    injected: int = 0
    access_key_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, operation: str, access_key_id: str | None) -> bool:
        if self.operation not in ("*", operation):
            return False
        return self.access_key_id is None or self.access_key_id == access_key_id


class FaultBook:
    """The active error rules; thread-safe; seeded RNG for reproducible probabilities."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._rng = random.Random(seed)

    def add(self, rule: FaultRule) -> None:
        if rule.code not in KNOWN_CODES:
            raise ValueError(f"unknown fault code {rule.code!r}; known: {sorted(KNOWN_CODES)}")
        if (rule.count is None) == (rule.probability is None):
            raise ValueError("give exactly one of count or probability")
        if rule.count is not None and rule.count < 1:
            raise ValueError("count must be >= 1")
        if rule.probability is not None and not 0.0 < rule.probability <= 1.0:
            raise ValueError("probability must be in (0, 1]")
        with self._lock:
            self._rules.append(rule)

    def clear(self, seed: int | None = None) -> None:
        with self._lock:
            self._rules.clear()
            if seed is not None:
                self._rng.seed(seed)

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [FaultRule(**asdict(r)) for r in self._rules]

    def draw(self, operation: str, access_key_id: str | None = None) -> tuple[str, str] | None:
        """The (code, message) to inject for this call, or None; consumes counted rules."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(operation, access_key_id):
                    continue
                if rule.count is not None:
                    if rule.injected >= rule.count:
                        continue
                elif rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.injected += 1
                return rule.code, rule.message or DEFAULT_MESSAGES[rule.code]
        return None


@dataclass
class HangRule:
    """Hold calls to ``operation`` (``*`` = any) for ``seconds`` (wall) before answering.

    ``count``: the next N matching calls, then retire (None: until cleared);
    ``access_key_id``: only calls signed with that key. ``hung`` counts calls held so
    far, ``holding`` those held right now.
    """

    operation: str
    seconds: float
    count: int | None = None
    access_key_id: str | None = None
    hung: int = 0
    holding: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class HangBook:
    """The active hang rules. :meth:`clear` releases every held call at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rules: list[HangRule] = []
        self._generation = 0

    def add(self, rule: HangRule) -> None:
        if not rule.seconds > 0:
            raise ValueError("seconds must be > 0")
        if rule.count is not None and rule.count < 1:
            raise ValueError("count must be >= 1")
        with self._cond:
            self._rules.append(rule)

    def rules(self) -> list[HangRule]:
        with self._cond:
            return [HangRule(**asdict(r)) for r in self._rules]

    def clear(self) -> None:
        """Drop every rule and release the calls they hold now."""
        with self._cond:
            self._rules.clear()
            self._generation += 1
            self._cond.notify_all()

    def hold(self, operation: str, access_key_id: str | None) -> float | None:
        """Block this call if a rule matches; returns the seconds it was meant to be held
        (None when no rule matched). Returns early when the rules are cleared."""
        with self._cond:
            rule = next(
                (
                    r
                    for r in self._rules
                    if r.operation in ("*", operation)
                    and (r.access_key_id is None or r.access_key_id == access_key_id)
                    and (r.count is None or r.hung < r.count)
                ),
                None,
            )
            if rule is None:
                return None
            rule.hung += 1
            rule.holding += 1
            generation = self._generation
            try:
                self._cond.wait_for(lambda: self._generation != generation, rule.seconds)
            finally:
                rule.holding -= 1
            return rule.seconds

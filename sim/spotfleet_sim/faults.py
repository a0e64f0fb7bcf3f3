"""Injected AWS errors, per operation, by count or by probability."""

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
        "InternalError",
    }
)

DEFAULT_MESSAGES = {
    "RequestLimitExceeded": "Request limit exceeded.",
    "InsufficientInstanceCapacity": (
        "We currently do not have sufficient capacity to fulfill your request."
    ),
    "UnauthorizedOperation": "You are not authorized to perform this operation.",
    "InternalError": "An internal error has occurred.",
}


@dataclass
class FaultRule:
    """Fail calls to ``operation`` (``*`` = any) with ``code``.

    ``count``: fail the next N matching calls then retire; ``probability``: fail each
    matching call with that chance (forever, until cleared). ``injected`` counts hits.
    """

    operation: str
    code: str
    count: int | None = None
    probability: float | None = None
    message: str | None = None
    injected: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """The active fault rules; thread-safe; seeded RNG for reproducible probabilities."""

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

    def draw(self, operation: str) -> tuple[str, str] | None:
        """The (code, message) to inject for this call, or None; consumes counted rules."""
        with self._lock:
            for rule in self._rules:
                if rule.operation not in ("*", operation):
                    continue
                if rule.count is not None:
                    if rule.injected >= rule.count:
                        continue
                elif rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.injected += 1
                return rule.code, rule.message or DEFAULT_MESSAGES[rule.code]
        return None

"""ClientToken idempotency for RunInstances and CreateFleet, as AWS does it.

A request carrying a ``ClientToken`` that was seen before (same account, region and
operation) gets the original response back and launches nothing; the same token
with different parameters is ``IdempotentParameterMismatch``. The cache keeps the
most recent 20,000 tokens. Callers hold the layer's launch lock around
``lookup`` ... ``remember`` so that two concurrent requests with one token launch once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

CAPACITY = 20_000
MISMATCH = "IdempotentParameterMismatch"


@dataclass(frozen=True)
class Ticket:
    """What ``lookup`` found: ``key`` is None without a token; ``replay`` is the stored
    (status, body) for a repeated token; ``mismatch`` is set when the parameters differ."""

    key: tuple[str, str, str, str] | None
    fingerprint: str
    replay: tuple[int, bytes] | None = None
    mismatch: str | None = None


def fingerprint(params: Mapping[str, str]) -> str:
    """A digest of the request parameters other than ``ClientToken``."""
    items = sorted((k, v) for k, v in params.items() if k != "ClientToken")
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


class TokenCache:
    """Responses by (account, region, operation, token); thread-safe, bounded."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, str, str], tuple[str, int, bytes]] = OrderedDict()
        self._capacity = capacity

    def lookup(
        self, account: str, region: str, operation: str, params: Mapping[str, str]
    ) -> Ticket:
        """Whether this request repeats an earlier one (a query: nothing is stored)."""
        digest = fingerprint(params)
        token = params.get("ClientToken")
        if not token:
            return Ticket(None, digest)
        key = (account, region, operation, token)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            return Ticket(key, digest)
        if hit[0] != digest:
            return Ticket(
                key,
                digest,
                mismatch="Arguments on this idempotent request are inconsistent with arguments "
                f"used in previous request(s) with client token {token}.",
            )
        return Ticket(key, digest, replay=(hit[1], hit[2]))

    def remember(self, ticket: Ticket, status: int, body: bytes) -> None:
        """Store the response of a request that carried a token (no-op otherwise)."""
        if ticket.key is None:
            return
        with self._lock:
            self._cache[ticket.key] = (ticket.fingerprint, status, body)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

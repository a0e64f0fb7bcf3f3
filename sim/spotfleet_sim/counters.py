"""AWS calls counted per operation and per access key id (for benchmarks and tests).

Every AWS request the layer receives is counted once, when it arrives, whatever its
answer (injected faults, throttling retries and idempotent replays included);
control-API calls are not. Readable and resettable through the control API.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

#: The key used for requests without SigV4 credentials.
ANONYMOUS = ""


class CallCounters:
    """Counts by (access key id, service, operation); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def count(self, access_key_id: str | None, service: str, operation: str) -> None:
        with self._lock:
            self._counts[(access_key_id or ANONYMOUS, service, operation)] += 1

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def to_json(self) -> dict[str, Any]:
        """``total``; ``by_operation`` {operation: n}; ``by_access_key`` {key: {operation: n}};
        ``calls``: one row per (access_key_id, service, operation) with its ``count``."""
        with self._lock:
            items = sorted(self._counts.items())
        by_operation: Counter[str] = Counter()
        by_key: dict[str, Counter[str]] = {}
        for (key, _service, operation), n in items:
            by_operation[operation] += n
            by_key.setdefault(key, Counter())[operation] += n
        return {
            "total": sum(n for _k, n in items),
            "by_operation": dict(sorted(by_operation.items())),
            "by_access_key": {k: dict(sorted(v.items())) for k, v in sorted(by_key.items())},
            "calls": [
                {"access_key_id": k, "service": s, "operation": o, "count": n}
                for (k, s, o), n in items
            ],
        }

"""What the layer saw: one entry per call, in order, for tests and ``spotfleet sim`` users."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

#: Operation-name prefixes that never change state (everything else counts as mutating).
READ_ONLY_PREFIXES = ("Describe", "Get", "List")


def is_mutating(operation: str) -> bool:
    """True unless the operation is a Describe*/Get*/List* call."""
    return not operation.startswith(READ_ONLY_PREFIXES)


@dataclass(frozen=True)
class CallRecord:
    """One call: who answered it, how, and whether the layer injected or detected a problem.

    ``sim_time`` is the reported clock's time of the call (never later than ``wall_time``).
    ``handled_by``: ``layer`` (answered by the market layer), ``moto`` (passed through)
    or ``sim`` (layer-initiated actions such as interruptions); control-API calls are
    not logged. ``unimplemented`` marks calls moto could not serve.
    """

    seq: int
    wall_time: float
    sim_time: str
    service: str
    region: str
    operation: str
    mutating: bool
    handled_by: str
    status: int
    error_code: str | None = None
    injected: bool = False
    unimplemented: bool = False
    detail: str | None = None
    failure: str | None = None  # traceback when moto or the layer crashed on this call

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CallLog:
    """Append-only, capped log (oldest entries are dropped beyond ``cap``)."""

    def __init__(self, cap: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._seq = 0
        self._cap = cap

    def append(self, **fields: Any) -> CallRecord:
        with self._lock:
            self._seq += 1
            rec = CallRecord(seq=self._seq, **fields)
            self._records.append(rec)
            if len(self._records) > self._cap:
                del self._records[: len(self._records) - self._cap]
            return rec

    def since(self, seq: int = 0) -> list[CallRecord]:
        """Records with ``seq`` greater than the given one, oldest first."""
        with self._lock:
            return [r for r in self._records if r.seq > seq]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

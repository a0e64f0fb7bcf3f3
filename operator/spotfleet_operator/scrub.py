"""The scrubber at the edges: no credential value leaves the process in anything the
operator writes (status, Events, log records, store rows, metric labels).

Every credential value the operator reads is :func:`register` ed the moment it is
read (:mod:`spotfleet_operator.aws.credentials`); every outgoing string passes
through :func:`scrub`, and :class:`LogFilter` does it for every log record. A
value is recognised by any 12-character fragment of it (of the value as given, of
each of its lines, and of its base64 form), so a secret split across lines,
echoed inside an error such as ``Invalid header value b'<token>'``, or base64
encoded is still caught; the whole run of non-space characters around a match
becomes ``[REDACTED]``. Values of 8 to 11 characters are matched whole; shorter
ones are not credentials and are ignored.

The registry is process-wide (like logging itself): the log filter has no other way
to reach it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import threading
from typing import Any

FRAGMENT = 12
MIN_WHOLE = 8
REDACTED = "[REDACTED]"
_RUN = re.compile(r"\S+")


class Scrubber:
    """Knows the credential values in use and removes them from text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grams: frozenset[str] = frozenset()
        self._whole: frozenset[str] = frozenset()
        self._seen: set[str] = set()

    def register(self, value: str) -> None:
        """Remember ``value`` (idempotent; cheap for a value seen before)."""
        if value in self._seen:
            return
        parts = {value, value.strip(), *value.splitlines()}
        with contextlib.suppress(UnicodeError, ValueError):
            parts.add(base64.b64encode(value.strip().encode()).decode())
        grams: set[str] = set()
        whole: set[str] = set()
        for p in parts:
            for run in _RUN.findall(p):
                if len(run) >= FRAGMENT:
                    grams.update(run[i : i + FRAGMENT] for i in range(len(run) - FRAGMENT + 1))
                elif len(run) >= MIN_WHOLE:
                    whole.add(run)
        with self._lock:
            self._seen.add(value)
            self._grams = self._grams | grams
            self._whole = self._whole | whole

    def _secret(self, run: str) -> bool:
        grams = self._grams
        if len(run) >= FRAGMENT and any(
            run[i : i + FRAGMENT] in grams for i in range(len(run) - FRAGMENT + 1)
        ):
            return True
        return any(w in run for w in self._whole) if self._whole else False

    def scrub(self, text: str) -> str:
        """``text`` with every run of non-space characters that holds a credential
        fragment replaced by ``[REDACTED]``."""
        if not text or (not self._grams and not self._whole) or len(text) < MIN_WHOLE:
            return text
        return _RUN.sub(lambda m: REDACTED if self._secret(m.group(0)) else m.group(0), text)


DEFAULT = Scrubber()


def register(value: str) -> None:
    """Remember a credential value in the process-wide scrubber."""
    DEFAULT.register(value)


def scrub(text: str) -> str:
    """``text`` without any credential value the process knows."""
    return DEFAULT.scrub(text)


def scrub_tree(obj: Any) -> Any:
    """A JSON-like value with every string in it scrubbed (dict keys included)."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {scrub_tree(k): scrub_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub_tree(v) for v in obj]
    return obj


class LogFilter(logging.Filter):
    """Scrubs each record's final message (and exception text) before any handler
    formats it. Install it on every handler (:func:`install`): filters on a logger do
    not see records propagated from its children."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts
            message = f"{record.msg} {record.args}"
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, scrub(text)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


#: Loggers that print request headers and bodies at DEBUG (botocore signs with the
#: tenant's keys; urllib3/aiohttp echo headers): never below INFO, whatever the level.
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "aiohttp.client")


def install(root: logging.Logger | None = None) -> None:
    """Put :class:`LogFilter` on every handler of ``root`` (default: the root logger)
    and keep the request-dumping loggers at INFO or above."""
    root = root or logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, LogFilter) for f in h.filters):
            h.addFilter(LogFilter())
    for name in NOISY_LOGGERS:
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET or lg.level < logging.INFO:
            lg.setLevel(logging.INFO)

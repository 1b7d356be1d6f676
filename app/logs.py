"""Worker logs: one JSON object per line for a log pipeline, or plain text for people."""

from __future__ import annotations

import logging
import logging.config
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import orjson

# python-json-logger's orjson flavour: the library owns the LogRecord plumbing (extras,
# exceptions, stack info, non-JSON values), orjson is already a dependency and encodes a line in
# about a microsecond, a fraction of what the stdlib json encoder takes.
from pythonjsonlogger.orjson import OrjsonFormatter

from app.codec import format_time_ms
from app.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Container runtimes split lines longer than 16 KiB, which breaks a JSON line in two; and a
# message that quotes a record must not carry a 1 MB payload into the log. Exceptions keep
# their end (the raising frame and the message).
MAX_FIELD_CHARS = 2048
MAX_EXC_CHARS = 8192

# A dead-lettering producer can send thousands of bad records a second: the metrics count every
# one, the log shows at most this many lines per error kind per window and says how many it held
# back.
DEAD_LETTER_LOG_LINES = 10
DEAD_LETTER_LOG_WINDOW_S = 10.0

# LogRecord attributes renamed in the JSON object; the rest of its own attributes are left out,
# and anything passed with ``extra={...}`` is kept under its own name.
_RENAMED = {
    "levelname": "level",
    "name": "logger",
    "message": "msg",
    "exc_info": "exc",
    "stack_info": "stack",
}


def truncated(text: str, limit: int = 256) -> str:
    """At most ``limit`` characters of ``text``, saying how many were cut.

    >>> truncated("abcdefghij", 4)
    'abcd...(6 more chars)'
    >>> truncated("short")
    'short'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more chars)"


def _tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"({len(text) - limit} chars cut)...{text[-limit:]}"


def claimed_event_id(raw: bytes, max_bytes: int) -> str | None:
    """The ``event_id`` an unusable record claims to have, for its log line; None when it is
    too big to parse again, not a JSON object, or has no string ``event_id``.

    >>> claimed_event_id(b'{"event_id": "e-1", "type": "teleport"}', 1024)
    'e-1'
    >>> claimed_event_id(b'not json', 1024) is None
    True
    """
    if len(raw) > max_bytes:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    event_id = doc.get("event_id") if isinstance(doc, dict) else None
    return truncated(event_id, 128) if isinstance(event_id, str) and event_id else None


class LogBudget:
    """At most ``lines`` log lines per key in each window of ``window_s``; counts the rest.

    :meth:`take` returns None to stay quiet, or how many lines of that key were held back since
    the last one it allowed (for the line to say so).

    >>> ticks = iter([0.0, 1.0, 2.0, 3.0, 11.0])
    >>> budget = LogBudget(lines=2, window_s=10.0, clock=lambda: next(ticks))
    >>> [budget.take("oversize") for _ in range(5)]
    [0, 0, None, None, 2]
    """

    def __init__(
        self, lines: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lines = lines
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def take(self, key: str) -> int | None:
        now = self.clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now)
        elif now - window.start >= self.window_s:
            window.start, window.used = now, 0
        if window.used >= self.lines:
            window.held += 1
            return None
        held, window.held = window.held, 0
        window.used += 1
        return held


@dataclass(slots=True)
class _Window:
    start: float
    used: int = 0  # lines allowed since ``start``
    held: int = 0  # lines held back since the last one allowed


class JsonFormatter(OrjsonFormatter):
    """One JSON object per record: ``ts`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``,
    ``msg`` (the formatted message), the process's identity, ``exc`` (traceback text) when
    there is one, and every ``extra={...}`` field under its own name."""

    def __init__(self, identity: Mapping[str, Any] | None = None) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields=_RENAMED,
            static_fields=dict(identity or {}),
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["ts"] = format_time_ms(int(record.created * 1000))
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for key, value in log_data.items():
            if isinstance(value, str):
                if key in ("exc", "stack"):
                    log_data[key] = _tail(value, MAX_EXC_CHARS)
                elif len(value) > MAX_FIELD_CHARS:
                    log_data[key] = truncated(value, MAX_FIELD_CHARS)
        return log_data


def identity(settings: Settings) -> dict[str, Any]:
    """Which process wrote a line: the host name (the pod's name in Kubernetes), the process id
    (several workers may share a machine) and the app id (consumer group)."""
    return {"worker": socket.gethostname(), "pid": os.getpid(), "app_id": settings.app_id}


def logging_config(
    settings: Settings, level: str | None = None, stream: IO[str] | None = None
) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document: the root logger at ``level`` (default
    ``settings.log_level``) writes to ``stream`` (stderr) in ``settings.log_format``.

    The worker applies it before anything is loaded, and hands it to faust
    (``app.conf.logging_config``), whose worker would otherwise replace the root logger's
    handlers with its own coloured text format on start-up.
    """
    if settings.log_format.lower() == "json":
        formatter: dict[str, Any] = {"()": JsonFormatter, "identity": identity(settings)}
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"liverank": formatter},
        "handlers": {
            "liverank": {
                "class": "logging.StreamHandler",
                "formatter": "liverank",
                "stream": sys.stderr if stream is None else stream,
            }
        },
        "root": {"level": (level or settings.log_level).upper(), "handlers": ["liverank"]},
    }


def configure(settings: Settings, level: str | None = None, stream: IO[str] | None = None) -> None:
    """Configure the root logger (see :func:`logging_config`); Python warnings become log
    records too, instead of text on stderr."""
    logging.config.dictConfig(logging_config(settings, level, stream))
    logging.captureWarnings(True)

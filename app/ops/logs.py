"""Worker logs: one JSON object per line for a log pipeline, or plain text for people."""

from __future__ import annotations

import logging
import logging.config
import os
import socket
import sys
from collections.abc import Mapping
from typing import IO, Any

# python-json-logger's orjson flavour: the library owns the LogRecord plumbing (extras,
# exceptions, stack info, non-JSON values), orjson is already a dependency and encodes a line in
# about a microsecond, a fraction of what the stdlib json encoder takes.
from pythonjsonlogger.orjson import OrjsonFormatter

from app.core.codec import format_time_ms
from app.core.log_budget import truncated
from app.core.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Container runtimes split lines longer than 16 KiB, which breaks a JSON line in two; and a
# message that quotes a record must not carry a 1 MB payload into the log. Exceptions keep
# their end (the raising frame and the message).
MAX_FIELD_CHARS = 2048
MAX_EXC_CHARS = 8192

# LogRecord attributes renamed in the JSON object; the rest of its own attributes are left out,
# and anything passed with ``extra={...}`` is kept under its own name.
_RENAMED = {
    "levelname": "level",
    "name": "logger",
    "message": "msg",
    "exc_info": "exc",
    "stack_info": "stack",
}


def _tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"({len(text) - limit} chars cut)...{text[-limit:]}"


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

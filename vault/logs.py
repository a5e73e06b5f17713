"""Server logs: text for people, JSON lines for machines (`vault serve --log-format json`).

Every RPC gets one access line from the interceptor (vault.rpc.interceptor) with its method, status,
latency, tenant, caller, role and decision id. Never biometric data, tokens or subject ids: the
messages the vault logs carry ids of templates and decisions at most.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["ACCESS_FIELDS", "JsonFormatter", "configure"]

ACCESS_FIELDS = ("rpc", "status", "latency_ms", "tenant", "caller", "role", "decision_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _level(_, __, event: dict) -> dict:
    event["level"] = event["_record"].levelname
    return event


def _exception_type(_, __, event: dict) -> dict:
    """An exception is named by its type only: its text or traceback may quote data."""
    error = event.pop("exc_info", None)
    if error and error[0] is not None:
        event["exception"] = error[0].__name__
    return event


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """One JSON object a line, rendered by structlog from the standard library's records: time
    (UTC, ISO 8601), level, logger, message, the access fields a record carries (and
    no other `extra`), and the exception's type."""

    def __init__(self):
        super().__init__(
            foreign_pre_chain=[
                structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S.%fZ", utc=True, key="time"),
                _level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=ACCESS_FIELDS),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _exception_type,
                structlog.processors.EventRenamer("message"),
                structlog.processors.JSONRenderer(separators=(",", ":")),
            ],
        )


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Text on stderr, or JSON lines on stdout: there every line is one object (Python warnings
    become log records too). gRPC's native core writes its own lines to stderr, never stdout; the
    `vault` command sets GRPC_VERBOSITY=ERROR unless it is set (vault.cli), which keeps them to
    errors (a refused TLS handshake logs nothing)."""
    handler = logging.StreamHandler(sys.stdout if fmt == "json" else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)

"""Server logs: text for people, JSON lines for machines (`vault serve --log-format json`).

Every RPC gets one access line from the interceptor (vault.rpc.interceptor) with its method, status,
latency, tenant, caller, role and decision id. Never biometric data, tokens or subject ids: the
messages the vault logs carry ids of templates and decisions at most.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["ACCESS_FIELDS", "JsonFormatter", "configure"]

ACCESS_FIELDS = ("rpc", "status", "latency_ms", "tenant", "caller", "role", "decision_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the access fields
    a record carries, and the exception's type (never its text or traceback, which may quote data)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        entry.update({field: getattr(record, field) for field in ACCESS_FIELDS if hasattr(record, field)})
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, separators=(",", ":"))


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Text on stderr, or JSON lines on stdout: there every line is one object (Python warnings
    become log records too). gRPC's native core writes its own lines to stderr, never stdout; the
    `vault` command sets GRPC_VERBOSITY=ERROR unless it is set (vault.cli), which keeps them to
    errors (a refused TLS handshake logs nothing)."""
    handler = logging.StreamHandler(sys.stdout if fmt == "json" else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)

"""Structured logs: one JSON object per line on stderr, with workflow/step/agent ids bound."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opcode_core.redaction import LOG_REDACTOR

_BOUND = ("workflow_id", "step_id", "agent_id", "plugin", "data")
_NOISY = ("uvicorn.access", "mcp.server.lowlevel.server", "httpx", "httpx2", "peewee", "sse_starlette")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object with time, level, logger, message and bound ids."""
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _BOUND:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # Secret values a run resolved never reach a log line, whichever field (or object's str()) holds them.
        return json.dumps(LOG_REDACTOR.redact(out), default=lambda obj: LOG_REDACTOR.redact_text(str(obj)))


def configure_logging(level: str) -> None:
    """Send opcode's logs to stderr as JSON lines at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_log_level(level)


def set_log_level(level: str) -> None:
    """Change the level of opcode's logs (at start-up, and live on SIGHUP)."""
    root = logging.getLogger()
    root.setLevel(level.upper() if level != "warn" else "WARNING")
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))

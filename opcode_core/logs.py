"""Structured logs: one JSON object per line on stderr, with workflow/step/agent ids bound."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_BOUND = ("workflow_id", "step_id", "agent_id", "plugin")


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
        return json.dumps(out, default=str)


def configure_logging(level: str) -> None:
    """Send opcode's logs to stderr as JSON lines at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if level != "warn" else "WARNING")
    for noisy in ("uvicorn.access", "mcp.server.lowlevel.server", "httpx"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))

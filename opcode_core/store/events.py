"""The event record: one append-only state change of a workflow (SPEC §9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Event:
    """One event as written to the log; `sequence` is per workflow, from 1, without gaps."""

    workflow_id: str
    sequence: int
    event_type: str
    step_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    agent_id: str | None = None
    timestamp: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The event as a plain dict, as observers and the API see it."""
        return {
            "workflow_id": self.workflow_id,
            "sequence": self.sequence,
            "event_type": self.event_type,
            "step_id": self.step_id,
            "payload": self.payload,
            "agent_id": self.agent_id,
            "timestamp": self.timestamp,
        }

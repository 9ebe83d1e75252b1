"""Workflow and step state machines (SPEC §9); an invalid transition raises INVALID_TRANSITION."""

from __future__ import annotations

from opcode_core.errors import INVALID_TRANSITION, OpcodeError

WORKFLOW_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"active", "cancelled", "failed"}),
    "active": frozenset({"completed", "failed", "cancelled", "suspended"}),
    "suspended": frozenset({"active", "cancelled", "failed"}),
    "failed": frozenset({"active"}),  # only through a `retry` signal
    "completed": frozenset(),
    "cancelled": frozenset(),
}

STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"scheduled", "skipped"}),
    "scheduled": frozenset({"running", "skipped"}),
    "running": frozenset({"completed", "failed", "skipped", "suspended", "retrying"}),
    "retrying": frozenset({"running", "failed", "skipped"}),
    "suspended": frozenset({"running", "completed", "failed", "skipped"}),
    "failed": frozenset({"scheduled", "skipped"}),  # `retry` / `skip` signals
    "completed": frozenset(),
    "skipped": frozenset(),
}

WORKFLOW_TERMINAL = frozenset({"completed", "failed", "cancelled"})
STEP_TERMINAL = frozenset({"completed", "failed", "skipped"})
_NOWHERE: frozenset[str] = frozenset()


def check_transition(kind: str, table: dict[str, frozenset[str]], current: str, target: str) -> None:
    """Raise INVALID_TRANSITION unless `current -> target` is allowed."""
    if target not in table.get(current, frozenset()):
        raise OpcodeError(INVALID_TRANSITION, f"{kind} cannot go from {current} to {target}")


class StepFSM:
    """The status of one step, moved only along allowed transitions."""

    __slots__ = ("status", "step_id")

    def __init__(self, step_id: str, status: str = "pending") -> None:
        self.step_id = step_id
        self.status = status

    def to(self, target: str) -> None:
        """Move to `target` or raise INVALID_TRANSITION."""
        # Checked inline: a step makes three transitions, and the message is only built when one is refused.
        if target not in STEP_TRANSITIONS.get(self.status, _NOWHERE):
            check_transition(f"step {self.step_id}", STEP_TRANSITIONS, self.status, target)
        self.status = target


class WorkflowFSM:
    """The status of one run, moved only along allowed transitions."""

    __slots__ = ("status", "workflow_id")

    def __init__(self, workflow_id: str, status: str = "pending") -> None:
        self.workflow_id = workflow_id
        self.status = status

    def to(self, target: str) -> None:
        """Move to `target` or raise INVALID_TRANSITION."""
        if target not in WORKFLOW_TRANSITIONS.get(self.status, _NOWHERE):
            check_transition(f"workflow {self.workflow_id}", WORKFLOW_TRANSITIONS, self.status, target)
        self.status = target

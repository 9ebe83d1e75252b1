"""Pure folds from events to the `step_state` and `workflows` rows; the store and replay share them."""

from __future__ import annotations

from typing import Any

from opcode_core.store.events import Event

STEP_FIELDS = (
    "step_id", "status", "input", "output", "error", "attempt",
    "started_at", "completed_at", "duration_ms", "reason",
)  # fmt: skip


def new_step_state(step_id: str) -> dict[str, Any]:
    """A step that no event has touched yet: pending, attempt 0, everything else empty."""
    state: dict[str, Any] = dict.fromkeys(STEP_FIELDS)
    state.update(step_id=step_id, status="pending", attempt=0)
    return state


def apply_step_event(state: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """Fold one event into a step's state; returns the same object when the event does not concern it."""
    step_id = event.step_id
    if step_id is None:
        return state
    kind = event.event_type
    if kind == "step_started":
        payload = event.payload or {}
        # A new attempt (or a re-run) starts clean: nothing of the previous attempt is the step's result any more.
        # Built as one literal (the fields of STEP_FIELDS, in order): replay folds every event of a run.
        return {
            "step_id": step_id, "status": "running", "input": payload.get("input"), "output": None, "error": None,
            "attempt": payload.get("attempt", 1), "started_at": event.timestamp, "completed_at": None,
            "duration_ms": None, "reason": None,
        }  # fmt: skip
    handler = _STEP_HANDLERS.get(kind)
    if handler is None:
        return state
    base = state.copy() if state is not None else new_step_state(step_id)
    handler(base, event.payload or {}, event.timestamp)
    return base


def _completed(state: dict[str, Any], payload: dict[str, Any], ts: str) -> None:
    # The executor may only know the interpolated input once the step ran, and then reports it with the outcome.
    if "input" in payload:
        state["input"] = payload["input"]
    state["status"] = "completed"
    state["output"] = payload.get("output")
    state["error"] = None
    state["duration_ms"] = payload.get("duration_ms")
    state["completed_at"] = ts


def _failed(state: dict[str, Any], payload: dict[str, Any], ts: str) -> None:
    if "input" in payload:
        state["input"] = payload["input"]
    state["status"] = "failed"
    state["error"] = payload.get("error")
    state["output"] = payload.get("output")
    state["duration_ms"] = payload.get("duration_ms")
    state["completed_at"] = ts


def _skipped(state: dict[str, Any], payload: dict[str, Any], ts: str) -> None:
    state.update(status="skipped", reason=payload.get("reason"), completed_at=ts)


def _ignored(state: dict[str, Any], payload: dict[str, Any], ts: str) -> None:
    # on_error: ignore keeps whatever the failed attempt produced readable by later steps (SPEC §7).
    state.update(status="skipped", reason=payload.get("reason"), completed_at=state["completed_at"] or ts)


def _retrying(state: dict[str, Any], payload: dict[str, Any], ts: str) -> None:
    state["status"] = "retrying"


def _suspended(state: dict[str, Any], payload: dict[str, Any], ts: str) -> None:
    state["status"] = "suspended"


_STEP_HANDLERS = {
    "step_completed": _completed,
    "step_failed": _failed,
    "step_skipped": _skipped,
    "step_ignored": _ignored,
    "step_retrying": _retrying,
    "step_suspended": _suspended,
}


def apply_workflow_event(row_changes: dict[str, Any], event: Event) -> dict[str, Any]:
    """Fold one event into pending changes of the workflow's row; returns a new dict, or the same one if unchanged."""
    kind = event.event_type
    payload = event.payload or {}
    ts = event.timestamp
    if kind == "workflow_started":
        change: dict[str, Any] = {"status": "active", "started_at": ts}
    elif kind == "workflow_completed":
        change = {"status": "completed", "output": payload.get("output"), "completed_at": ts}
    elif kind == "workflow_failed":
        change = {"status": "failed", "error": payload.get("error"), "completed_at": ts}
    elif kind == "workflow_cancelled":
        change = {"status": "cancelled", "completed_at": ts}
    elif kind == "workflow_suspended":
        change = {"status": "suspended"}
    elif kind == "workflow_resumed":
        # Also the way back from failed (a `retry` signal): the run is no longer finished.
        change = {"status": "active", "completed_at": None, "error": None}
    else:
        return row_changes
    return {**row_changes, **change, "updated_at": ts}

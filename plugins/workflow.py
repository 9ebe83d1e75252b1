"""Workflow actions: log, emit events, read/update the run's context, fail, notify the agent, run a child."""

from __future__ import annotations

import logging
from typing import Any

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.errors import EXECUTION_ERROR, NON_RETRYABLE, PERMISSION_DENIED

JSON = dict[str, Any]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR}

# The original's examples pass their log fields as extra top-level keys, and name the event of
# `workflow.emit` `event` or `signal` and its payload `data`: those spellings are accepted too.
_EMIT_NAME_KEYS = ("event_type", "event", "signal")
_EMIT_PAYLOAD_KEYS = ("payload", "data")

LOG_SCHEMA: JSON = {
    "type": "object",
    "description": "Any other key is logged as a structured field, next to `data`.",
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "The log message."},
        "level": {"type": "string", "enum": list(_LEVELS), "default": "info", "description": "Log level."},
        "data": {"description": "Structured data logged with the message (any JSON)."},
    },
    "required": ["message"],
    "additionalProperties": True,
}

EMIT_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "event_type": {"type": "string", "minLength": 1, "description": "Name of the custom event."},
        "event": {"type": "string", "minLength": 1, "description": "Alias of `event_type`."},
        "signal": {"type": "string", "minLength": 1, "description": "Alias of `event_type`."},
        "payload": {"description": "Event payload (any JSON).", "default": None},
        "data": {"description": "Alias of `payload`."},
    },
    "oneOf": [{"required": [key]} for key in _EMIT_NAME_KEYS],
    "not": {"required": list(_EMIT_PAYLOAD_KEYS)},
    "additionalProperties": False,
}

CONTEXT_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["read", "update"], "description": "Read the context or merge into it."},
        "workflow_id": {
            "type": "string",
            "description": "The run whose context to use; only the current run is allowed (default: the current run).",
        },
        "data": {"type": "object", "description": "For update: keys merged into the run's context."},
        "agent_notes": {"type": "string", "description": "For update: stored as the context's `agent_notes` key."},
    },
    "required": ["action"],
    "if": {"properties": {"action": {"const": "update"}}},
    "then": {"anyOf": [{"required": ["data"]}, {"required": ["agent_notes"]}]},
    "additionalProperties": False,
}

FAIL_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "minLength": 1, "description": "Why the workflow fails."},
        "message": {"type": "string", "minLength": 1, "description": "Alias of `reason`."},
    },
    "anyOf": [{"required": ["reason"]}, {"required": ["message"]}],
    "additionalProperties": False,
}

NOTIFY_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "Notification text."},
        "data": {"description": "Additional payload (any JSON).", "default": None},
    },
    "required": ["message"],
    "additionalProperties": False,
}

RUN_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "template_name": {"type": "string", "minLength": 1, "description": "Template to run as a child workflow."},
        "version": {"type": "string", "minLength": 1, "description": "Template version, e.g. `v2` (default: latest)."},
        "params": {"type": "object", "default": {}, "description": "Inputs of the child workflow."},
    },
    "required": ["template_name"],
    "additionalProperties": False,
}


async def log(params: JSON, ctx: ActionContext) -> JSON:
    """Write a log line through the step's logger, which carries the run and step ids."""
    message, level = params["message"], params.get("level", "info")
    data = params.get("data")
    fields = {k: v for k, v in params.items() if k not in ("message", "level", "data")}
    if fields:
        data = {**fields, "data": data} if "data" in params else fields
    adapter = ctx.logger
    if adapter.isEnabledFor(_LEVELS[level]):
        # A plain LoggerAdapter replaces a call's `extra` with its own, which would drop the data:
        # let it add the bound ids, then put the data back beside them.
        msg, kwargs = adapter.process(message, {})
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "data": data}
        adapter.logger.log(_LEVELS[level], msg, **kwargs)
    return {"logged": True, "level": level, "message": message}


async def emit(params: JSON, ctx: ActionContext) -> JSON:
    """Record a `custom_event` in the run's event log."""
    event_type = next(params[k] for k in _EMIT_NAME_KEYS if k in params)
    payload = next((params[k] for k in _EMIT_PAYLOAD_KEYS if k in params), None)
    await ctx.runtime.emit(event_type, payload)
    return {"emitted": True, "event_type": event_type}


async def context(params: JSON, ctx: ActionContext) -> JSON:
    """Read the run's context, or merge `data` (and `agent_notes`) into it."""
    target = params.get("workflow_id")
    if target not in (None, "", ctx.workflow_id):
        raise ActionError(
            f"workflow.context may only use its own run ({ctx.workflow_id}), not {target}", code=PERMISSION_DENIED
        )
    if params["action"] == "read":
        return dict(await ctx.runtime.get_context())
    values = dict(params.get("data") or {})
    if "agent_notes" in params:
        values["agent_notes"] = params["agent_notes"]
    updated = await ctx.runtime.update_context(values)
    return {"updated": True, "workflow_id": ctx.workflow_id, "context": updated}


async def fail(params: JSON, ctx: ActionContext) -> JSON:
    """Fail the step, and with it the workflow, with an error that is never retried."""
    raise ActionError(params.get("reason") or params["message"], code=NON_RETRYABLE)


async def notify(params: JSON, ctx: ActionContext) -> JSON:
    """Push a notification to the run's agent; best effort, the step completes either way."""
    try:
        notified = bool(await ctx.runtime.notify(params["message"], params.get("data"), step_id=ctx.step_id))
    except Exception as exc:  # best effort by design (SPEC §3): a broken session must not fail the step
        ctx.logger.warning("workflow.notify failed: %s", exc)
        return {"notified": False, "reason": str(exc) or type(exc).__name__}
    return {"notified": True} if notified else {"notified": False, "reason": "agent not connected"}


async def run(params: JSON, ctx: ActionContext) -> JSON:
    """Run a template as a child of this run; its output becomes this step's output."""
    result = await ctx.runtime.run_child(
        params["template_name"], version=params.get("version"), params=params.get("params") or {}
    )
    status = result.get("status")
    if status == "completed":
        output = result.get("output")
        return output if isinstance(output, dict) else {"output": output}
    summary = {"workflow_id": result.get("workflow_id"), "status": status, "error": result.get("error")}
    error = result.get("error") or {}
    why = f": {error.get('message')}" if isinstance(error, dict) and error.get("message") else ""
    raise ActionError(
        f"child workflow {params['template_name']} ({summary['workflow_id']}) ended {status}{why}",
        code=EXECUTION_ERROR,
        details=summary,
        output=summary,
    )


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide the workflow.* actions, which act on the current run through `ctx.runtime`."""
    return [
        ActionSpec(
            "workflow.log",
            "Write a structured log line (with the run and step ids) at debug, info, warn or error level.",
            LOG_SCHEMA,
            log,
        ),
        ActionSpec(
            "workflow.emit",
            "Record a custom event `{event_type, payload}` in the run's event log, for observers and the panel.",
            EMIT_SCHEMA,
            emit,
        ),
        ActionSpec(
            "workflow.context",
            "Read the run's context (`action: read`, output is the context object) or merge `data` into it "
            "(`action: update`, output `{updated, workflow_id, context}`); later steps read it as ${{context.*}}.",
            CONTEXT_SCHEMA,
            context,
        ),
        ActionSpec(
            "workflow.fail",
            "Fail the workflow on purpose with `reason`; the error code is NON_RETRYABLE, so no retry runs.",
            FAIL_SCHEMA,
            fail,
        ),
        ActionSpec(
            "workflow.notify",
            "Push a notification to the run's agent over its MCP session; best effort: "
            "`{notified: false, reason}` when the agent is not connected, and the step still completes.",
            NOTIFY_SCHEMA,
            notify,
        ),
        ActionSpec(
            "workflow.run",
            "Run a stored template as a child workflow (linked to this run) and wait for it; the child's output "
            "is this step's output. A child that fails, is cancelled or suspends fails this step.",
            RUN_SCHEMA,
            run,
        ),
    ]

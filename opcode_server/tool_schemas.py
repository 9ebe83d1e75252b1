"""The six MCP tools: names, descriptions and input schemas, sent to clients exactly as written here."""

from __future__ import annotations

from typing import Any

_AGENT = {"type": "string", "minLength": 1, "description": "Your stable agent id (registered on first contact)."}

TOOLS: dict[str, dict[str, Any]] = {
    "opcode.define": {
        "description": "Register a workflow definition as a reusable template; versions v1, v2, ... "
        "auto-increment per name. validate_only checks it without storing.",
        "input_schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "description": "Template name."},
                "definition": {"type": "object", "description": "Workflow definition: {steps: [...], ...}."},
                "agent_id": _AGENT,
                "description": {"type": "string"},
                "input_schema": {"type": "object", "description": "JSON Schema the run params must match."},
                "output_schema": {"type": "object", "description": "JSON Schema of the run output."},
                "triggers": {"type": "object", "description": "Cron triggers: {cron: [{cron: '0 7 * * 1-5', params, "
                             "agent_id, timezone, enabled}]}; each becomes a scheduled job of the latest version."},
                "validate_only": {"type": "boolean", "default": False},
            },
            "required": ["name", "definition", "agent_id"],
            "additionalProperties": False,
        },
    },
    "opcode.run": {
        "description": "Run a template. With wait (default) it answers when the run completes, fails or "
        "suspends; with wait=false it answers at once with the workflow_id.",
        "input_schema": {
            "type": "object",
            "properties": {
                "template_name": {"type": "string", "minLength": 1},
                "agent_id": _AGENT,
                "version": {"type": "string", "description": "e.g. v2; default: latest."},
                "params": {"type": "object", "description": "Inputs, readable as ${{inputs.*}}."},
                "wait": {"type": "boolean", "default": True},
                "idempotency_key": {"type": "string", "description": "Same agent + key: the same run."},
            },
            "required": ["template_name", "agent_id"],
            "additionalProperties": False,
        },
    },
    "opcode.status": {
        "description": "A run's status, steps, pending decisions, context and last 100 events.",
        "input_schema": {
            "type": "object",
            "properties": {"workflow_id": {"type": "string", "minLength": 1}},
            "required": ["workflow_id"],
            "additionalProperties": False,
        },
    },
    "opcode.signal": {
        "description": "Send a signal to a run: decision, data, cancel, retry, skip or resume.",
        "input_schema": {
            "type": "object",
            "properties": {
                "workflow_id": {"type": "string", "minLength": 1},
                "signal_type": {"enum": ["decision", "data", "cancel", "retry", "skip", "resume"]},
                "payload": {"type": "object"},
                "step_id": {"type": "string"},
                "agent_id": {"type": "string"},
                "reasoning": {"type": "string"},
            },
            "required": ["workflow_id", "signal_type", "payload"],
            "additionalProperties": False,
        },
    },
    "opcode.query": {
        "description": "List workflows, events, templates or actions (each action with its params schema).",
        "input_schema": {
            "type": "object",
            "properties": {
                "resource": {"enum": ["workflows", "events", "templates", "actions"]},
                "filter": {
                    "type": "object",
                    "description": "workflows: status, agent_id, since, limit; events: workflow_id, step_id, "
                    "event_type, since, limit (workflow_id or event_type required); templates: name, "
                    "agent_id, limit; actions: name, plugin.",
                    "properties": {
                        "status": {"type": "string"},
                        "agent_id": {"type": "string"},
                        "since": {"type": "string", "description": "RFC 3339 time."},
                        "limit": {"type": "integer", "minimum": 1},
                        "workflow_id": {"type": "string"},
                        "step_id": {"type": "string"},
                        "event_type": {"type": "string"},
                        "name": {"type": "string"},
                        "plugin": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            },
            "required": ["resource"],
            "additionalProperties": False,
        },
    },
    "opcode.diagram": {
        "description": "Draw a template (structure) or a run (with each step's status) as ascii, mermaid or a "
        "PNG image. Give exactly one of template_name or workflow_id. Answers {format, diagram}; for image, "
        "diagram is the base64 PNG (with width, height), also sent as image content.",
        "input_schema": {
            "type": "object",
            "properties": {
                "template_name": {"type": "string", "description": "Draw this template's structure."},
                "workflow_id": {"type": "string", "description": "Draw this run, as it ran."},
                "version": {"type": "string", "description": "Template version, e.g. v2; default: latest."},
                "format": {"enum": ["ascii", "mermaid", "image"]},
                "include_status": {"type": "boolean", "description": "For a run: tag and colour each step by "
                                   "its status (default true)."},
            },
            "required": ["format"],
            "additionalProperties": False,
        },
    },
}

INSTRUCTIONS = """\
opcode runs workflows for agents. Reason once, write the result as a workflow (a JSON DAG of steps),
register it with opcode.define, then run it with opcode.run as often as you like: no model tokens are
spent on a run, every run is recorded event by event, and it survives restarts of this server.

Start with opcode.query {"resource": "actions"} to see every action with its params schema. Steps run as
soon as their depends_on are done; `${{steps.<id>.output.<path>}}`, `${{inputs.<name>}}` and
`${{workflow.run_id}}` pass data between them. opcode.run answers with each step's status and output;
a run that fails answers normally with status "failed" and the error. opcode.status shows a run's steps,
pending decisions and latest events; opcode.query lists workflows, events and templates.

A reasoning step suspends the run until you decide: opcode.status lists the pending decision with its
prompt, options and injected data; answer with opcode.signal {"signal_type": "decision", "payload":
{"choice": "<option id>"}}, and the run resumes. Other signals: data (merged into the run's context, and
it resumes a wait step waiting for that signal), cancel, retry or skip (a failed step), and resume (a
run suspended because the server restarted or its timeout said suspend). Runs left active by a crash
are suspended at start-up until you resume or cancel them.

Identify yourself with a stable agent_id in every call. Errors come back as tool errors whose text
starts with a code such as [VALIDATION_ERROR], [NOT_FOUND] or [CYCLE_DETECTED], with the path of what is
wrong. opcode.diagram draws a template or a run (each step tagged with its status) as ascii, mermaid or
a PNG image.
"""

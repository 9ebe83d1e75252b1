"""peewee models of every table in SPEC §9; queries bind them to a Store's database, so none is bound here."""

from __future__ import annotations

import json
from typing import Any

import orjson
import peewee as pw


class JSONText(pw.TextField):
    """JSON kept as text, so that SQLite and PostgreSQL store and return the same thing."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else dumps(value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


# One encoder, built once: json.dumps with non-default options builds a new one per call, on the hot path.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Serialize a value the way every JSON column in the store holds it."""
    try:
        # orjson is ~17x faster than the stdlib encoder on event payloads, the hot path's largest cost.
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _ENCODER.encode(value)  # what orjson refuses (integers beyond 64 bits) the stdlib still writes


# Timestamps are store-format ISO-8601 UTC strings (see times.py), hence TextField throughout.
Timestamp = pw.TextField


class BaseModel(pw.Model):
    class Meta:
        legacy_table_names = False


class Agent(BaseModel):
    id = pw.TextField(primary_key=True)
    type = pw.TextField(default="llm")
    created_at = Timestamp()
    last_seen = Timestamp(null=True)

    class Meta:
        table_name = "agents"


class Workflow(BaseModel):
    id = pw.TextField(primary_key=True)
    name = pw.TextField(null=True)
    template_name = pw.TextField(null=True)
    template_version = pw.TextField(null=True)
    definition = JSONText()
    status = pw.TextField(default="pending")
    agent_id = pw.TextField()
    parent_workflow_id = pw.TextField(null=True, index=True)
    input_params = JSONText(null=True)
    output = JSONText(null=True)
    error = JSONText(null=True)
    idempotency_key = pw.TextField(null=True)
    recovery_attempts = pw.IntegerField(default=0)
    created_at = Timestamp(index=True)
    started_at = Timestamp(null=True)
    completed_at = Timestamp(null=True)
    updated_at = Timestamp()

    class Meta:
        table_name = "workflows"
        indexes = (
            (("status", "created_at"), False),
            (("agent_id", "created_at"), False),
            # NULL keys never collide, so only runs that asked for idempotency are constrained.
            (("agent_id", "idempotency_key"), True),
        )


class EventRow(BaseModel):
    id = pw.BigAutoField()
    workflow_id = pw.TextField()
    sequence = pw.IntegerField()
    event_type = pw.TextField(index=True)
    step_id = pw.TextField(null=True)
    payload = JSONText(null=True)
    agent_id = pw.TextField(null=True)
    timestamp = Timestamp(index=True)

    class Meta:
        table_name = "events"
        indexes = ((("workflow_id", "sequence"), True),)


class StepState(BaseModel):
    workflow_id = pw.TextField()
    step_id = pw.TextField()
    status = pw.TextField(default="pending")
    input = JSONText(null=True)
    output = JSONText(null=True)
    error = JSONText(null=True)
    attempt = pw.IntegerField(default=0)
    started_at = Timestamp(null=True)
    completed_at = Timestamp(null=True)
    duration_ms = pw.BigIntegerField(null=True)
    reason = pw.TextField(null=True)

    class Meta:
        table_name = "step_state"
        primary_key = pw.CompositeKey("workflow_id", "step_id")


class WorkflowContext(BaseModel):
    workflow_id = pw.TextField(primary_key=True)
    data = JSONText()
    updated_at = Timestamp()

    class Meta:
        table_name = "workflow_context"


class PendingDecision(BaseModel):
    id = pw.TextField(primary_key=True)
    workflow_id = pw.TextField(index=True)
    step_id = pw.TextField()
    context = JSONText(null=True)
    options = JSONText(null=True)
    timeout_at = Timestamp(null=True)
    fallback = pw.TextField(null=True)
    target_agent = pw.TextField(null=True)
    status = pw.TextField(default="pending")
    resolution = JSONText(null=True)
    created_at = Timestamp()
    resolved_at = Timestamp(null=True)

    class Meta:
        table_name = "pending_decisions"
        indexes = ((("status", "target_agent"), False),)


class WorkflowTemplate(BaseModel):
    id = pw.BigAutoField()
    name = pw.TextField()
    version = pw.TextField()
    version_num = pw.IntegerField()
    definition = JSONText()
    description = pw.TextField(null=True)
    input_schema = JSONText(null=True)
    output_schema = JSONText(null=True)
    triggers = JSONText(null=True)
    agent_id = pw.TextField(index=True)
    created_at = Timestamp()

    class Meta:
        table_name = "workflow_templates"
        indexes = ((("name", "version_num"), True),)


class Plugin(BaseModel):
    name = pw.TextField(primary_key=True)
    status = pw.TextField()
    settings = JSONText(null=True)
    updated_at = Timestamp()

    class Meta:
        table_name = "plugins"


class Secret(BaseModel):
    name = pw.TextField(primary_key=True)
    ciphertext = pw.BlobField()
    nonce = pw.BlobField()
    created_at = Timestamp()
    updated_at = Timestamp()

    class Meta:
        table_name = "secrets"


class ScheduledJob(BaseModel):
    id = pw.TextField(primary_key=True)
    template_name = pw.TextField(index=True)
    cron = pw.TextField()
    params = JSONText(null=True)
    agent_id = pw.TextField()
    timezone = pw.TextField(default="UTC")
    enabled = pw.BooleanField(default=True)
    next_run_at = Timestamp(null=True)
    last_run_at = Timestamp(null=True)
    last_run_status = pw.TextField(null=True)
    last_workflow_id = pw.TextField(null=True)
    created_at = Timestamp()

    class Meta:
        table_name = "scheduled_jobs"
        indexes = ((("enabled", "next_run_at"), False),)


class AuditLog(BaseModel):
    id = pw.BigAutoField()
    actor = pw.TextField()
    action = pw.TextField()
    target = pw.TextField(null=True)
    details = JSONText(null=True)
    timestamp = Timestamp(index=True)

    class Meta:
        table_name = "audit_log"


ALL_MODELS = (
    Agent, Workflow, EventRow, StepState, WorkflowContext, PendingDecision,
    WorkflowTemplate, Plugin, Secret, ScheduledJob, AuditLog,
)  # fmt: skip

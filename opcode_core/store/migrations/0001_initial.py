"""Every table of SPEC §9. A frozen copy of the models as they were, never importing the live ones."""

from __future__ import annotations

from typing import Any

import peewee as pw

# Storage types only: JSON and timestamps are text here, whatever Python types the live models map them to.
JSON = pw.TextField
TS = pw.TextField


def _model(db: pw.Database, table: str, fields: dict[str, pw.Field], **meta: Any) -> type[pw.Model]:
    meta_cls = type("Meta", (), {"database": db, "table_name": table, **meta})
    return type(table, (pw.Model,), {**fields, "Meta": meta_cls})


def _opt(cls: type[pw.Field] = pw.TextField) -> pw.Field:
    return cls(null=True)


def _tables(db: pw.Database) -> list[type[pw.Model]]:
    text = pw.TextField
    return [
        _model(db, "agents", {
            "id": text(primary_key=True), "type": text(default="llm"),
            "created_at": TS(), "last_seen": TS(null=True),
        }),
        _model(db, "workflows", {
            "id": text(primary_key=True), "name": _opt(), "template_name": _opt(), "template_version": _opt(),
            "definition": JSON(), "status": text(default="pending"), "agent_id": text(),
            "parent_workflow_id": text(null=True, index=True), "input_params": _opt(JSON), "output": _opt(JSON),
            "error": _opt(JSON), "idempotency_key": _opt(), "recovery_attempts": pw.IntegerField(default=0),
            "created_at": TS(index=True), "started_at": _opt(TS), "completed_at": _opt(TS), "updated_at": TS(),
        }, indexes=(
            (("status", "created_at"), False),
            (("agent_id", "created_at"), False),
            (("agent_id", "idempotency_key"), True),
        )),
        _model(db, "events", {
            "id": pw.BigAutoField(), "workflow_id": text(), "sequence": pw.IntegerField(),
            "event_type": text(index=True), "step_id": _opt(), "payload": _opt(JSON), "agent_id": _opt(),
            "timestamp": TS(index=True),
        }, indexes=((("workflow_id", "sequence"), True),)),
        _model(db, "step_state", {
            "workflow_id": text(), "step_id": text(), "status": text(default="pending"),
            "input": _opt(JSON), "output": _opt(JSON), "error": _opt(JSON), "attempt": pw.IntegerField(default=0),
            "started_at": _opt(TS), "completed_at": _opt(TS), "duration_ms": pw.BigIntegerField(null=True),
            "reason": _opt(),
        }, primary_key=pw.CompositeKey("workflow_id", "step_id")),
        _model(db, "workflow_context", {
            "workflow_id": text(primary_key=True), "data": JSON(), "updated_at": TS(),
        }),
        _model(db, "pending_decisions", {
            "id": text(primary_key=True), "workflow_id": text(index=True), "step_id": text(),
            "context": _opt(JSON), "options": _opt(JSON), "timeout_at": _opt(TS), "fallback": _opt(),
            "target_agent": _opt(), "status": text(default="pending"), "resolution": _opt(JSON),
            "created_at": TS(), "resolved_at": _opt(TS),
        }, indexes=((("status", "target_agent"), False),)),
        _model(db, "workflow_templates", {
            "id": pw.BigAutoField(), "name": text(), "version": text(), "version_num": pw.IntegerField(),
            "definition": JSON(), "description": _opt(), "input_schema": _opt(JSON), "output_schema": _opt(JSON),
            "triggers": _opt(JSON), "agent_id": text(index=True), "created_at": TS(),
        }, indexes=((("name", "version_num"), True),)),
        _model(db, "plugins", {
            "name": text(primary_key=True), "status": text(), "settings": _opt(JSON), "updated_at": TS(),
        }),
        _model(db, "secrets", {
            "name": text(primary_key=True), "ciphertext": pw.BlobField(), "nonce": pw.BlobField(),
            "created_at": TS(), "updated_at": TS(),
        }),
        _model(db, "scheduled_jobs", {
            "id": text(primary_key=True), "template_name": text(index=True), "cron": text(),
            "params": _opt(JSON), "agent_id": text(), "timezone": text(default="UTC"),
            "enabled": pw.BooleanField(default=True), "next_run_at": _opt(TS), "last_run_at": _opt(TS),
            "last_run_status": _opt(), "created_at": TS(),
        }, indexes=((("enabled", "next_run_at"), False),)),
        _model(db, "audit_log", {
            "id": pw.BigAutoField(), "actor": text(), "action": text(), "target": _opt(),
            "details": _opt(JSON), "timestamp": TS(index=True),
        }),
    ]  # fmt: skip


def up(migrator: Any, db: pw.Database) -> None:
    """Create every table and index."""
    db.create_tables(_tables(db))


def down(migrator: Any, db: pw.Database) -> None:
    """Drop every table."""
    db.drop_tables(_tables(db))

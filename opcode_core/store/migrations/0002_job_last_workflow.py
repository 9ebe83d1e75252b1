"""Scheduled jobs remember the run they started last, so a job never overlaps its own previous run."""

from __future__ import annotations

from typing import Any

import peewee as pw


def up(migrator: Any, db: pw.Database) -> None:
    """Add scheduled_jobs.last_workflow_id."""
    migrator.migrate(migrator.add_column("scheduled_jobs", "last_workflow_id", pw.TextField(null=True)))


def down(migrator: Any, db: pw.Database) -> None:
    """Drop scheduled_jobs.last_workflow_id."""
    migrator.migrate(migrator.drop_column("scheduled_jobs", "last_workflow_id"))

"""The event log's write path: a batch of events and its projection, in one transaction, in raw SQL."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import peewee as pw

from opcode_core.store.events import Event
from opcode_core.store.models import dumps
from opcode_core.store.projection import STEP_FIELDS, apply_step_event, apply_workflow_event

EVENT_COLUMNS = ("workflow_id", "sequence", "event_type", "step_id", "payload", "agent_id", "timestamp")
STEP_COLUMNS = ("workflow_id", *STEP_FIELDS)
JSON_STEP_FIELDS = frozenset({"input", "output", "error"})
# Pairs per prior-state query: two IN lists stay under SQLite's oldest limit of 999 parameters.
PAIRS_PER_QUERY = 400
WORKFLOW_COLUMNS = (
    "id", "name", "template_name", "template_version", "definition", "status", "agent_id", "parent_workflow_id",
    "input_params", "output", "error", "idempotency_key", "recovery_attempts", "created_at", "started_at",
    "completed_at", "updated_at",
)  # fmt: skip
JSON_WORKFLOW_FIELDS = frozenset({"definition", "input_params", "output", "error"})
TERMINAL_EVENTS = frozenset({"workflow_completed", "workflow_failed", "workflow_cancelled"})


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


class EventLog:
    """Appends event batches for a `Store`; statements are prepared once, rows go through the raw cursor."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        marks = ", ".join([db.param] * len(EVENT_COLUMNS))
        self._insert_events = f"INSERT INTO events ({_quoted(EVENT_COLUMNS)}) VALUES ({marks})"
        marks = ", ".join([db.param] * len(STEP_COLUMNS))
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in STEP_FIELDS if c != "step_id")
        # ON CONFLICT ... excluded: the same upsert syntax on SQLite (3.24+) and PostgreSQL.
        self._upsert_steps = (
            f"INSERT INTO step_state ({_quoted(STEP_COLUMNS)}) VALUES ({marks}) "
            f'ON CONFLICT ("workflow_id", "step_id") DO UPDATE SET {updates}'
        )
        marks = ", ".join([db.param] * len(WORKFLOW_COLUMNS))
        self._insert_workflows = f"INSERT INTO workflows ({_quoted(WORKFLOW_COLUMNS)}) VALUES ({marks})"
        self._update_workflow: dict[tuple[str, ...], str] = {}
        # Step states of runs still going, as last committed: a completion needs no read-back of its start.
        self._states: dict[tuple[str, str], dict[str, Any]] = {}

    def append(
        self,
        events: Sequence[Event],
        encoded_payloads: Sequence[str] | None = None,
        new_workflows: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Insert new workflow rows and events and fold the events into step_state and workflows, in one transaction."""
        if not events and not new_workflows:
            return
        payloads = encoded_payloads if encoded_payloads is not None else [dumps(e.payload) for e in events]
        rows = [
            (e.workflow_id, e.sequence, e.event_type, e.step_id, text, e.agent_id, e.timestamp)
            for e, text in zip(events, payloads, strict=True)
        ]
        with self.db.atomic():
            if new_workflows:
                self._execute_many(self._insert_workflows, [
                    tuple(dumps(w.get(c)) if c in JSON_WORKFLOW_FIELDS and w.get(c) is not None else w.get(c)
                          for c in WORKFLOW_COLUMNS)
                    for w in new_workflows
                ])
            if rows:
                # One raw statement for the whole batch: building a peewee insert per row costs several times more.
                self._execute_many(self._insert_events, rows)
            committed = self._project_steps([e for e in events if e.step_id is not None])
            self._project_workflows(events)
        # Only now that the transaction committed may the cache show its states.
        self._states.update(committed)
        for e in events:
            if e.event_type in TERMINAL_EVENTS:
                self.forget(e.workflow_id)

    def forget(self, workflow_id: str) -> None:
        """Drop a finished workflow's cached step states."""
        for pair in [pair for pair in self._states if pair[0] == workflow_id]:
            del self._states[pair]

    def _execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        cursor = self.db.cursor()
        if len(rows) == 1:
            cursor.execute(sql, rows[0])  # psycopg's executemany sets up a pipeline: a lone row is cheaper without
        else:
            cursor.executemany(sql, rows)

    def _project_steps(self, events: list[Event]) -> dict[tuple[str, str], dict[str, Any]]:
        if not events:
            return {}
        first: dict[tuple[str, str], str] = {}
        for e in events:
            first.setdefault((e.workflow_id, e.step_id or ""), e.event_type)
        # step_started begins a clean state, so only steps whose batch opens otherwise need their stored row.
        states: dict[tuple[str, str], dict[str, Any] | None] = dict.fromkeys(first)
        needed = []
        for pair, kind in first.items():
            if kind == "step_started":
                continue
            if pair in self._states:
                states[pair] = self._states[pair]
            else:
                needed.append(pair)
        for start in range(0, len(needed), PAIRS_PER_QUERY):
            states.update(self._load_step_states(set(islice(needed, start, start + PAIRS_PER_QUERY))))
        loaded = dict(states)
        for e in events:
            pair = (e.workflow_id, e.step_id or "")
            states[pair] = apply_step_event(states[pair], e)
        rows = [
            (pair[0], *[_db_json(state[c]) if c in JSON_STEP_FIELDS else state[c] for c in STEP_FIELDS])
            for pair, state in states.items()
            # The projection hands back the very same object when nothing changed: no write then.
            if state is not None and state is not loaded[pair]
        ]
        if rows:
            self._execute_many(self._upsert_steps, rows)
        return {pair: state for pair, state in states.items() if state is not None}

    def _load_step_states(self, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        # Raw SQL: building this query with peewee cost more than running it.
        workflows, steps = sorted({wf for wf, _ in pairs}), sorted({s for _, s in pairs})
        sql = (
            f"SELECT {_quoted(STEP_COLUMNS)} FROM step_state"
            f" WHERE workflow_id IN ({', '.join([self.db.param] * len(workflows))})"
            f" AND step_id IN ({', '.join([self.db.param] * len(steps))})"
        )
        found = {}
        for values in self.db.execute_sql(sql, [*workflows, *steps]).fetchall():
            row = dict(zip(STEP_COLUMNS, values, strict=True))
            pair = (row.pop("workflow_id"), row["step_id"])
            if pair in pairs:
                for c in JSON_STEP_FIELDS:
                    row[c] = None if row[c] is None else json.loads(row[c])
                found[pair] = row
        return found

    def _project_workflows(self, events: Sequence[Event]) -> None:
        changes: dict[str, dict[str, Any]] = {}
        for e in events:
            changed = apply_workflow_event(changes.get(e.workflow_id, {}), e)
            if changed:
                changes[e.workflow_id] = changed
        for workflow_id, fields in changes.items():
            columns = tuple(fields)
            sql = self._update_workflow.get(columns)
            if sql is None:
                assignments = ", ".join(f'"{c}" = {self.db.param}' for c in columns)
                sql = f'UPDATE workflows SET {assignments} WHERE "id" = {self.db.param}'
                self._update_workflow[columns] = sql
            values = [dumps(v) if c in JSON_WORKFLOW_FIELDS and v is not None else v for c, v in fields.items()]
            self.db.cursor().execute(sql, (*values, workflow_id))


def _db_json(value: Any) -> str | None:
    return None if value is None else dumps(value)

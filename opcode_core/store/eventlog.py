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
        self._insert_events = _MultiRowInsert(db.param, f"INSERT INTO events ({_quoted(EVENT_COLUMNS)}) VALUES ",
                                              len(EVENT_COLUMNS))
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in STEP_FIELDS if c != "step_id")
        # ON CONFLICT ... excluded: the same upsert syntax on SQLite (3.24+) and PostgreSQL. A batch holds one row
        # per step, so no statement touches a row twice.
        self._upsert_steps = _MultiRowInsert(
            db.param, f"INSERT INTO step_state ({_quoted(STEP_COLUMNS)}) VALUES ", len(STEP_COLUMNS),
            f' ON CONFLICT ("workflow_id", "step_id") DO UPDATE SET {updates}',
        )
        marks = ", ".join([db.param] * len(WORKFLOW_COLUMNS))
        self._insert_workflows = f"INSERT INTO workflows ({_quoted(WORKFLOW_COLUMNS)}) VALUES ({marks})"
        self._update_workflow: dict[tuple[str, ...], str] = {}
        # Step states of runs still going, as last committed, by workflow: a completion needs no read-back of its
        # start, and a finished run's entries go in one step.
        self._states: dict[str, dict[str, dict[str, Any]]] = {}

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
        db = self.db
        if db.in_transaction():  # inside a caller's transaction: nest as a savepoint
            with db.atomic():
                committed = self._write(db.cursor(), events, payloads, new_workflows)
        else:
            # BEGIN and COMMIT by hand on one cursor: atomic() costs more than the statements of a small batch.
            cursor = db.cursor()
            db.begin()
            try:
                committed = self._write(cursor, events, payloads, new_workflows)
                cursor.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise
        # Only now that the transaction committed may the cache show its states.
        for (workflow_id, step_id), state in committed.items():
            self._states.setdefault(workflow_id, {})[step_id] = state
        for e in events:
            if e.event_type in TERMINAL_EVENTS:
                self._states.pop(e.workflow_id, None)

    def forget(self, workflow_id: str) -> None:
        """Drop a finished workflow's cached step states."""
        self._states.pop(workflow_id, None)

    def _write(
        self, cursor: Any, events: Sequence[Event], payloads: Sequence[str], new_workflows: Sequence[dict[str, Any]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        if new_workflows:
            _execute_many(cursor, self._insert_workflows, [
                tuple(dumps(w.get(c)) if c in JSON_WORKFLOW_FIELDS and w.get(c) is not None else w.get(c)
                      for c in WORKFLOW_COLUMNS)
                for w in new_workflows
            ])
        if events:
            # One raw statement for the whole batch: building a peewee insert per row costs several times more.
            self._insert_events.run(cursor, [
                (e.workflow_id, e.sequence, e.event_type, e.step_id, text, e.agent_id, e.timestamp)
                for e, text in zip(events, payloads, strict=True)
            ])
        committed = self._project_steps(cursor, events)
        self._project_workflows(cursor, events)
        return committed

    def _project_steps(self, cursor: Any, events: Sequence[Event]) -> dict[tuple[str, str], dict[str, Any]]:
        # The state each touched step had before this batch; step_started begins a clean state, so only steps
        # whose batch opens otherwise (and that are not cached) need their stored row.
        before: dict[tuple[str, str], dict[str, Any] | None] = {}
        needed = []
        for e in events:
            if e.step_id is None:
                continue
            pair = (e.workflow_id, e.step_id)
            if pair in before:
                continue
            cached = self._states.get(e.workflow_id)
            state = cached.get(e.step_id) if cached is not None else None
            if state is None and e.event_type != "step_started":
                needed.append(pair)
            before[pair] = state
        if not before:
            return {}
        for start in range(0, len(needed), PAIRS_PER_QUERY):
            before.update(self._load_step_states(set(islice(needed, start, start + PAIRS_PER_QUERY))))
        states = dict(before)
        for e in events:
            if e.step_id is not None:
                pair = (e.workflow_id, e.step_id)
                states[pair] = apply_step_event(states[pair], e)
        rows = [
            _step_row(pair[0], state)
            for pair, state in states.items()
            # The projection hands back the very same object when nothing changed: no write then.
            if state is not None and state is not before[pair]
        ]
        if rows:
            self._upsert_steps.run(cursor, rows)
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

    def _project_workflows(self, cursor: Any, events: Sequence[Event]) -> None:
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
            cursor.execute(sql, (*values, workflow_id))


class _MultiRowInsert:
    """One INSERT with many VALUES rows per chunk: ~25% less than executemany's statement per row on SQLite."""

    # Parameters per statement stay under 999, the oldest SQLite limit.
    MAX_PARAMS = 900

    def __init__(self, param: str, head: str, width: int, tail: str = "") -> None:
        self.head, self.tail, self.width = head, tail, width
        self.row = "(" + ", ".join([param] * width) + ")"
        self.chunk = self.MAX_PARAMS // width
        self._sql: dict[int, str] = {}

    def run(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        """Insert `rows` (tuples of `width` values)."""
        for start in range(0, len(rows), self.chunk):
            part = rows[start:start + self.chunk]
            sql = self._sql.get(len(part))
            if sql is None:
                sql = self._sql[len(part)] = self.head + ", ".join([self.row] * len(part)) + self.tail
            cursor.execute(sql, [value for row in part for value in row] if len(part) > 1 else part[0])


def _execute_many(cursor: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if len(rows) == 1:
        cursor.execute(sql, rows[0])  # psycopg's executemany sets up a pipeline: a lone row is cheaper without
    else:
        cursor.executemany(sql, rows)


def _step_row(workflow_id: str, state: dict[str, Any]) -> tuple[Any, ...]:
    """A step_state row in STEP_COLUMNS order, JSON fields encoded; spelled out (a test holds it to the columns)."""
    return (
        workflow_id, state["step_id"], state["status"], _db_json(state["input"]), _db_json(state["output"]),
        _db_json(state["error"]), state["attempt"], state["started_at"], state["completed_at"], state["duration_ms"],
        state["reason"],
    )



def _db_json(value: Any) -> str | None:
    return None if value is None else dumps(value)

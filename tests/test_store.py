"""The store on real databases: a SQLite file always, PostgreSQL too when OPCODE_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from playhouse.schema_diff import diff_models

from opcode_core.errors import CONFLICT, STORE_ERROR, VALIDATION_ERROR, OpcodeError
from opcode_core.store import Event, Store, open_database
from opcode_core.store.models import ALL_MODELS
from opcode_core.store.projection import apply_step_event, apply_workflow_event
from opcode_core.store.times import to_iso, utc_now

POSTGRES_URL = os.environ.get("OPCODE_TEST_POSTGRES_URL")
TABLES = {
    "agents", "workflows", "events", "step_state", "workflow_context", "pending_decisions",
    "workflow_templates", "plugins", "secrets", "scheduled_jobs", "audit_log",
}  # fmt: skip


@dataclass
class Backend:
    """One test database: the URL the store opens, and independent raw connections to check what it wrote."""

    kind: str
    url: str
    sqlite_path: Path | None = None
    schema: str | None = None

    def connect_raw(self) -> Any:
        """A DB-API connection of its own (not peewee, not the store's), in autocommit."""
        if self.kind == "sqlite":
            return sqlite3.connect(self.sqlite_path, isolation_level=None)
        import psycopg

        return psycopg.connect(POSTGRES_URL, autocommit=True, options=f"-c search_path={self.schema}")

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query on a fresh independent connection; `?` marks parameters on both databases."""
        return self.execute(sql, *params, rows=True)

    def execute(self, sql: str, *params: Any, rows: bool = False) -> Any:
        """Run one statement on a fresh independent connection, returning its rows if asked."""
        conn = self.connect_raw()
        try:
            cursor = conn.execute(sql.replace("?", "%s") if self.kind == "postgres" else sql, params)
            return list(cursor.fetchall()) if rows else None
        finally:
            conn.close()


def _with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextmanager
def postgres_schema() -> Iterator[Backend]:
    """A new PostgreSQL schema, reached through search_path, dropped afterwards (parallel and CI runs never meet)."""
    if not POSTGRES_URL:
        pytest.skip("set OPCODE_TEST_POSTGRES_URL (postgresql://postgres@127.0.0.1:5432/test) to run on PostgreSQL")
    import psycopg

    schema = f"opcode_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield Backend("postgres", _with_search_path(POSTGRES_URL, schema), schema=schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database per test: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "opcode.db"
        yield Backend("sqlite", f"sqlite:///{path}", sqlite_path=path)
        return
    with postgres_schema() as pg:
        yield pg


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    """A migrated store on the test database."""
    opened = Store.open(backend.url)
    try:
        yield opened
    finally:
        opened.close()


def new_workflow(store: Store, agent_id: str = "agent-1", **extra: Any) -> str:
    """Create a pending workflow and return its id."""
    workflow_id = str(uuid.uuid4())
    store.create_workflow(
        id=workflow_id, name=extra.pop("name", "wf"), template_name=extra.pop("template_name", None),
        template_version=None, definition={"steps": [{"id": "a"}]}, agent_id=agent_id,
        input_params={"n": 1}, **extra,
    )  # fmt: skip
    return workflow_id


class Stream:
    """Builds consecutive events of one workflow, as the writer would number them."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.sequence = 0

    def __call__(self, event_type: str, step_id: str | None = None, **payload: Any) -> Event:
        self.sequence += 1
        return Event(self.workflow_id, self.sequence, event_type, step_id, payload, "agent-1", utc_now())


# -- schema and migrations ---------------------------------------------------------------------------------------

MIGRATIONS = ["0001_initial", "0002_job_last_workflow"]


def test_migrations_create_every_table_and_are_recorded(backend: Backend) -> None:
    first = Store.open(backend.url)
    try:
        assert first.migrated == MIGRATIONS
        assert set(first.db.get_tables()) >= TABLES
        assert first.applied_migrations() == MIGRATIONS
    finally:
        first.close()
    again = Store.open(backend.url)
    try:
        assert again.migrated == []
        assert again.applied_migrations() == MIGRATIONS
    finally:
        again.close()
    assert backend.fetch("SELECT name FROM schema_migrations ORDER BY name") == [(name,) for name in MIGRATIONS]


def test_migrated_schema_matches_the_models(store: Store) -> None:
    # The migration is a frozen copy of the models; this catches the two drifting apart.
    diff = diff_models(store.db, list(ALL_MODELS))
    assert not diff, str(diff)


def test_sqlite_file_gets_its_directory_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "x.db"
    db = open_database(f"sqlite:///{path}")
    try:
        assert path.exists()
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        db.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://nobody:secret@127.0.0.1:1/nowhere?connect_timeout=2",
        "mysql://127.0.0.1/x",
        "sqlite:////proc/no-such-dir/x.db",
    ],
)
def test_open_failures_are_store_errors(url: str) -> None:
    with pytest.raises(OpcodeError) as info:
        Store.open(url)
    assert info.value.code == STORE_ERROR
    assert "secret" not in info.value.message  # the password never reaches a message


def test_ping(store: Store) -> None:
    store.ping()


@pytest.mark.postgres
def test_ping_fails_then_reconnects_after_the_server_drops_us() -> None:
    with postgres_schema() as backend:
        store = Store.open(backend.url)
        try:
            _drop_and_reconnect(backend, store)
        finally:
            store.close()


def _drop_and_reconnect(backend: Backend, store: Store) -> None:
    store.ping()
    pid = store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    assert backend.fetch("SELECT pg_terminate_backend(?)", pid) == [(True,)]
    with pytest.raises(OpcodeError) as info:
        store.ping()
    assert info.value.code == STORE_ERROR
    store.ping()  # the dead connection was dropped, so this one reconnects


# -- events ------------------------------------------------------------------------------------------------------


def test_events_append_and_read_back(backend: Backend, store: Store) -> None:
    wf = new_workflow(store)
    ev = Stream(wf)
    store.append_events([ev("workflow_started"), ev("step_started", "a", input={"x": "é"}), ev("custom_event")])
    assert store.count_events(wf) == 3
    assert store.last_sequence(wf) == 3
    assert store.last_sequence("unknown") == 0
    assert store.last_sequences([wf, "unknown"]) == {wf: 3, "unknown": 0}
    rows = store.list_events(workflow_id=wf)
    assert [(r["sequence"], r["event_type"], r["step_id"]) for r in rows] == [
        (1, "workflow_started", None),
        (2, "step_started", "a"),
        (3, "custom_event", None),
    ]
    assert rows[1]["payload"] == {"input": {"x": "é"}}
    assert rows[1]["agent_id"] == "agent-1"
    assert backend.fetch("SELECT COUNT(*) FROM events WHERE workflow_id = ?", wf) == [(3,)]


def test_duplicate_sequence_is_rejected_and_the_whole_batch_rolls_back(backend: Backend, store: Store) -> None:
    wf = new_workflow(store)
    ev = Stream(wf)
    store.append_events([ev("workflow_started"), ev("step_started", "a")])
    fresh = Event(wf, 3, "step_completed", "a", {"output": 1}, None, utc_now())
    duplicate = Event(wf, 2, "step_failed", "a", {}, None, utc_now())
    with pytest.raises(OpcodeError) as info:
        store.append_events([fresh, duplicate])
    assert info.value.code == STORE_ERROR
    # Nothing of the failed batch stays: not the good event, not its projection.
    assert store.last_sequence(wf) == 2
    assert store.get_step_states(wf)["a"]["status"] == "running"
    assert backend.fetch("SELECT MAX(sequence) FROM events WHERE workflow_id = ?", wf) == [(2,)]
    store.append_events([fresh])  # the store is still usable after the failure
    assert store.last_sequence(wf) == 3


def test_list_events_filters(store: Store) -> None:
    wf, other = new_workflow(store), new_workflow(store)
    ev, ev2 = Stream(wf), Stream(other)
    store.append_events([ev("workflow_started"), ev("step_started", "a"), ev2("workflow_started")])
    cut = utc_now()
    store.append_events([ev("step_completed", "a", output=1), ev("step_started", "b"), ev2("workflow_cancelled")])
    assert [r["sequence"] for r in store.list_events(workflow_id=wf, newest_first=True)] == [4, 3, 2, 1]
    assert [r["event_type"] for r in store.list_events(workflow_id=wf, step_id="a")] == [
        "step_started",
        "step_completed",
    ]
    assert {r["workflow_id"] for r in store.list_events(event_type="workflow_started")} == {wf, other}
    assert [r["event_type"] for r in store.list_events(workflow_id=wf, since=cut)] == ["step_completed", "step_started"]
    assert len(store.list_events(since=cut)) == 3
    assert len(store.list_events(limit=2)) == 2
    assert store.list_events(limit=1, newest_first=True)[0]["event_type"] == "workflow_cancelled"
    with pytest.raises(OpcodeError) as info:
        store.list_events(since="yesterday")
    assert info.value.code == VALIDATION_ERROR


# -- projections -------------------------------------------------------------------------------------------------


def realistic_run(ev: Stream) -> list[list[Event]]:
    """A run's events as the writer would batch them: retries, a failure kept by on_error ignore, a skip."""
    return [
        [ev("workflow_started", inputs={"n": 1}), ev("step_started", "fetch", attempt=1, input={"url": "u"})],
        [ev("step_failed", "fetch", error={"code": "TIMEOUT_ERROR", "message": "slow"}, duration_ms=30)],
        [ev("step_retrying", "fetch", attempt=1), ev("step_retry_attempt", "fetch", attempt=2)],
        [ev("step_started", "fetch", attempt=2, input={"url": "u"})],
        [
            ev("step_completed", "fetch", output={"status_code": 200, "body": [1, 2]}, duration_ms=12),
            ev("step_started", "lint", attempt=1, input={"cmd": "ruff"}),
            ev("condition_evaluated", "gate", result=False),
        ],
        [
            ev("step_failed", "lint", error={"code": "EXECUTION_ERROR", "message": "exit 1"}, output={"exit_code": 1}),
            ev("step_ignored", "lint"),
            ev("step_skipped", "deploy", reason="condition false"),
            ev("step_started", "approve"),
            ev("decision_requested", "approve", options=["yes", "no"]),
            ev("step_suspended", "approve"),
        ],
        [ev("step_started", "approve", attempt=1, rerun=True), ev("step_completed", "approve", output="yes")],
        [ev("step_started", "notify"), ev("step_completed", "notify", output=None, input={"to": "ops"})],
        [ev("workflow_completed", output={"ok": True})],
    ]


def test_step_state_is_materialized_and_equals_replay(store: Store) -> None:
    wf = new_workflow(store)
    ev = Stream(wf)
    for batch in realistic_run(ev):
        store.append_events(batch)
    states = store.get_step_states(wf)
    assert states == store.rebuild_step_states(wf)
    assert set(states) == {"fetch", "lint", "deploy", "approve", "notify"}  # 'gate' only had a non-status event
    fetch = states["fetch"]
    assert (fetch["status"], fetch["attempt"], fetch["error"]) == ("completed", 2, None)
    assert fetch["output"] == {"status_code": 200, "body": [1, 2]}
    assert (fetch["duration_ms"], fetch["input"]) == (12, {"url": "u"})
    assert fetch["started_at"] <= fetch["completed_at"]
    lint = states["lint"]
    assert lint["status"] == "skipped"
    assert lint["output"] == {"exit_code": 1}  # on_error ignore keeps the failed attempt's output
    assert lint["error"] == {"code": "EXECUTION_ERROR", "message": "exit 1"}
    assert (states["deploy"]["status"], states["deploy"]["reason"]) == ("skipped", "condition false")
    assert (states["approve"]["status"], states["approve"]["output"]) == ("completed", "yes")
    assert states["notify"]["input"] == {"to": "ops"}  # input reported with the outcome


def test_rebuild_detects_a_drifted_row(backend: Backend, store: Store) -> None:
    wf = new_workflow(store)
    ev = Stream(wf)
    store.append_events([ev("step_started", "a"), ev("step_completed", "a", output=1)])
    backend.execute("UPDATE step_state SET status = 'failed' WHERE workflow_id = ?", wf)
    assert store.get_step_states(wf)["a"]["status"] == "failed"
    assert store.rebuild_step_states(wf)["a"]["status"] == "completed"


def test_workflow_row_follows_events(store: Store) -> None:
    wf = new_workflow(store)
    ev = Stream(wf)
    for batch in realistic_run(ev):
        store.append_events(batch)
    row = store.get_workflow(wf)
    assert row is not None
    assert row["status"] == "completed"
    assert row["output"] == {"ok": True}
    assert row["started_at"] is not None and row["completed_at"] is not None
    assert row["started_at"] <= row["completed_at"] == row["updated_at"]

    failing = new_workflow(store)
    ev = Stream(failing)
    store.append_events([ev("workflow_started"), ev("workflow_suspended")])
    assert store.get_workflow(failing)["status"] == "suspended"
    assert store.active_workflows() == []
    store.append_events([ev("workflow_resumed"), ev("workflow_interrupted")])
    assert [w["id"] for w in store.active_workflows()] == [failing]
    store.append_events([ev("workflow_failed", error={"code": "STEP_FAILED", "message": "x"})])
    row = store.get_workflow(failing)
    assert (row["status"], row["error"]) == ("failed", {"code": "STEP_FAILED", "message": "x"})
    assert row["completed_at"] is not None

    cancelled = new_workflow(store)
    store.append_events([Stream(cancelled)("workflow_cancelled")])
    assert store.get_workflow(cancelled)["status"] == "cancelled"


def test_projection_is_pure_and_ignores_what_is_not_its_business() -> None:
    started = Event("w", 1, "step_started", "a", {"input": {"q": 1}}, None, "t1")
    state = apply_step_event(None, started)
    assert state is not None and state["status"] == "running" and state["attempt"] == 1
    assert apply_step_event(state, Event("w", 2, "loop_iter_started", "a", {}, None, "t2")) is state
    assert apply_step_event(None, Event("w", 2, "workflow_started", None, {}, None, "t2")) is None
    done = apply_step_event(state, Event("w", 3, "step_completed", "a", {"output": 5}, None, "t3"))
    assert state["status"] == "running"  # the input state is not modified
    assert done is not None and (done["status"], done["output"], done["completed_at"]) == ("completed", 5, "t3")
    changes = apply_workflow_event({}, Event("w", 4, "variable_set", None, {}, None, "t4"))
    assert changes == {}
    assert apply_workflow_event(changes, Event("w", 5, "workflow_started", None, {}, None, "t5")) == {
        "status": "active",
        "started_at": "t5",
        "updated_at": "t5",
    }


# -- templates ---------------------------------------------------------------------------------------------------


def test_template_versions_count_per_name(store: Store) -> None:
    assert [store.create_template("deploy", {"steps": [i]}, "agent-1") for i in range(3)] == ["v1", "v2", "v3"]
    assert store.create_template("other", {"steps": []}, "agent-2", description="d", triggers={"cron": []}) == "v1"
    assert store.create_template("deploy", {"steps": [3]}, "agent-2") == "v4"

    latest = store.get_template("deploy")
    assert latest is not None and (latest["version"], latest["definition"]) == ("v4", {"steps": [3]})
    for spelled in ("v2", "2", 2):
        found = store.get_template("deploy", spelled)
        assert found is not None and found["definition"] == {"steps": [1]}
    assert store.get_template("deploy", "v9") is None
    assert store.get_template("deploy", "nonsense") is None
    assert store.get_template("nope") is None
    other = store.get_template("other", "latest")
    assert other is not None
    assert set(other) == {
        "name", "version", "definition", "description", "input_schema", "output_schema", "triggers",
        "agent_id", "created_at",
    }  # fmt: skip
    assert (other["description"], other["triggers"]) == ("d", {"cron": []})

    assert [t["version"] for t in store.list_templates(name="deploy")] == ["v4", "v3", "v2", "v1"]
    assert [(t["name"], t["version"]) for t in store.list_templates(agent_id="agent-2")] == [
        ("deploy", "v4"),
        ("other", "v1"),
    ]
    assert len(store.list_templates(limit=2)) == 2
    assert len(store.list_templates()) == 5


def test_template_versions_survive_concurrent_writers(backend: Backend, store: Store) -> None:
    errors: list[BaseException] = []
    versions: list[str] = []
    lock = threading.Lock()

    def writer() -> None:
        own = Store.open(backend.url)  # a connection of its own, as another process would have
        try:
            for _ in range(5):
                version = own.create_template("shared", {"steps": []}, "agent-1")
                with lock:
                    versions.append(version)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(versions, key=lambda v: int(v[1:])) == [f"v{n}" for n in range(1, 21)]
    assert store.list_templates(name="shared", limit=1)[0]["version"] == "v20"


# -- workflows, agents, context ----------------------------------------------------------------------------------


def test_workflows_create_get_and_list(store: Store) -> None:
    first = new_workflow(store, agent_id="a", name="one")
    cut = utc_now()
    second = new_workflow(store, agent_id="b", template_name="deploy")
    third = new_workflow(store, agent_id="a", parent_workflow_id=first)
    store.append_events([Stream(third)("workflow_started")])

    row = store.get_workflow(first)
    assert row is not None
    assert (row["status"], row["name"], row["agent_id"], row["recovery_attempts"]) == ("pending", "one", "a", 0)
    assert (row["definition"], row["input_params"]) == ({"steps": [{"id": "a"}]}, {"n": 1})
    assert row["created_at"].endswith("Z") and row["started_at"] is None
    assert store.get_workflow("missing") is None

    assert [w["id"] for w in store.list_workflows()] == [third, second, first]
    assert [w["id"] for w in store.list_workflows(agent_id="a")] == [third, first]
    assert [w["id"] for w in store.list_workflows(status="pending")] == [second, first]
    assert [w["id"] for w in store.list_workflows(status="active", agent_id="a")] == [third]
    assert [w["id"] for w in store.list_workflows(since=cut)] == [third, second]
    assert [w["id"] for w in store.list_workflows(limit=1)] == [third]
    assert store.get_workflow(third)["parent_workflow_id"] == first


def test_idempotency_key_lookup_and_uniqueness(store: Store) -> None:
    wf = new_workflow(store, agent_id="a", idempotency_key="k1")
    found = store.find_workflow_by_idempotency_key("a", "k1")
    assert found is not None and found["id"] == wf
    assert store.find_workflow_by_idempotency_key("b", "k1") is None  # keys are per agent
    assert store.find_workflow_by_idempotency_key("a", "k2") is None
    new_workflow(store, agent_id="b", idempotency_key="k1")
    with pytest.raises(OpcodeError) as info:
        new_workflow(store, agent_id="a", idempotency_key="k1")
    assert info.value.code == CONFLICT
    new_workflow(store, agent_id="a")  # no key: never a conflict
    new_workflow(store, agent_id="a")


def test_agents_are_recorded_once_and_seen_again(store: Store) -> None:
    store.ensure_agent("a")
    first_seen = store.list_agents()[0]["last_seen"]
    store.ensure_agent("a", "system")
    store.ensure_agent("svc", "service")
    agents = store.list_agents()
    assert [(a["id"], a["type"]) for a in agents] == [("a", "llm"), ("svc", "service")]
    assert agents[0]["last_seen"] > first_seen
    with pytest.raises(OpcodeError) as info:
        store.ensure_agent("x", "robot")
    assert info.value.code == VALIDATION_ERROR


def test_context_round_trip(store: Store) -> None:
    wf = new_workflow(store)
    assert store.get_context(wf) == {}
    store.set_context(wf, {"intent": "deploy", "notes": ["a"]})
    store.set_context(wf, {"intent": "deploy", "notes": ["a", "b"], "n": 1.5})
    assert store.get_context(wf) == {"intent": "deploy", "notes": ["a", "b"], "n": 1.5}


def test_timestamps_are_iso_utc() -> None:
    now = utc_now()
    assert len(now) == 27 and now.endswith("Z")
    assert to_iso("2024-05-01T12:00:00+02:00") == "2024-05-01T10:00:00.000000Z"
    assert to_iso("2024-05-01") == "2024-05-01T00:00:00.000000Z"
    assert to_iso("2024-05-01T10:00:00.5Z") > to_iso("2024-05-01T10:00:00Z")


def test_step_rows_follow_the_step_state_columns() -> None:
    from opcode_core.store.eventlog import STEP_COLUMNS, _step_row
    from opcode_core.store.projection import STEP_FIELDS

    state = {field: f"v-{field}" for field in STEP_FIELDS}
    row = _step_row("wf", state)
    expected = {c: f'"v-{c}"' if c in ("input", "output", "error") else f"v-{c}" for c in STEP_COLUMNS}
    expected["workflow_id"] = "wf"
    assert dict(zip(STEP_COLUMNS, row, strict=True)) == expected

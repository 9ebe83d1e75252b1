"""`Store`: every read and write of the database, synchronous; the writer runs it off or on the event loop."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
import peewee as pw
from playhouse.migrations import Runner

from opcode_core.errors import CONFLICT, STORE_ERROR, VALIDATION_ERROR, OpcodeError
from opcode_core.store.database import DRIVER_ERRORS, open_database
from opcode_core.store.eventlog import EventLog
from opcode_core.store.events import Event
from opcode_core.store.models import (
    Agent,
    EventRow,
    PendingDecision,
    ScheduledJob,
    Secret,
    StepState,
    Workflow,
    WorkflowContext,
    WorkflowTemplate,
)
from opcode_core.store.projection import STEP_FIELDS, apply_step_event
from opcode_core.store.times import to_iso, utc_now

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATIONS_TABLE = "schema_migrations"
AGENT_TYPES = ("llm", "system", "human", "service")
TEMPLATE_RETRIES = 8

P = ParamSpec("P")
R = TypeVar("R")


def _guarded(fn: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """Turn driver errors into STORE_ERROR, and drop a connection the error left unusable."""

    @functools.wraps(fn)
    def wrapper(self: Store, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(self, *args, **kwargs)
        except DRIVER_ERRORS as exc:
            self._discard_broken_connection()
            raise OpcodeError(STORE_ERROR, f"{fn.__name__}: {exc}") from exc

    return wrapper


class Store:
    """The database behind one opcode process: templates, workflows, the event log and its projections."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self.is_postgres = isinstance(db, pw.PostgresqlDatabase)
        # Names of the migrations this open applied; empty when the schema was already current.
        self.migrated: list[str] = []
        # Whether this process holds the lock that makes it the one recovering runs and firing cron jobs.
        self.holds_recovery_lock = False
        self._log = EventLog(db)
        # What hides secret values in JSON this store writes besides events (the runtime's redactor sets it).
        self.redact: Callable[[Any], Any] = _unchanged

    # -- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to the database at `url` and apply pending migrations."""
        store = cls(open_database(url))
        try:
            store.migrated = store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    @_guarded
    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; returns their names."""
        runner = Runner(self.db, str(MIGRATIONS_DIR), table_name=MIGRATIONS_TABLE)
        if not self.is_postgres:
            return runner.up()
        # Several processes may start at once on one PostgreSQL; one migrates, the others then find nothing to do.
        lock = "SELECT pg_advisory_lock(hashtext(current_schema() || '.opcode.migrate'))"
        self.db.execute_sql(lock)
        try:
            return runner.up()
        finally:
            self.db.execute_sql(lock.replace("pg_advisory_lock", "pg_advisory_unlock"))

    @_guarded
    def applied_migrations(self) -> list[str]:
        """Names of every migration recorded in the database, in order."""
        cursor = self.db.execute_sql(f'SELECT "name" FROM "{MIGRATIONS_TABLE}" ORDER BY "name"')
        return [name for (name,) in cursor.fetchall()]

    def close(self) -> None:
        """Close this thread's connection (peewee keeps one per thread)."""
        if not self.db.is_closed():
            self.db.close()

    @_guarded
    def ping(self) -> None:
        """Raise STORE_ERROR unless the database answers a query."""
        self.db.execute_sql("SELECT 1").fetchone()

    def _discard_broken_connection(self) -> None:
        # A dropped PostgreSQL connection stays dead; closing it lets the next call reconnect.
        if self.db.is_closed() or self.db.in_transaction() or self.db.is_connection_usable():
            return
        try:
            self.db.close()
        except DRIVER_ERRORS:
            self.db.dispose()

    def _q(self, query: Any) -> Any:
        return query.bind(self.db)

    # -- agents ----------------------------------------------------------------------------------------------

    @_guarded
    def ensure_agent(self, agent_id: str, agent_type: str = "llm") -> None:
        """Record an agent the first time it is seen, and its last_seen every time."""
        if agent_type not in AGENT_TYPES:
            raise OpcodeError(VALIDATION_ERROR, f"agent type must be one of {', '.join(AGENT_TYPES)}")
        now = utc_now()
        query = Agent.insert(id=agent_id, type=agent_type, created_at=now, last_seen=now).on_conflict(
            conflict_target=[Agent.id], update={Agent.last_seen: now}
        )
        query.execute(self.db)

    @_guarded
    def list_agents(self) -> list[dict[str, Any]]:
        """Every known agent, oldest first."""
        return list(self._q(Agent.select().order_by(Agent.created_at, Agent.id).dicts()))

    # -- templates -------------------------------------------------------------------------------------------

    @_guarded
    def create_template(
        self,
        name: str,
        definition: dict[str, Any],
        agent_id: str,
        description: str | None = None,
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        triggers: Any = None,
    ) -> str:
        """Store the next version of template `name`; returns it ("v1", "v2", ...)."""
        for _ in range(TEMPLATE_RETRIES):
            try:
                with self.db.atomic():
                    if self.is_postgres:
                        # Writers of one name queue here instead of racing to the unique index and retrying.
                        self.db.execute_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"opcode.template:{name}",))
                    latest = self._q(
                        WorkflowTemplate.select(pw.fn.MAX(WorkflowTemplate.version_num)).where(
                            WorkflowTemplate.name == name
                        )
                    ).scalar()
                    num = (latest or 0) + 1
                    WorkflowTemplate.insert(
                        name=name, version=f"v{num}", version_num=num, definition=definition,
                        description=description, input_schema=input_schema, output_schema=output_schema,
                        triggers=triggers, agent_id=agent_id, created_at=utc_now(),
                    ).execute(self.db)  # fmt: skip
                return f"v{num}"
            except pw.IntegrityError:
                continue  # another writer took this number between our read and our insert
        raise OpcodeError(CONFLICT, f"template {name!r}: could not allocate a version after {TEMPLATE_RETRIES} tries")

    @_guarded
    def get_template(self, name: str, version: str | int | None = None) -> dict[str, Any] | None:
        """One version of a template ("v2", "2" or 2), the latest when `version` is None or "latest"."""
        query = _template_select().where(WorkflowTemplate.name == name)
        if version is None or version == "latest":
            query = query.order_by(WorkflowTemplate.version_num.desc())
        else:
            num = parse_version(version)
            if num is None:
                return None
            query = query.where(WorkflowTemplate.version_num == num)
        return self._q(query.limit(1)).first()

    @_guarded
    def list_templates(
        self, name: str | None = None, agent_id: str | None = None, limit: int | None = 100
    ) -> list[dict[str, Any]]:
        """Template versions, newest first, optionally of one name or one agent."""
        query = _template_select().order_by(WorkflowTemplate.id.desc())
        if name is not None:
            query = query.where(WorkflowTemplate.name == name)
        if agent_id is not None:
            query = query.where(WorkflowTemplate.agent_id == agent_id)
        if limit is not None:
            query = query.limit(limit)
        return list(self._q(query))

    # -- workflows -------------------------------------------------------------------------------------------

    @_guarded
    def create_workflow(self, **fields: Any) -> dict[str, Any]:
        """Insert a workflow in status 'pending' (fields as `workflow_row` takes them) and return its row."""
        row = workflow_row(**fields)
        row["input_params"] = self.redact(row["input_params"])
        try:
            Workflow.insert(**row).execute(self.db)
        except pw.IntegrityError as exc:
            raise OpcodeError(CONFLICT, f"workflow {row['id']!r} or its idempotency key already exists") from exc
        return row

    @_guarded
    def get_workflow(self, id: str) -> dict[str, Any] | None:
        """The workflow's row, or None."""
        return self._q(Workflow.select().where(Workflow.id == id).dicts()).first()

    @_guarded
    def find_workflow_by_idempotency_key(self, agent_id: str, key: str) -> dict[str, Any] | None:
        """The workflow this agent already started with this idempotency key, or None."""
        query = Workflow.select().where((Workflow.agent_id == agent_id) & (Workflow.idempotency_key == key))
        return self._q(query.dicts()).first()

    @_guarded
    def list_workflows(
        self,
        status: str | None = None,
        agent_id: str | None = None,
        since: str | None = None,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Workflows, newest first; `since` keeps those created at or after that ISO-8601 time."""
        query = Workflow.select().order_by(Workflow.created_at.desc(), Workflow.id.desc())
        if status is not None:
            query = query.where(Workflow.status == status)
        if agent_id is not None:
            query = query.where(Workflow.agent_id == agent_id)
        if since is not None:
            query = query.where(Workflow.created_at >= _since(since))
        if limit is not None:
            query = query.limit(limit)
        return list(self._q(query.dicts()))

    def active_workflows(self) -> list[dict[str, Any]]:
        """Every workflow in status 'active' (what a crash leaves behind for recovery)."""
        return self.list_workflows(status="active", limit=None)

    @_guarded
    def bump_recovery_attempts(self, workflow_id: str) -> int:
        """Count one more crash recovery of a workflow and return the new count."""
        Workflow.update(recovery_attempts=Workflow.recovery_attempts + 1).where(Workflow.id == workflow_id).execute(
            self.db
        )
        return self._q(Workflow.select(Workflow.recovery_attempts).where(Workflow.id == workflow_id)).scalar()

    def acquire_recovery_lock(self) -> bool:
        """Hold the one lock that lets a server recover runs of this database; False when another holds it."""
        if self.is_postgres:
            # A session-level advisory lock lives as long as the calling thread's connection.
            self.holds_recovery_lock = bool(self.db.execute_sql("SELECT pg_try_advisory_lock(4100417)").fetchone()[0])
            return self.holds_recovery_lock
        import fcntl

        path = Path(self.db.database + ".recovery.lock")
        self._lock_file = path.open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            return False
        self.holds_recovery_lock = True
        return True

    # -- events ----------------------------------------------------------------------------------------------

    @_guarded
    def append_events(
        self,
        events: Sequence[Event],
        *,
        encoded_payloads: Sequence[str] | None = None,
        new_workflows: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Insert new workflow rows and events and apply the events to step_state and workflows, in one transaction."""
        # encoded_payloads (one JSON text per event) spares a caller that already serialized them a second pass.
        if new_workflows and self.redact is not _unchanged:
            # A child run's params may hold a secret its parent resolved; its row keeps them redacted.
            new_workflows = [{**row, "input_params": self.redact(row.get("input_params"))} for row in new_workflows]
        self._log.append(events, encoded_payloads, new_workflows)

    @_guarded
    def list_events(
        self,
        workflow_id: str | None = None,
        step_id: str | None = None,
        event_type: str | None = None,
        since: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Events in log order (or newest first), filtered; `since` keeps those at or after that ISO-8601 time."""
        order = EventRow.sequence if workflow_id is not None else EventRow.id
        query = EventRow.select().order_by(order.desc() if newest_first else order)
        if workflow_id is not None:
            query = query.where(EventRow.workflow_id == workflow_id)
        if step_id is not None:
            query = query.where(EventRow.step_id == step_id)
        if event_type is not None:
            query = query.where(EventRow.event_type == event_type)
        if since is not None:
            query = query.where(EventRow.timestamp >= _since(since))
        if limit is not None:
            query = query.limit(limit)
        return list(self._q(query.dicts()))

    @_guarded
    def count_events(self, workflow_id: str) -> int:
        """How many events the workflow has."""
        return self._q(EventRow.select().where(EventRow.workflow_id == workflow_id)).count()

    @_guarded
    def last_sequence(self, workflow_id: str) -> int:
        """The workflow's highest event sequence, 0 when it has none."""
        query = EventRow.select(pw.fn.MAX(EventRow.sequence)).where(EventRow.workflow_id == workflow_id)
        return self._q(query).scalar() or 0

    @_guarded
    def last_sequences(self, workflow_ids: Iterable[str]) -> dict[str, int]:
        """`last_sequence` of several workflows in one query; every id asked for is in the result."""
        wanted = set(workflow_ids)
        if not wanted:
            return {}
        query = (
            EventRow.select(EventRow.workflow_id, pw.fn.MAX(EventRow.sequence))
            .where(EventRow.workflow_id.in_(wanted))
            .group_by(EventRow.workflow_id)
            .tuples()
        )
        found = dict(self._q(query))
        return {wf: found.get(wf) or 0 for wf in wanted}

    # -- step state ------------------------------------------------------------------------------------------

    @_guarded
    def get_step_states(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """The materialized state of each step of the workflow, keyed by step_id."""
        query = StepState.select(*[getattr(StepState, c) for c in STEP_FIELDS]).where(
            StepState.workflow_id == workflow_id
        )
        return {row["step_id"]: row for row in self._q(query.dicts())}

    @_guarded
    def rebuild_step_states(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """Replay the workflow's events through the projection; equals `get_step_states` unless a row drifted."""
        states: dict[str, dict[str, Any]] = {}
        # Raw cursor and orjson: replay reads every event of a run, where model objects cost several times more.
        cursor = self.db.execute_sql(
            "SELECT workflow_id, sequence, event_type, step_id, payload, agent_id, timestamp FROM events "
            f"WHERE workflow_id = {self.db.param} AND step_id IS NOT NULL ORDER BY sequence",
            (workflow_id,),
        )
        for wid, seq, kind, step_id, payload, agent, ts in cursor.fetchall():
            event = Event(wid, seq, kind, step_id, orjson.loads(payload) if payload else {}, agent, ts)
            state = apply_step_event(states.get(step_id), event)
            if state is not None:
                states[step_id] = state
        return states

    # -- context ---------------------------------------------------------------------------------------------

    @_guarded
    def get_context(self, workflow_id: str) -> dict[str, Any]:
        """The workflow's context data, {} when none was set."""
        data = self._q(
            WorkflowContext.select(WorkflowContext.data).where(WorkflowContext.workflow_id == workflow_id)
        ).scalar()
        return data if data is not None else {}

    @_guarded
    def set_context(self, workflow_id: str, data: dict[str, Any]) -> None:
        """Replace the workflow's context data."""
        WorkflowContext.insert(workflow_id=workflow_id, data=self.redact(data), updated_at=utc_now()).on_conflict(
            conflict_target=[WorkflowContext.workflow_id],
            preserve=[WorkflowContext.data, WorkflowContext.updated_at],
        ).execute(self.db)

    @_guarded
    def create_decision(
        self,
        *,
        id: str,
        workflow_id: str,
        step_id: str,
        context: dict[str, Any],
        options: list[Any],
        timeout_at: str | None,
        fallback: str | None,
        target_agent: str | None,
    ) -> dict[str, Any]:
        """Record a pending decision of a reasoning step."""
        PendingDecision.insert(
            id=id, workflow_id=workflow_id, step_id=step_id, context=self.redact(context), options=self.redact(options),
            timeout_at=timeout_at, fallback=fallback, target_agent=target_agent or None, status="pending",
            created_at=utc_now(),
        ).execute(self.db)  # fmt: skip
        return self.get_decision(id)

    @_guarded
    def get_decision(self, id: str) -> dict[str, Any] | None:
        """One decision by id, or None."""
        return self._q(PendingDecision.select().where(PendingDecision.id == id).dicts()).first()

    @_guarded
    def list_decisions(
        self, workflow_id: str | None = None, *, step_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Decisions, oldest first, filtered by workflow, step and status."""
        query = PendingDecision.select()
        if workflow_id is not None:
            query = query.where(PendingDecision.workflow_id == workflow_id)
        if step_id is not None:
            query = query.where(PendingDecision.step_id == step_id)
        if status is not None:
            query = query.where(PendingDecision.status == status)
        return list(self._q(query.order_by(PendingDecision.created_at, PendingDecision.id).dicts()))

    @_guarded
    def resolve_decision(self, id: str, resolution: dict[str, Any], status: str = "resolved") -> bool:
        """Mark a pending decision resolved (or cancelled); False when it was no longer pending."""
        changed = (
            PendingDecision.update(status=status, resolution=resolution, resolved_at=utc_now())
            .where((PendingDecision.id == id) & (PendingDecision.status == "pending"))
            .execute(self.db)
        )
        return changed == 1

    # -- secrets: ciphertexts only (opcode_core.vault encrypts and decrypts) ---------------------------------

    @_guarded
    def put_secret(self, name: str, ciphertext: bytes, nonce: bytes) -> None:
        """Store a secret's ciphertext, replacing the one it had (created_at is kept)."""
        now = utc_now()
        Secret.insert(name=name, ciphertext=ciphertext, nonce=nonce, created_at=now, updated_at=now).on_conflict(
            conflict_target=[Secret.name], preserve=[Secret.ciphertext, Secret.nonce, Secret.updated_at]
        ).execute(self.db)

    @_guarded
    def create_secret(self, name: str, ciphertext: bytes, nonce: bytes) -> bool:
        """Store a secret only if none of that name exists; False when one did."""
        now = utc_now()
        try:
            with self.db.atomic():
                Secret.insert(name=name, ciphertext=ciphertext, nonce=nonce, created_at=now,
                              updated_at=now).execute(self.db)
        except pw.IntegrityError:
            return False
        return True

    @_guarded
    def get_secret(self, name: str) -> dict[str, Any] | None:
        """A secret's row (name, ciphertext, nonce, created_at, updated_at), or None."""
        return self._q(Secret.select().where(Secret.name == name).dicts()).first()

    @_guarded
    def list_secrets(self) -> list[dict[str, Any]]:
        """Every secret's name and timestamps, by name; never the ciphertexts."""
        query = Secret.select(Secret.name, Secret.created_at, Secret.updated_at).order_by(Secret.name)
        return list(self._q(query.dicts()))

    @_guarded
    def delete_secret(self, name: str) -> bool:
        """Remove a secret; False when there was none of that name."""
        return Secret.delete().where(Secret.name == name).execute(self.db) == 1

    # -- scheduled jobs --------------------------------------------------------------------------------------

    @_guarded
    def list_jobs(self) -> list[dict[str, Any]]:
        """Every scheduled job, oldest first."""
        return list(self._q(ScheduledJob.select().order_by(ScheduledJob.created_at, ScheduledJob.id).dicts()))

    @_guarded
    def get_job(self, id: str) -> dict[str, Any] | None:
        """One scheduled job, or None."""
        return self._q(ScheduledJob.select().where(ScheduledJob.id == id).dicts()).first()

    @_guarded
    def create_job(self, **fields: Any) -> dict[str, Any]:
        """Insert a scheduled job (`id`, `template_name`, `cron`, `agent_id`, ...) and return its row."""
        ScheduledJob.insert(created_at=utc_now(), **fields).execute(self.db)
        return self.get_job(fields["id"])

    @_guarded
    def update_job(self, id: str, **fields: Any) -> bool:
        """Change some fields of a scheduled job; False when there is no such job."""
        return ScheduledJob.update(**fields).where(ScheduledJob.id == id).execute(self.db) == 1

    @_guarded
    def update_job_run_status(self, id: str, workflow_id: str, status: str) -> bool:
        """Record the status of a job's run, unless the job has started a newer run since."""
        query = ScheduledJob.update(last_run_status=status).where(
            (ScheduledJob.id == id) & (ScheduledJob.last_workflow_id == workflow_id)
        )
        return query.execute(self.db) == 1

    @_guarded
    def delete_job(self, id: str) -> bool:
        """Delete a scheduled job; False when there was none."""
        return ScheduledJob.delete().where(ScheduledJob.id == id).execute(self.db) == 1

    # -- panel read side: counters and pages -----------------------------------------------------------------

    @_guarded
    def workflow_counts(self) -> dict[str, dict[str, int]]:
        """How many workflows each agent has in each status: {agent_id: {status: n}}."""
        query = Workflow.select(Workflow.agent_id, Workflow.status, pw.fn.COUNT(Workflow.id)).group_by(
            Workflow.agent_id, Workflow.status
        )
        counts: dict[str, dict[str, int]] = {}
        for agent_id, status, n in self._q(query.tuples()):
            counts.setdefault(agent_id, {})[status] = n
        return counts

    @_guarded
    def page_workflows(
        self, status: str | None = None, agent_id: str | None = None, *, limit: int = 25, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of workflows, newest first, without their definitions, and how many match in all."""
        where = []
        if status is not None:
            where.append(Workflow.status == status)
        if agent_id is not None:
            where.append(Workflow.agent_id == agent_id)
        fields = [f for f in Workflow._meta.sorted_fields if f.name != "definition"]
        query = Workflow.select(*fields)
        total = Workflow.select()
        for clause in where:
            query, total = query.where(clause), total.where(clause)
        query = query.order_by(Workflow.created_at.desc(), Workflow.id.desc()).limit(limit).offset(offset)
        return list(self._q(query.dicts())), self._q(total).count()

    @_guarded
    def workflow_labels(self, ids: Iterable[str]) -> dict[str, str]:
        """What to call each of these workflows on a page: its template's name, else its own name."""
        wanted = set(ids)
        if not wanted:
            return {}
        query = Workflow.select(Workflow.id, Workflow.template_name, Workflow.name).where(Workflow.id.in_(wanted))
        return {wid: template or name or "" for wid, template, name in self._q(query.tuples())}

    @_guarded
    def page_events(
        self, workflow_id: str | None = None, event_type: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """One page of events, newest first, filtered by workflow and type."""
        query = EventRow.select().order_by(EventRow.id.desc())
        if workflow_id is not None:
            query = query.where(EventRow.workflow_id == workflow_id)
        if event_type is not None:
            query = query.where(EventRow.event_type == event_type)
        return list(self._q(query.limit(limit).offset(offset).dicts()))

    @_guarded
    def event_types(self) -> list[str]:
        """Every event type the log holds, sorted."""
        query = EventRow.select(EventRow.event_type).distinct().order_by(EventRow.event_type)
        return [kind for (kind,) in self._q(query.tuples())]

    @_guarded
    def template_summaries(self) -> list[dict[str, Any]]:
        """One row per template name: latest version number, how many versions, when last defined."""
        t = WorkflowTemplate
        query = (
            t.select(t.name, pw.fn.MAX(t.version_num).alias("latest"), pw.fn.COUNT(t.id).alias("versions"),
                     pw.fn.MAX(t.created_at).alias("updated_at"))
            .group_by(t.name)
            .order_by(pw.fn.MAX(t.created_at).desc())
        )
        return [{**row, "latest": f"v{row['latest']}"} for row in self._q(query.dicts())]


def _unchanged(value: Any) -> Any:
    return value


def workflow_row(
    *,
    id: str,
    name: str | None,
    template_name: str | None,
    template_version: str | None,
    definition: dict[str, Any],
    agent_id: str,
    input_params: dict[str, Any] | None,
    parent_workflow_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A new workflow's row, in status 'pending'."""
    now = utc_now()
    return {
        "id": id, "name": name, "template_name": template_name, "template_version": template_version,
        "definition": definition, "status": "pending", "agent_id": agent_id,
        "parent_workflow_id": parent_workflow_id, "input_params": input_params, "output": None,
        "error": None, "idempotency_key": idempotency_key, "recovery_attempts": 0,
        "created_at": now, "started_at": None, "completed_at": None, "updated_at": now,
    }  # fmt: skip


def _template_select() -> pw.ModelSelect:
    t = WorkflowTemplate
    return t.select(
        t.name, t.version, t.definition, t.description, t.input_schema, t.output_schema, t.triggers,
        t.agent_id, t.created_at,
    ).dicts()  # fmt: skip


def parse_version(version: str | int) -> int | None:
    """The number of a template version given as "v3", "3" or 3; None when it is none of those."""
    if isinstance(version, int):
        return version if version > 0 else None
    match = re.fullmatch(r"[vV]?([1-9][0-9]*)", version.strip())
    return int(match.group(1)) if match else None


def _since(value: str) -> str:
    try:
        return to_iso(value)
    except ValueError as exc:
        raise OpcodeError(VALIDATION_ERROR, f"since must be an ISO-8601 time, got {value!r}") from exc

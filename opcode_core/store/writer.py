"""The event hot path: `DbRunner` places store calls, `EventWriter` group-commits appended events."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

import peewee as pw

from opcode_core.errors import STORE_ERROR, OpcodeError
from opcode_core.store.events import Event
from opcode_core.store.models import dumps
from opcode_core.store.store import Store
from opcode_core.store.times import utc_now

log = logging.getLogger(__name__)

R = TypeVar("R")
Observer = Callable[[dict[str, Any]], None]

# After these a workflow's counter is dropped, keeping memory flat; a later event simply re-reads the log.
_TERMINAL_EVENTS = frozenset({"workflow_completed", "workflow_failed", "workflow_cancelled"})


# Pages of WAL after which the loop's connection checkpoints by itself (SQLite's default: 1,000).
LOOP_AUTOCHECKPOINT_PAGES = 4000


class Checkpointer:
    """Copies a SQLite WAL back into the database file on a thread of its own, every `every` commits.

    SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages and, with
    synchronous=NORMAL, fsyncs the WAL and the database file there: 2-30 ms on about one commit in a hundred on
    this project's VM, most of what a commit costs on average. Done here, the commits on the event loop mostly
    no longer pay it (see LOOP_AUTOCHECKPOINT_PAGES for the rest). What a commit makes durable is unchanged: it
    is in the WAL before its future resolves, and a checkpoint only moves committed pages into the main file.
    """

    def __init__(self, path: str, every: int = 64) -> None:
        self.path = path
        self.every = every
        self.checkpoints = 0
        self._commits = 0
        self._signal = threading.Event()
        self._stopping = False
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="opcode-wal-checkpoint", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    def committed(self) -> None:
        """Count a commit; every `every` commits the thread checkpoints."""
        self._commits += 1
        if self._commits >= self.every:
            self._commits = 0
            self._signal.set()

    def close(self) -> None:
        """Stop the thread after a last checkpoint."""
        self._stopping = True
        self._signal.set()
        self._thread.join()

    def _loop(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as exc:
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                self._signal.wait()
                self._signal.clear()
                try:
                    # PASSIVE, as SQLite's own: it never waits for (nor blocks) the writer on the event loop.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed (retried after the next commits): %s", exc)
                if self._stopping:
                    return
        finally:
            conn.close()


class DbRunner:
    """Runs store calls inline on the event loop (SQLite) or on one dedicated thread (PostgreSQL)."""

    def __init__(self, store: Store, mode: Literal["inline", "thread"]) -> None:
        if mode not in ("inline", "thread"):
            raise ValueError(f"mode must be 'inline' or 'thread', not {mode!r}")
        self.store = store
        self.mode = mode
        self._closed = False
        # One worker: the store's connection is per thread, and one writer keeps commits in order.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="opcode-db") if mode == "thread" else None
        self.checkpointer = self._start_checkpointer() if mode == "inline" else None

    def _start_checkpointer(self) -> Checkpointer | None:
        """Take WAL checkpoints off the loop for a SQLite file in WAL mode; None for anything else."""
        db = self.store.db
        if self.store.is_postgres or not isinstance(db, pw.SqliteDatabase) or db.database in ("", ":memory:"):
            return None
        if str(db.execute_sql("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            return None
        try:
            checkpointer = Checkpointer(db.database)
        except sqlite3.Error as exc:
            log.warning("WAL checkpoints stay in the commits: %s", exc)
            return None
        # This connection's own checkpoint stays as a backstop, later: under steady load the thread never quite
        # catches up with the last commit, and only a checkpoint right after a commit lets the next one restart
        # the WAL from its start. By then the thread has copied (and synced) nearly everything.
        db.execute_sql(f"PRAGMA wal_autocheckpoint = {LOOP_AUTOCHECKPOINT_PAGES}")
        return checkpointer

    @classmethod
    def for_store(cls, store: Store) -> DbRunner:
        """Inline for SQLite, where a local WAL commit costs less than a thread hop; a thread for PostgreSQL."""
        return cls(store, "thread" if store.is_postgres else "inline")

    async def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run `fn(*args, **kwargs)` where this runner places database work, and return its result."""
        if self._executor is None:
            return self.call_inline(fn, *args, **kwargs)
        if self._closed:
            raise OpcodeError(STORE_ERROR, "database runner is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def call_inline(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run `fn` right here, on the event loop: only for inline mode, where no thread owns the connection."""
        if self._closed:
            raise OpcodeError(STORE_ERROR, "database runner is closed")
        return fn(*args, **kwargs)

    def close(self) -> None:
        """Close the worker thread's connection and stop the thread (inline: stop the checkpoint thread)."""
        if self._closed:
            return
        self._closed = True
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self._executor is not None:
            self._executor.submit(self.store.close).result()
            self._executor.shutdown(wait=True)


@dataclass
class WriterStats:
    """Counters that show group commit at work."""

    batches: int = 0
    events: int = 0
    failed_batches: int = 0
    largest_batch: int = 0


class _Pending(NamedTuple):
    workflow_id: str
    event_type: str
    step_id: str | None
    payload: dict[str, Any]
    encoded: str
    agent_id: str | None
    timestamp: str
    future: asyncio.Future[Event]


class EventWriter:
    """Buffers appended events and commits everything buffered in one transaction per batch."""

    def __init__(self, runner: DbRunner, observers: Iterable[Observer] = ()) -> None:
        self._runner = runner
        self._observers = list(observers)
        self._buffer: list[_Pending] = []
        # Rows of runs started since the last flush: inserted in the same transaction as their first events.
        self._new_workflows: list[dict[str, Any]] = []
        # The batch the flusher is writing (thread mode): its events' futures, and one that resolves when it is done.
        self._inflight: list[asyncio.Future[Any]] = []
        # Last durable sequence per workflow. Sequences are numbered at flush, not at append, so a failed batch
        # leaves no hole: its workflows are forgotten here and the next batch re-reads the log.
        self._last_seq: dict[str, int] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # Inline mode (SQLite) commits from a loop callback: no flusher task to wake, no extra turn of the loop.
        self._inline = runner.mode == "inline"
        self._flush_pending = False
        self._nudge_pending = False
        self._closed = False
        self.stats = WriterStats()

    def add_observer(self, observer: Observer) -> None:
        """Call `observer(event.to_dict())` for every event once it is committed."""
        self._observers.append(observer)

    async def start(self) -> None:
        """Start the flusher task in thread mode (append starts it too, if needed); inline mode needs none."""
        if not self._inline:
            self._ensure_started()

    def _ensure_started(self) -> asyncio.Event:
        if self._task is None or self._wake is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="opcode-event-writer")
        return self._wake

    def _schedule(self, urgent: bool = True) -> None:
        """Have what is buffered committed on the next turn of the loop (inline) or by the flusher (thread)."""
        if not self._inline:
            self._ensure_started().set()
        elif self._flush_pending:
            return
        elif urgent:
            self._flush_pending = True
            # Everything appended during this turn of the loop (a whole level of steps) joins the batch.
            asyncio.get_running_loop().call_soon(self._flush_inline)
        elif not self._nudge_pending:
            self._nudge_pending = True
            asyncio.get_running_loop().call_soon(self._nudge)

    def _nudge(self) -> None:
        # What nobody waits for is committed one turn later, unless an awaited event takes it along first.
        self._nudge_pending = False
        if self._buffer or self._new_workflows:
            self._schedule()

    def _flush_inline(self) -> None:
        self._flush_pending = False
        if not self._buffer and not self._new_workflows:
            return
        batch, self._buffer = self._buffer, []
        rows, self._new_workflows = self._new_workflows, []
        try:
            try:
                runner = self._runner
                events, last = runner.call_inline(_write_batch, runner.store, batch, self._known(batch), rows)
            except Exception as exc:
                self._failed(batch, exc)
                return
            self._committed(batch, events, last)
        except Exception as exc:  # a bug here must not strand every later append
            log.exception("event writer failed on a batch of %d", len(batch))
            _fail(batch, OpcodeError(STORE_ERROR, f"event writer failed: {exc}"))

    def append(
        self,
        workflow_id: str,
        event_type: str,
        *,
        step_id: str | None = None,
        payload: dict[str, Any] | None = None,
        agent_id: str | None = None,
        awaited: bool = True,
    ) -> asyncio.Future[Event]:
        """Buffer an event; the future resolves to it, with its sequence, once it is committed.

        `awaited=False` says nobody waits for this event to be durable: it then rides with the next batch
        (at most one more turn of the loop), so that a run's first events and its first steps share a commit.
        """
        if self._closed:
            raise OpcodeError(STORE_ERROR, "event writer is closed")
        payload = payload if payload is not None else {}
        try:
            # Encode now: a payload that cannot be stored fails its own caller, never the whole batch, and later
            # changes to the dict cannot alter what gets written.
            encoded = dumps(payload)
        except (TypeError, ValueError) as exc:
            raise OpcodeError(STORE_ERROR, f"{event_type} payload is not JSON: {exc}") from exc
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._buffer.append(_Pending(workflow_id, event_type, step_id, payload, encoded, agent_id, utc_now(), future))
        self._schedule(awaited)
        return future

    def add_workflow(self, row: dict[str, Any]) -> None:
        """Queue a new run's row for the next batch; its events then start at sequence 1 without a lookup."""
        if self._closed:
            raise OpcodeError(STORE_ERROR, "event writer is closed")
        self._new_workflows.append(row)
        self._last_seq[row["id"]] = 0
        if not self._inline:
            self._schedule()
        # Inline, the row waits for the run's first events (its task has not started yet), and drain() takes it
        # should none come.

    async def drain(self) -> None:
        """Wait until every event and row appended so far is committed (or its batch has failed)."""
        while self._buffer or self._new_workflows or self._inflight:
            waiting = [p.future for p in self._buffer] + self._inflight
            if waiting:
                await asyncio.wait(waiting)
            else:
                self._schedule()  # only rows are queued: commit them on the next turn
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Drain, then stop the flusher; later appends raise STORE_ERROR."""
        await self.drain()
        self._closed = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._buffer and not self._new_workflows:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                # One more turn of the loop lets everything that became ready together join this batch.
                await asyncio.sleep(0)
                continue
            # Take everything: events that arrived together share one transaction and one thread hop.
            batch, self._buffer = self._buffer, []
            rows, self._new_workflows = self._new_workflows, []
            # A batch of rows alone has no event future: drain() must still wait for it.
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._inflight = [p.future for p in batch] + [written]
            try:
                await self._flush(batch, rows)
            except Exception as exc:  # a bug here must not strand every later append
                log.exception("event writer failed on a batch of %d", len(batch))
                _fail(batch, OpcodeError(STORE_ERROR, f"event writer failed: {exc}"))
            finally:
                written.set_result(None)
                self._inflight = []

    async def _flush(self, batch: list[_Pending], rows: list[dict[str, Any]]) -> None:
        known = self._known(batch)
        try:
            events, last = await self._runner.call(_write_batch, self._runner.store, batch, known, rows)
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._committed(batch, events, last)

    def _known(self, batch: list[_Pending]) -> dict[str, int]:
        last_seq = self._last_seq
        return {p.workflow_id: last_seq[p.workflow_id] for p in batch if p.workflow_id in last_seq}

    def _failed(self, batch: list[_Pending], exc: Exception) -> None:
        error = exc if isinstance(exc, OpcodeError) else OpcodeError(STORE_ERROR, f"event batch failed: {exc}")
        log.error("event batch of %d failed: %s", len(batch), error)
        self.stats.failed_batches += 1
        for p in batch:
            self._last_seq.pop(p.workflow_id, None)
        _fail(batch, error)

    def _committed(self, batch: list[_Pending], events: list[Event], last: dict[str, int]) -> None:
        if self._runner.checkpointer is not None:
            self._runner.checkpointer.committed()
        self._last_seq.update(last)
        self.stats.batches += 1
        self.stats.events += len(events)
        self.stats.largest_batch = max(self.stats.largest_batch, len(events))
        for p, event in zip(batch, events, strict=True):
            if event.event_type in _TERMINAL_EVENTS:
                self._last_seq.pop(event.workflow_id, None)
            if not p.future.done():
                p.future.set_result(event)
        for event in events:
            self._notify(event)

    def _notify(self, event: Event) -> None:
        data = event.to_dict()
        for observer in self._observers:
            try:
                observer(data)
            except Exception:
                log.exception("event observer %r failed on %s", observer, event.event_type)


def _fail(batch: list[_Pending], error: OpcodeError) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)
            # Mark it retrieved: the batch failure is logged once above, and awaiting the future still raises.
            p.future.exception()


def _write_batch(
    store: Store, batch: list[_Pending], known: dict[str, int], rows: list[dict[str, Any]]
) -> tuple[list[Event], dict[str, int]]:
    """Number the batch's events per workflow (seeding unknown workflows from the log) and commit them."""
    last = dict(known)
    unknown = {p.workflow_id for p in batch} - known.keys()
    if unknown:
        last.update(store.last_sequences(unknown))
    events = []
    for p in batch:
        last[p.workflow_id] += 1
        events.append(
            Event(p.workflow_id, last[p.workflow_id], p.event_type, p.step_id, p.payload, p.agent_id, p.timestamp)
        )
    store.append_events(events, encoded_payloads=[p.encoded for p in batch], new_workflows=rows)
    return events, last

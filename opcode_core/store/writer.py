"""The event hot path: `DbRunner` places store calls, `EventWriter` group-commits appended events."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

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

    @classmethod
    def for_store(cls, store: Store) -> DbRunner:
        """Inline for SQLite, where a local WAL commit costs less than a thread hop; a thread for PostgreSQL."""
        return cls(store, "thread" if store.is_postgres else "inline")

    async def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run `fn(*args, **kwargs)` where this runner places database work, and return its result."""
        if self._closed:
            raise OpcodeError(STORE_ERROR, "database runner is closed")
        if self._executor is None:
            return fn(*args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Close the worker thread's connection and stop the thread; inline mode has nothing to stop."""
        if self._closed:
            return
        self._closed = True
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
        self._inflight: list[asyncio.Future[Event]] = []
        # Last durable sequence per workflow. Sequences are numbered at flush, not at append, so a failed batch
        # leaves no hole: its workflows are forgotten here and the next batch re-reads the log.
        self._last_seq: dict[str, int] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = WriterStats()

    def add_observer(self, observer: Observer) -> None:
        """Call `observer(event.to_dict())` for every event once it is committed."""
        self._observers.append(observer)

    async def start(self) -> None:
        """Start the flusher task (append starts it too, if needed)."""
        self._ensure_started()

    def _ensure_started(self) -> asyncio.Event:
        if self._task is None or self._wake is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="opcode-event-writer")
        return self._wake

    def append(
        self,
        workflow_id: str,
        event_type: str,
        *,
        step_id: str | None = None,
        payload: dict[str, Any] | None = None,
        agent_id: str | None = None,
    ) -> asyncio.Future[Event]:
        """Buffer an event; the future resolves to it, with its sequence, once it is committed."""
        if self._closed:
            raise OpcodeError(STORE_ERROR, "event writer is closed")
        payload = payload if payload is not None else {}
        try:
            # Encode now: a payload that cannot be stored fails its own caller, never the whole batch, and later
            # changes to the dict cannot alter what gets written.
            encoded = dumps(payload)
        except (TypeError, ValueError) as exc:
            raise OpcodeError(STORE_ERROR, f"{event_type} payload is not JSON: {exc}") from exc
        wake = self._ensure_started()
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._buffer.append(_Pending(workflow_id, event_type, step_id, payload, encoded, agent_id, utc_now(), future))
        wake.set()
        return future

    def add_workflow(self, row: dict[str, Any]) -> None:
        """Queue a new run's row for the next batch; its events then start at sequence 1 without a lookup."""
        if self._closed:
            raise OpcodeError(STORE_ERROR, "event writer is closed")
        self._new_workflows.append(row)
        self._last_seq[row["id"]] = 0
        self._ensure_started().set()

    async def drain(self) -> None:
        """Wait until every event and row appended so far is committed (or its batch has failed)."""
        while self._buffer or self._new_workflows or self._inflight:
            waiting = [p.future for p in self._buffer] + self._inflight
            if waiting:
                await asyncio.wait(waiting)
            else:
                await asyncio.sleep(0)  # only rows are queued: the flusher takes them on its next turn

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
            self._inflight = [p.future for p in batch]
            try:
                await self._flush(batch, rows)
            except Exception as exc:  # a bug here must not strand every later append
                log.exception("event writer failed on a batch of %d", len(batch))
                _fail(batch, OpcodeError(STORE_ERROR, f"event writer failed: {exc}"))
            finally:
                self._inflight = []

    async def _flush(self, batch: list[_Pending], rows: list[dict[str, Any]]) -> None:
        known = {p.workflow_id: self._last_seq[p.workflow_id] for p in batch if p.workflow_id in self._last_seq}
        try:
            events, last = await self._runner.call(_write_batch, self._runner.store, batch, known, rows)
        except Exception as exc:
            error = exc if isinstance(exc, OpcodeError) else OpcodeError(STORE_ERROR, f"event batch failed: {exc}")
            log.error("event batch of %d failed: %s", len(batch), error)
            self.stats.failed_batches += 1
            for p in batch:
                self._last_seq.pop(p.workflow_id, None)
            _fail(batch, error)
            return
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

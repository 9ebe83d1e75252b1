"""The group-commit event writer on real databases (fixtures from test_store: a SQLite file, PostgreSQL if set)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opcode_core.errors import STORE_ERROR, OpcodeError
from opcode_core.store import DbRunner, Event, EventWriter, Store
from opcode_core.store.writer import LOOP_AUTOCHECKPOINT_PAGES

try:  # pytest puts tests/ itself on sys.path while it is not a package, the repository root once it is
    import test_store
except ModuleNotFoundError:
    from tests import test_store

Backend, Stream, new_workflow = test_store.Backend, test_store.Stream, test_store.new_workflow
backend = test_store.backend  # the database fixture (SQLite file, or a PostgreSQL schema), shared with test_store


@dataclass
class Rig:
    """A store, its runner and a started writer, with what the observer saw."""

    store: Store
    runner: DbRunner
    writer: EventWriter
    seen: list[dict[str, Any]]


async def open_rig(backend: Backend, mode: str, observers: list[Callable[[dict[str, Any]], None]] | None = None) -> Rig:
    """Open the store and start a writer; mode 'auto' lets the runner choose by database."""
    store = Store.open(backend.url)
    runner = DbRunner.for_store(store) if mode == "auto" else DbRunner(store, mode)  # type: ignore[arg-type]
    seen: list[dict[str, Any]] = []
    writer = EventWriter(runner, [seen.append, *(observers or [])])
    await writer.start()
    return Rig(store, runner, writer, seen)


async def close_rig(rig: Rig) -> None:
    """Drain and stop everything the rig started."""
    await rig.writer.close()
    rig.runner.close()
    rig.store.close()


# 'auto' is what the runtime does (inline on SQLite, a thread on PostgreSQL); 'thread' also puts SQLite off-loop.
@pytest.fixture(params=["auto", "thread"])
async def rig(request: pytest.FixtureRequest, backend: Backend) -> AsyncIterator[Rig]:
    """A writer on a fresh database."""
    opened = await open_rig(backend, request.param)
    try:
        yield opened
    finally:
        await close_rig(opened)


def readable_elsewhere(backend: Backend, conn: Any, event: Event) -> bool:
    """Whether `conn`, a connection of the test's own (not the store's), sees the event's row."""
    sql = "SELECT event_type FROM events WHERE workflow_id = ? AND sequence = ?"
    rows = conn.execute(
        sql.replace("?", "%s") if backend.kind == "postgres" else sql, (event.workflow_id, event.sequence)
    )
    return rows.fetchall() == [(event.event_type,)]


async def test_runner_for_store_picks_inline_for_sqlite_and_a_thread_for_postgres(backend: Backend) -> None:
    store = Store.open(backend.url)
    runner = DbRunner.for_store(store)
    try:
        assert runner.mode == ("thread" if backend.kind == "postgres" else "inline")
        where = await runner.call(lambda: threading.current_thread().name)
        assert (where == threading.current_thread().name) == (runner.mode == "inline")
        assert await runner.call(store.last_sequence, "nothing") == 0
    finally:
        runner.close()
        store.close()
    with pytest.raises(OpcodeError):
        await runner.call(store.ping)


async def test_concurrent_appends_get_gapless_sequences_in_few_durable_batches(backend: Backend, rig: Rig) -> None:
    workflows = [new_workflow(rig.store) for _ in range(4)]
    early: list[tuple[Event, bool]] = []
    watcher = backend.connect_raw()

    def check_at_resolution(future: asyncio.Future[Event]) -> None:
        # Runs as soon as the future resolves: the row must already be visible to a second connection.
        event = future.result()
        early.append((event, readable_elsewhere(backend, watcher, event)))

    async def task(n: int) -> list[Event]:
        got = []
        for k in range(10):
            future = rig.writer.append(workflows[n % 4], "step_started", step_id=f"s{n}", payload={"task": n, "k": k})
            future.add_done_callback(check_at_resolution)
            got.append(await future)
        return got

    try:
        results = await asyncio.gather(*(task(n) for n in range(20)))
    finally:
        watcher.close()

    assert rig.writer.stats.events == 200
    assert rig.writer.stats.batches <= 40, rig.writer.stats  # group commit: many events per transaction
    assert rig.writer.stats.largest_batch >= 5
    for n, events in enumerate(results):
        assert [e.payload["k"] for e in events] == list(range(10))
        assert [e.sequence for e in events] == sorted({e.sequence for e in events})  # strictly increasing per task
        assert all(e.workflow_id == workflows[n % 4] for e in events)
    for wf in workflows:
        mine = sorted(e.sequence for events in results for e in events if e.workflow_id == wf)
        assert mine == list(range(1, 51))  # distinct, no gaps
        stored = rig.store.list_events(workflow_id=wf)
        assert [r["sequence"] for r in stored] == list(range(1, 51))
        assert [r["timestamp"] for r in stored] == sorted(r["timestamp"] for r in stored)
    assert len(early) == 200
    assert all(visible for _, visible in early), [e for e, visible in early if not visible][:3]
    # The projection ran in the same transactions.
    assert rig.store.get_step_states(workflows[0]) == rig.store.rebuild_step_states(workflows[0])


async def test_observers_see_each_committed_event_once_in_order(rig: Rig) -> None:
    wf = new_workflow(rig.store)
    boom_calls = []

    def boom(event: dict[str, Any]) -> None:
        boom_calls.append(event["sequence"])
        raise RuntimeError("observer bug")

    rig.writer.add_observer(boom)  # a failing observer must not disturb the writer or the others
    futures = [rig.writer.append(wf, "step_started", step_id=str(i), payload={"i": i}) for i in range(30)]
    events = await asyncio.gather(*futures)
    await rig.writer.drain()
    assert rig.seen == [e.to_dict() for e in events]
    assert [d["sequence"] for d in rig.seen] == list(range(1, 31))
    assert boom_calls == list(range(1, 31))
    assert rig.writer.stats.batches == 1  # appended in one go: one transaction


async def test_sequences_continue_from_the_log_after_reopening(backend: Backend) -> None:
    rig = await open_rig(backend, "auto")
    wf = new_workflow(rig.store)
    for i in range(5):
        rig.writer.append(wf, "variable_set", payload={"i": i})
    await close_rig(rig)

    rig = await open_rig(backend, "auto")
    try:
        # Another process writing the same log is out of scope; what a restart left there is not.
        ev = Stream(wf)
        ev.sequence = 5
        rig.store.append_events([ev("variable_set"), ev("variable_set")])
        first = await rig.writer.append(wf, "workflow_started")
        second = await rig.writer.append(wf, "workflow_completed", payload={"output": 1})
        assert (first.sequence, second.sequence) == (8, 9)
        after_terminal = await rig.writer.append(wf, "custom_event")  # counter was dropped; re-read from the log
        assert after_terminal.sequence == 10
        assert [r["sequence"] for r in rig.store.list_events(workflow_id=wf)] == list(range(1, 11))
    finally:
        await close_rig(rig)


async def test_a_failed_batch_reports_store_error_and_the_next_one_succeeds(backend: Backend, rig: Rig) -> None:
    wf, bystander = new_workflow(rig.store), new_workflow(rig.store)
    for _ in range(3):
        await rig.writer.append(wf, "variable_set")
    # Someone else takes sequence 4 behind the writer's back: its next insert breaks UNIQUE(workflow_id, sequence).
    backend.execute(
        "INSERT INTO events (workflow_id, sequence, event_type, payload, timestamp) VALUES (?, 4, 'intruder', '{}', ?)",
        wf,
        "2000-01-01T00:00:00.000000Z",
    )
    doomed = [rig.writer.append(wf, "variable_set", payload={"n": 4}), rig.writer.append(bystander, "workflow_started")]
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(o, OpcodeError) and o.code == STORE_ERROR for o in outcomes), outcomes
    assert rig.writer.stats.failed_batches == 1
    assert rig.store.count_events(bystander) == 0  # the whole batch rolled back
    assert rig.store.get_workflow(bystander)["status"] == "pending"
    assert [d["event_type"] for d in rig.seen].count("workflow_started") == 0  # failures are not observed

    retried = await rig.writer.append(wf, "variable_set", payload={"n": 5})
    assert retried.sequence == 5  # re-read from the log: no gap, no reuse
    started = await rig.writer.append(bystander, "workflow_started")
    assert started.sequence == 1
    assert rig.store.get_workflow(bystander)["status"] == "active"
    assert [r["sequence"] for r in rig.store.list_events(workflow_id=wf)] == [1, 2, 3, 4, 5]


async def test_a_payload_that_is_not_json_fails_only_its_caller(rig: Rig) -> None:
    wf = new_workflow(rig.store)
    good = rig.writer.append(wf, "variable_set", payload={"ok": True})
    with pytest.raises(OpcodeError) as info:
        rig.writer.append(wf, "variable_set", payload={"bad": object()})
    assert info.value.code == STORE_ERROR
    assert (await good).sequence == 1
    assert (await rig.writer.append(wf, "variable_set")).sequence == 2


async def test_drain_waits_for_everything_and_close_refuses_more(backend: Backend) -> None:
    rig = await open_rig(backend, "auto")
    wf = new_workflow(rig.store)
    futures = [rig.writer.append(wf, "variable_set", payload={"i": i}) for i in range(50)]
    await rig.writer.drain()
    assert all(f.done() for f in futures)
    assert backend.fetch("SELECT COUNT(*) FROM events WHERE workflow_id = ?", wf) == [(50,)]
    later = rig.writer.append(wf, "variable_set")
    await close_rig(rig)  # close drains too
    assert later.done() and later.result().sequence == 51
    with pytest.raises(OpcodeError) as info:
        rig.writer.append(wf, "variable_set")
    assert info.value.code == STORE_ERROR


async def test_thread_mode_collects_new_events_while_a_batch_is_written(backend: Backend) -> None:
    rig = await open_rig(backend, "thread")
    gate = threading.Event()
    try:
        wf = new_workflow(rig.store)
        # Hold the DB thread so that the first batch is "being written" while more events arrive.
        blocker = asyncio.ensure_future(rig.runner.call(gate.wait, 5))
        first = rig.writer.append(wf, "variable_set")
        await asyncio.sleep(0.01)  # the flusher has taken the first event and waits for the thread
        rest = [rig.writer.append(wf, "variable_set") for _ in range(9)]
        gate.set()
        await blocker
        events = await asyncio.gather(first, *rest)
        assert [e.sequence for e in events] == list(range(1, 11))
        assert rig.writer.stats.batches == 2  # the nine latecomers shared the second transaction
        assert rig.writer.stats.largest_batch == 9
    finally:
        gate.set()
        await close_rig(rig)


async def test_events_nobody_awaits_ride_with_the_next_commit(backend: Backend) -> None:
    rig = await open_rig(backend, "auto")
    try:
        wf = new_workflow(rig.store)
        started = rig.writer.append(wf, "step_started", step_id="a", payload={"attempt": 1}, awaited=False)
        done = await rig.writer.append(wf, "step_completed", step_id="a", payload={"output": 1})
        assert started.done() and (started.result().sequence, done.sequence) == (1, 2)
        assert rig.writer.stats.batches == 1
        alone = rig.writer.append(wf, "custom_event", awaited=False)
        if rig.runner.mode == "inline":  # committed within two turns of the loop, though nobody waits for it
            for _ in range(2):
                await asyncio.sleep(0)
            assert alone.done()
        assert (await alone).sequence == 3
        assert rig.store.get_step_states(wf) == rig.store.rebuild_step_states(wf)
    finally:
        await close_rig(rig)


async def test_a_new_runs_row_is_committed_with_its_first_events(backend: Backend) -> None:
    from opcode_core.store.store import workflow_row

    rig = await open_rig(backend, "auto")
    try:
        rows = [workflow_row(id=f"wf-{i}", name="n", template_name=None, template_version=None,
                             definition={"steps": []}, agent_id="a", input_params={}) for i in range(2)]
        rig.writer.add_workflow(rows[0])
        first = await rig.writer.append("wf-0", "workflow_started", awaited=True)
        assert first.sequence == 1 and rig.store.get_workflow("wf-0")["status"] == "active"
        if rig.runner.mode == "inline":
            assert rig.writer.stats.batches == 1  # the row waited for the run's first event
        rig.writer.add_workflow(rows[1])
        await rig.writer.drain()  # a row with no event yet is committed by a drain
        assert rig.store.get_workflow("wf-1")["status"] == "pending"
    finally:
        await close_rig(rig)


async def test_sqlite_checkpoints_run_on_their_own_thread(backend: Backend) -> None:
    if backend.kind != "sqlite":
        pytest.skip("WAL checkpoints are SQLite's")
    rig = await open_rig(backend, "auto")
    checkpointer = rig.runner.checkpointer
    try:
        assert checkpointer is not None
        assert rig.store.db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == LOOP_AUTOCHECKPOINT_PAGES
        wf = new_workflow(rig.store)
        for i in range(checkpointer.every):
            await rig.writer.append(wf, "custom_event", payload={"i": i})
        for _ in range(200):
            if checkpointer.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert checkpointer.checkpoints >= 1
        assert rig.store.count_events(wf) == checkpointer.every
    finally:
        await close_rig(rig)
    assert not [t for t in threading.enumerate() if t.name == "opcode-wal-checkpoint"]
    assert backend.fetch("SELECT COUNT(*) FROM events WHERE workflow_id = ?", wf) == [(checkpointer.every,)]


async def test_the_wal_stays_bounded_under_steady_writes(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend.kind != "sqlite":
        pytest.skip("WAL checkpoints are SQLite's")
    from opcode_core.store import writer as writer_module

    monkeypatch.setattr(writer_module, "LOOP_AUTOCHECKPOINT_PAGES", 50)
    rig = await open_rig(backend, "auto")
    try:
        wf = new_workflow(rig.store)
        wal = Path(f"{backend.sqlite_path}-wal")
        largest = 0
        for i in range(600):  # ~2,000 pages of WAL, were it never restarted
            await rig.writer.append(wf, "custom_event", payload={"i": i, "pad": "x" * 2000})
            largest = max(largest, wal.stat().st_size)
        assert largest < 300 * 4096, largest
        assert rig.store.count_events(wf) == 600
    finally:
        await close_rig(rig)


def test_no_checkpoint_thread_without_a_wal_file() -> None:
    store = Store.open("sqlite:///:memory:")
    runner = DbRunner.for_store(store)
    try:
        assert runner.checkpointer is None
    finally:
        runner.close()
        store.close()

"""The cron scheduler: fires each due job once as a run of its template, never overlapping the job's own last run.

Only the serving process that holds the database's recovery lock runs it. Every firing is an idempotent start
keyed by the job and the time it was due, so a crash between starting a run and recording it never starts a
second run for the same slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opcode_core.errors import OpcodeError
from opcode_core.jobs import next_run
from opcode_core.store.times import to_iso

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime

log = logging.getLogger("opcode.scheduler")

Clock = Callable[[], datetime]
# A job's run counts as still going in these states; a suspended run may wait for a human for days.
IN_FLIGHT = ("pending", "active", "suspended")
RUN_STATUS = {
    "workflow_started": "active",
    "workflow_resumed": "active",
    "workflow_suspended": "suspended",
    "workflow_completed": "completed",
    "workflow_failed": "failed",
    "workflow_cancelled": "cancelled",
}
TERMINAL = ("completed", "failed", "cancelled")
TIMER = "scheduler"


def jobs_changed(rt: Runtime) -> None:
    """Tell the runtime's scheduler, if it runs one, to look at the jobs again now."""
    if rt.scheduler is not None:
        rt.scheduler.wake()


def system_clock() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class Scheduler:
    """Fires due cron jobs of one runtime and keeps each job's next run, last run and last run status."""

    def __init__(self, rt: Runtime, *, clock: Clock = system_clock, max_sleep_s: float = 30.0) -> None:
        self.rt = rt
        self.clock = clock
        self.max_sleep_s = max_sleep_s
        self._watched: dict[str, str] = {}  # workflow id -> id of the job that started it
        self._statuses: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    def now(self) -> datetime:
        """The clock's time, as an aware UTC datetime."""
        moment = self.clock()
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    async def start(self) -> list[dict[str, Any]]:
        """Bring last-run statuses up to date, fire the jobs missed while no server ran (once each), then poll."""
        await self.reconcile()
        self._unsubscribe = self.rt.subscribe(self._on_event)
        self._tasks.append(asyncio.create_task(self._record_statuses(), name="opcode-scheduler-statuses"))
        fired = await self.tick()
        if fired:
            log.info("scheduler: %d job(s) due while no server ran, each fired once", len(fired))
        self._tasks.append(asyncio.create_task(self._loop(), name="opcode-scheduler"))
        return fired

    async def stop(self) -> None:
        """Stop firing jobs (runs already started go on); safe to call twice."""
        self.rt.timers.cancel(TIMER)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Look at the jobs again now (they changed)."""
        self._wake.set()

    async def reconcile(self) -> None:
        """Read each job's last run from the store: its status may have changed while no scheduler watched it."""
        for job in await self.rt.db(self.rt.store.list_jobs):
            wid = job.get("last_workflow_id")
            if not wid:
                continue
            wf = await self.rt.db(self.rt.store.get_workflow, wid)
            if wf is None:
                continue
            if wf["status"] in IN_FLIGHT:
                self._watched[wid] = job["id"]
            if wf["status"] != job["last_run_status"]:
                await self.rt.db(self.rt.store.update_job, job["id"], last_run_status=wf["status"])

    async def tick(self) -> list[dict[str, Any]]:
        """Fire every enabled job whose next run is due, once, however many of its times were missed."""
        now = self.now()
        due_by = to_iso(now)
        fired = []
        for job in await self.rt.db(self.rt.store.list_jobs):
            if not job["enabled"]:
                continue
            if job["next_run_at"] is None:
                # A job written without a next run (e.g. straight into the table) starts counting now.
                await self.rt.db(self.rt.store.update_job, job["id"],
                                 next_run_at=next_run(job["cron"], job["timezone"] or "UTC", now))
            elif job["next_run_at"] <= due_by:
                fired.append(await self.fire(job, now))
        return fired

    async def fire(self, job: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Start one run of a due job (unless its last run still goes on) and move its next run past `now`."""
        rt, job_id = self.rt, job["id"]
        following = next_run(job["cron"], job["timezone"] or "UTC", now)
        previous = job.get("last_workflow_id")
        if previous and await self._in_flight(previous):
            log.warning("job %s: its last run %s has not finished; this firing is skipped", job_id, previous,
                        extra={"workflow_id": previous})
            await rt.db(rt.store.update_job, job_id, next_run_at=following)
            return {"job_id": job_id, "skipped": True, "running": previous, "next_run_at": following}
        from opcode_core.service import run_workflow

        try:
            answer = await run_workflow(rt, template_name=job["template_name"], agent_id=job["agent_id"],
                                        params=job["params"] or {}, wait=False,
                                        idempotency_key=f"cron:{job_id}@{job['next_run_at']}")
        except OpcodeError as exc:
            log.error("job %s could not start %r: [%s] %s", job_id, job["template_name"], exc.code, exc.message,
                      extra={"agent_id": job["agent_id"]})
            status = f"error: [{exc.code}] {exc.message}"[:500]
            await rt.db(rt.store.update_job, job_id, next_run_at=following, last_run_at=to_iso(now),
                        last_run_status=status)
            return {"job_id": job_id, "error": exc.code, "next_run_at": following}
        wid = answer["workflow_id"]
        self._watched[wid] = job_id
        await rt.db(rt.store.update_job, job_id, next_run_at=following, last_run_at=to_iso(now),
                    last_run_status=answer["status"], last_workflow_id=wid)
        log.info("job %s started run %s of %r", job_id, wid, job["template_name"],
                 extra={"workflow_id": wid, "agent_id": job["agent_id"]})
        return {"job_id": job_id, "workflow_id": wid, "next_run_at": following}

    async def _in_flight(self, workflow_id: str) -> bool:
        if workflow_id in self.rt.runs:
            return True
        wf = await self.rt.db(self.rt.store.get_workflow, workflow_id)
        return wf is not None and wf["status"] in IN_FLIGHT

    def _on_event(self, event: dict[str, Any]) -> None:
        status = RUN_STATUS.get(event["event_type"])
        if status is None or event["workflow_id"] not in self._watched:
            return
        job_id = self._watched[event["workflow_id"]]
        if status in TERMINAL:
            del self._watched[event["workflow_id"]]
        self._statuses.put_nowait((job_id, event["workflow_id"], status))

    async def _record_statuses(self) -> None:
        # One consumer keeps the updates in event order.
        while True:
            job_id, wid, status = await self._statuses.get()
            try:
                await self.rt.db(self.rt.store.update_job_run_status, job_id, wid, status)
            except OpcodeError as exc:
                log.error("job %s: could not record its run's status: [%s] %s", job_id, exc.code, exc.message)
            finally:
                self._statuses.task_done()

    async def _loop(self) -> None:
        while True:
            # The runtime's timer service wakes the scheduler at the next due time, or to look for new jobs.
            self.rt.timers.at(TIMER, time.time() + await self._seconds_to_next(), self.wake)
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.tick()
            except Exception:
                # A database hiccup must not end scheduling: the next tick tries again.
                log.exception("scheduler tick failed")

    async def _seconds_to_next(self) -> float:
        try:
            jobs = await self.rt.db(self.rt.store.list_jobs)
        except OpcodeError:
            return self.max_sleep_s
        upcoming = [job["next_run_at"] for job in jobs if job["enabled"] and job["next_run_at"]]
        if not upcoming:
            return self.max_sleep_s
        wait = (datetime.fromisoformat(min(upcoming)) - self.now()).total_seconds()
        return min(max(wait, 0.0), self.max_sleep_s)

    async def drain(self) -> None:
        """Wait until every run status seen so far is recorded."""
        await self._statuses.join()

"""The cron scheduler with an injectable clock: due jobs fire once, missed runs once, never overlapping."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from opcode_core import jobs, service
from opcode_core.errors import ValidationError
from opcode_core.scheduler import Scheduler
from tests.conftest import OPCODE, log, opcode_env, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent

T0 = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
INPUTS = {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}
QUICK = {"steps": [log("hello", "hi ${{inputs.who}}")]}
HOLD = {"steps": [{"id": "hold", "type": "wait", "config": {"signal": "go"}}]}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, text: str) -> None:
        self.now = datetime.fromisoformat(text)


def at(text: str) -> str:
    """A store timestamp of an ISO time."""
    return datetime.fromisoformat(text).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def define(rt, name: str = "nightly", definition: dict = QUICK, **extra) -> dict:
    return await service.define_template(rt, name=name, definition=definition, agent_id="author",
                                         input_schema=INPUTS, **extra)


async def add_job(rt, template: str = "nightly", cron: str = "* * * * *", **extra) -> dict:
    fields = {"agent_id": "cron-agent", "params": {"who": "cron"}, **extra}
    return await rt.db(jobs.save_job, rt.store, job_id=None, template_name=template, cron=cron, now=T0, **fields)


async def runs_of(rt, template: str) -> list[dict]:
    await rt.writer.drain()
    return [wf for wf in await rt.db(rt.store.list_workflows, limit=None) if wf["template_name"] == template]


async def settle(rt, scheduler: Scheduler) -> None:
    for run in list(rt.runs.values()):
        await asyncio.wait_for(run.settled.wait(), 10)
    await rt.writer.drain()
    await scheduler.drain()


@pytest.fixture
async def scheduler(runtime):
    clock = Clock(T0)
    sched = Scheduler(runtime, clock=clock)
    sched.clock_control = clock
    yield sched
    await sched.stop()


async def test_a_due_job_fires_once_as_its_agent_with_its_params(runtime, scheduler) -> None:
    await define(runtime)
    job = await add_job(runtime)
    assert job["next_run_at"] == at("2026-01-01T00:01:00+00:00")
    await scheduler.start()
    assert await scheduler.tick() == []  # 00:00:30: not due yet
    scheduler.clock_control.at("2026-01-01T00:01:00+00:00")
    fired = await scheduler.tick()
    assert [f["job_id"] for f in fired] == [job["id"]]
    assert await scheduler.tick() == []  # the same minute again: already fired
    await settle(runtime, scheduler)
    (run,) = await runs_of(runtime, "nightly")
    assert run["id"] == fired[0]["workflow_id"]
    assert (run["agent_id"], run["input_params"], run["status"]) == ("cron-agent", {"who": "cron"}, "completed")
    row = await runtime.db(runtime.store.get_job, job["id"])
    assert row["last_run_at"] == at("2026-01-01T00:01:00+00:00")
    assert row["next_run_at"] == at("2026-01-01T00:02:00+00:00")
    assert (row["last_run_status"], row["last_workflow_id"]) == ("completed", run["id"])


async def test_runs_missed_while_down_are_recovered_once(runtime, scheduler) -> None:
    await define(runtime)
    job = await add_job(runtime, cron="*/5 * * * *")
    # The server was down from 00:00:30 to 05:02: sixty firings were missed; one run makes up for them.
    scheduler.clock_control.at("2026-01-01T05:02:00+00:00")
    fired = await scheduler.start()
    assert [f["job_id"] for f in fired] == [job["id"]]
    await settle(runtime, scheduler)
    assert len(await runs_of(runtime, "nightly")) == 1
    row = await runtime.db(runtime.store.get_job, job["id"])
    assert row["next_run_at"] == at("2026-01-01T05:05:00+00:00")
    # Another start at the same moment (a restart) finds nothing missed.
    again = Scheduler(runtime, clock=scheduler.clock_control)
    try:
        assert await again.start() == []
    finally:
        await again.stop()
    assert len(await runs_of(runtime, "nightly")) == 1


async def test_a_job_never_overlaps_its_own_last_run(runtime, scheduler) -> None:
    await define(runtime, definition=HOLD)
    job = await add_job(runtime)
    await scheduler.start()
    scheduler.clock_control.at("2026-01-01T00:01:00+00:00")
    (first,) = await scheduler.tick()
    await settle(runtime, scheduler)
    assert (await runtime.db(runtime.store.get_job, job["id"]))["last_run_status"] == "suspended"
    # 00:02: the first run still waits for its signal, so this firing is skipped, not queued.
    scheduler.clock_control.at("2026-01-01T00:02:00+00:00")
    (second,) = await scheduler.tick()
    assert second == {"job_id": job["id"], "skipped": True, "running": first["workflow_id"],
                      "next_run_at": at("2026-01-01T00:03:00+00:00")}
    assert len(await runs_of(runtime, "nightly")) == 1
    await service.send_signal(runtime, workflow_id=first["workflow_id"], signal_type="data",
                              payload={"signal": "go"})
    await settle(runtime, scheduler)
    assert (await runtime.db(runtime.store.get_job, job["id"]))["last_run_status"] == "completed"
    scheduler.clock_control.at("2026-01-01T00:03:00+00:00")
    (third,) = await scheduler.tick()
    assert third["workflow_id"] != first["workflow_id"]
    assert len(await runs_of(runtime, "nightly")) == 2


async def test_a_firing_lost_before_it_was_recorded_does_not_start_a_second_run(runtime, scheduler) -> None:
    await define(runtime)
    job = await add_job(runtime)
    scheduler.clock_control.at("2026-01-01T00:01:10+00:00")
    (fired,) = await scheduler.tick()
    await settle(runtime, scheduler)
    # As if the process died after starting the run but before the job's row was updated.
    await runtime.db(runtime.store.update_job, job["id"], next_run_at=job["next_run_at"], last_workflow_id=None,
                     last_run_status=None)
    (again,) = await scheduler.tick()
    assert again["workflow_id"] == fired["workflow_id"]
    assert len(await runs_of(runtime, "nightly")) == 1


async def test_disabled_jobs_do_not_fire_and_enabling_counts_from_now(runtime, scheduler) -> None:
    await define(runtime)
    job = await add_job(runtime, enabled=False)
    assert job["next_run_at"] is None
    scheduler.clock_control.at("2026-01-01T09:00:00+00:00")
    assert await scheduler.tick() == []
    enabled = await runtime.db(jobs.set_enabled, runtime.store, job["id"], True, scheduler.clock_control())
    assert enabled["next_run_at"] == at("2026-01-01T09:01:00+00:00")
    assert await runs_of(runtime, "nightly") == []


async def test_a_run_that_cannot_start_is_recorded_and_the_schedule_goes_on(runtime, scheduler) -> None:
    await define(runtime)
    job = await add_job(runtime, params={"who": 7})  # the template wants a string
    scheduler.clock_control.at("2026-01-01T00:01:00+00:00")
    (fired,) = await scheduler.tick()
    assert fired["error"] == "VALIDATION_ERROR"
    row = await runtime.db(runtime.store.get_job, job["id"])
    assert row["last_run_status"].startswith("error: [VALIDATION_ERROR] params do not match")
    assert row["next_run_at"] == at("2026-01-01T00:02:00+00:00")
    assert await runs_of(runtime, "nightly") == []


def test_next_run_reads_the_cron_expression_in_the_jobs_time_zone() -> None:
    winter, summer = datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 7, 15, tzinfo=UTC)
    assert jobs.next_run("0 9 * * *", "Europe/Paris", winter) == at("2026-01-15T08:00:00+00:00")
    assert jobs.next_run("0 9 * * *", "Europe/Paris", summer) == at("2026-07-15T07:00:00+00:00")
    assert jobs.next_run("30 2 * * 1-5", "UTC", datetime(2026, 1, 16, 3, tzinfo=UTC)) == at(
        "2026-01-19T02:30:00+00:00")  # Friday after 02:30 -> Monday


# -- jobs from a template's triggers ---------------------------------------------------------------------------


async def test_template_triggers_create_update_and_drop_its_jobs(runtime) -> None:
    triggers = {"cron": [{"cron": "0 3 * * *", "params": {"who": "night"}, "timezone": "Europe/Paris"},
                         {"cron": "*/10 * * * *", "params": {"who": "often"}, "agent_id": "ops", "enabled": False}]}
    answer = await define(runtime, triggers=triggers)
    assert answer["scheduled_jobs"] == ["trigger:nightly:0", "trigger:nightly:1"]
    first, second = [await runtime.db(runtime.store.get_job, jid) for jid in answer["scheduled_jobs"]]
    assert (first["cron"], first["timezone"], first["agent_id"], first["params"], first["enabled"]) == (
        "0 3 * * *", "Europe/Paris", "author", {"who": "night"}, True)
    assert (second["agent_id"], second["enabled"], second["next_run_at"]) == ("ops", False, None)
    await runtime.db(runtime.store.update_job, first["id"], next_run_at=at("2030-01-01T02:00:00+00:00"))
    # v2 keeps the first trigger's schedule (and its place in it), changes its params, drops the second.
    triggers = {"cron": [{"cron": "0 3 * * *", "params": {"who": "v2"}, "timezone": "Europe/Paris"}]}
    answer = await define(runtime, triggers=triggers)
    assert (answer["version"], answer["scheduled_jobs"]) == ("v2", ["trigger:nightly:0"])
    (only,) = await runtime.db(runtime.store.list_jobs)
    assert (only["params"], only["next_run_at"]) == ({"who": "v2"}, at("2030-01-01T02:00:00+00:00"))
    # v3 without triggers: the template no longer schedules anything.
    answer = await define(runtime)
    assert "scheduled_jobs" not in answer
    assert await runtime.db(runtime.store.list_jobs) == []


async def test_triggers_written_as_the_original_writes_them(runtime) -> None:
    # The original's docs name an entry and call its schedule `expression`; a named job keeps its id when
    # entries are reordered.
    daily = {"name": "daily-cleanup", "expression": "0 2 * * *", "enabled": True, "params": {"who": "janitor"}}
    hourly = {"name": "hourly", "cron": "0 * * * *", "params": {"who": "clock"}}
    answer = await define(runtime, triggers={"cron": [daily, hourly]})
    assert answer["scheduled_jobs"] == ["trigger:nightly:daily-cleanup", "trigger:nightly:hourly"]
    job = await runtime.db(runtime.store.get_job, "trigger:nightly:daily-cleanup")
    assert (job["cron"], job["params"]) == ("0 2 * * *", {"who": "janitor"})
    answer = await define(runtime, triggers={"cron": [hourly, daily]})
    assert sorted(answer["scheduled_jobs"]) == ["trigger:nightly:daily-cleanup", "trigger:nightly:hourly"]
    assert len(await runtime.db(runtime.store.list_jobs)) == 2
    with pytest.raises(ValidationError) as caught:
        await define(runtime, triggers={"cron": [daily, {**daily, "cron": "0 3 * * *"}, {"params": {"who": "x"}}]})
    assert {p["path"]: p["message"] for p in caught.value.problems} == {
        "triggers.cron[1].expression": "give `cron` or `expression`, not both",
        "triggers.cron[1].name": "'daily-cleanup' names triggers.cron[0] already",
        "triggers.cron[2].cron": "required: a 5-field cron expression",
    }


@pytest.mark.parametrize("validate_only", [False, True])
async def test_bad_triggers_are_refused_with_each_problem_and_its_path(runtime, validate_only: bool) -> None:
    triggers = {"cron": [{"cron": "0 3 * * *"},
                         {"cron": "61 * * * *", "timezone": "Mars/Olympus", "params": {"who": 3}, "when": "now"}],
                "webhook": {}}
    with pytest.raises(ValidationError) as caught:
        await define(runtime, triggers=triggers, validate_only=validate_only)
    paths = {p["path"] for p in caught.value.problems}
    # cron[0] has no params, but the template's input_schema requires `who`.
    assert paths == {"triggers", "triggers.cron[0].params", "triggers.cron[1]", "triggers.cron[1].cron",
                     "triggers.cron[1].timezone", "triggers.cron[1].params.who"}
    assert await runtime.db(runtime.store.get_template, "nightly") is None
    assert await runtime.db(runtime.store.list_jobs) == []


async def test_saving_a_job_checks_every_field(runtime) -> None:
    with pytest.raises(ValidationError) as caught:
        await runtime.db(jobs.save_job, runtime.store, job_id=None, template_name="nope", cron="* * *",
                         agent_id="", timezone="Nowhere/City", params="[1]")
    assert [p["path"] for p in caught.value.problems] == ["template_name", "cron", "timezone", "agent_id", "params"]


# -- a real server and the CLI ----------------------------------------------------------------------------------


def opcode(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPCODE, *args], env=opcode_env(home), capture_output=True, text=True, timeout=60)


def test_cli_jobs_and_a_serving_process_that_recovers_a_missed_one(tmp_path: Path) -> None:
    assert opcode(tmp_path, "define", str(ROOT / "examples" / "hello.json")).returncode == 0
    bad = opcode(tmp_path, "schedule", "add", "hello", "61 * * * *", "--timezone", "Mars/Olympus")
    assert bad.returncode == 1
    assert "cron: '61 * * * *' is not a 5-field cron expression" in bad.stderr
    assert "timezone: unknown time zone 'Mars/Olympus'" in bad.stderr
    added = opcode(tmp_path, "schedule", "add", "hello", "*/5 * * * *", "-p", "who=cron", "--agent-id", "ops")
    assert added.returncode == 0, added.stderr
    job_id = added.stdout.strip()
    assert opcode(tmp_path, "schedule", "disable", job_id).stdout.strip() == f"job {job_id} disabled"
    assert opcode(tmp_path, "schedule", "enable", job_id).returncode == 0
    table = opcode(tmp_path, "schedule", "list").stdout
    assert job_id in table and "*/5 * * * *" in table
    # The job was due an hour ago while no server ran.
    with sqlite3.connect(tmp_path / "opcode.db") as db:
        db.execute("UPDATE scheduled_jobs SET next_run_at = ? WHERE id = ?", ("2026-01-01T00:00:00.000000Z", job_id))
    server = start_server(tmp_path)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            (job,) = json.loads(opcode(tmp_path, "schedule", "list", "--json").stdout)
            if job["last_run_status"] == "completed":
                break
            time.sleep(0.2)
        assert job["last_run_status"] == "completed", server.log()
        assert job["next_run_at"] > datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        with sqlite3.connect(tmp_path / "opcode.db") as db:
            query = "SELECT id, agent_id, input_params FROM workflows WHERE template_name = 'hello'"
            runs = db.execute(query).fetchall()
        assert runs == [(job["last_workflow_id"], "ops", '{"who":"cron"}')]
        assert "due while no server ran, each fired once" in server.log()
        panel = httpx.get(f"{server.base_url}/scheduler", timeout=10).text
        assert f'<a href="/workflows/{job["last_workflow_id"]}">' in panel
    finally:
        stop_server(server.process)
    removed = opcode(tmp_path, "schedule", "remove", job_id)
    assert removed.stdout.strip() == f"job {job_id} removed"
    assert opcode(tmp_path, "schedule", "remove", job_id).stderr.strip().endswith("not found")


def test_the_scheduler_doc_examples_work(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "scheduler.md").read_text()
    (template,) = re.findall(r"```json\n(.*?)```", doc, re.S)
    assert json.loads(template) == json.loads((ROOT / "examples" / "nightly-digest.json").read_text())
    first, second = (block.splitlines() for block in re.findall(r"```sh\n(.*?)```", doc, re.S))
    job_id = None
    for line in first + second:
        args = shlex.split(line.split("#")[0].replace("JOB_ID", job_id or "JOB_ID"))
        assert args[0] == "opcode"
        done = subprocess.run([OPCODE, *args[1:]], env=opcode_env(tmp_path), capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
        assert done.returncode == 0, (line, done.stderr)
        if args[1] == "define":
            answer = json.loads(done.stdout)
            assert answer["scheduled_jobs"] == ["trigger:nightly-digest:0", "trigger:nightly-digest:1"]
            assert f'"scheduled_jobs": {json.dumps(answer["scheduled_jobs"])}' in " ".join(doc.split())
        if args[1:3] == ["schedule", "add"]:
            job_id = done.stdout.strip()
    listed = json.loads(done.stdout)
    assert [job["id"] for job in listed] == ["trigger:nightly-digest:0", "trigger:nightly-digest:1"]


async def test_the_runtime_timer_service_wakes_the_scheduler_when_a_job_comes_due(runtime) -> None:
    await define(runtime)
    job = await add_job(runtime)
    await runtime.db(runtime.store.update_job, job["id"], next_run_at=at("2099-01-01T00:00:00+00:00"))
    sched = Scheduler(runtime)  # the real clock
    assert await sched.start() == []
    try:
        due = datetime.fromtimestamp(time.time() + 0.5, UTC)
        await runtime.db(runtime.store.update_job, job["id"], next_run_at=due.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        sched.wake()  # as the panel does after changing a job
        for _ in range(100):
            if runtime.timers.armed().get("scheduler", 0) >= due.timestamp() - 0.01:
                break
            await asyncio.sleep(0.01)
        assert abs(runtime.timers.armed()["scheduler"] - due.timestamp()) < 0.05
        for _ in range(60):
            if await runs_of(runtime, "nightly"):
                break
            await asyncio.sleep(0.05)
        (run,) = await runs_of(runtime, "nightly")
        assert run["created_at"] >= due.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    finally:
        await sched.stop()
    assert "scheduler" not in runtime.timers.armed()

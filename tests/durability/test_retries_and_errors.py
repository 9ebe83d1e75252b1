"""Retries with backoff, on_error strategies, workflow hooks, circuit breakers, step and workflow timeouts."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from opcode_core import service
from opcode_core.engine.breakers import CircuitBreakers
from opcode_core.engine.retry import RetryPolicy
from opcode_core.errors import CIRCUIT_OPEN, OpcodeError
from tests.conftest import log, run_definition


def flaky(counter: Path, fail_times: int, **extra) -> dict:
    """A shell step that fails its first `fail_times` runs, counting runs in a file."""
    script = f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -gt {fail_times} ]"
    return {"id": "flaky", "action": "shell.exec", "params": {"command": "sh", "args": ["-c", script]}, **extra}


async def events_of(rt, workflow_id: str) -> list[dict]:
    return (await service.query(rt, resource="events", filter={"workflow_id": workflow_id}))["events"]


def stamp(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_retry_succeeds_on_attempt_n_plus_one_with_policy_delays(runtime, tmp_path) -> None:
    counter = tmp_path / "count"
    step = flaky(counter, 2, retry={"max": 3, "backoff": "exponential", "delay": "100ms"})
    result = await run_definition(runtime, {"steps": [step]})
    assert result["status"] == "completed", result
    assert counter.read_text().strip() == "3"
    events = await events_of(runtime, result["workflow_id"])
    retrying = [e for e in events if e["event_type"] == "step_retrying"]
    attempts = [e for e in events if e["event_type"] == "step_retry_attempt"]
    assert [e["payload"]["delay_ms"] for e in retrying] == [100, 200]
    assert [e["payload"]["attempt"] for e in attempts] == [2, 3]
    for waited, before in zip(attempts, retrying, strict=True):  # the log shows the waits really happened
        assert stamp(waited) - stamp(before) >= before["payload"]["delay_ms"] / 1000 - 0.01


@pytest.mark.parametrize(
    "backoff,delays", [("none", [0, 0, 0]), ("constant", [1, 1, 1]), ("linear", [1, 2, 3]), ("exponential", [1, 2, 4])]
)
def test_backoff_policies(backoff: str, delays: list[int]) -> None:
    policy = RetryPolicy.from_step({"max": 3, "backoff": backoff, "delay": "1s"})
    assert [policy.delay_before(n) for n in (1, 2, 3)] == delays
    capped = RetryPolicy.from_step({"max": 3, "backoff": backoff, "delay": "1s", "max_delay": "1500ms"})
    assert [capped.delay_before(n) for n in (1, 2, 3)] == [min(d, 1.5) for d in delays]


async def test_exhausted_retries_give_retry_exhausted_with_the_last_error(runtime, tmp_path) -> None:
    result = await run_definition(runtime, {"steps": [flaky(tmp_path / "c", 9, retry={"max": 2})]})
    assert result["status"] == "failed"
    assert result["error"]["code"] == "RETRY_EXHAUSTED"
    assert result["error"]["details"]["last_error"]["code"] == "EXECUTION_ERROR"
    assert (tmp_path / "c").read_text().strip() == "3"


async def test_non_retryable_errors_are_never_retried(runtime) -> None:
    step = {"id": "nope", "action": "workflow.fail", "params": {"reason": "stop"}, "retry": {"max": 5}}
    result = await run_definition(runtime, {"steps": [step]})
    assert result["error"]["code"] == "NON_RETRYABLE"
    events = await events_of(runtime, result["workflow_id"])
    assert not [e for e in events if e["event_type"] == "step_retrying"]


async def test_on_error_ignore_keeps_the_failed_output_readable(runtime) -> None:
    definition = {
        "steps": [
            {
                "id": "check",
                "action": "shell.exec",
                "params": {"command": "sh", "args": ["-c", "echo partial; exit 4"]},
                "on_error": {"strategy": "ignore"},
            },
            log("after", "exit ${{steps.check.output.exit_code}}", depends_on=["check"]),
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "completed"
    assert result["steps"]["check"]["status"] == "skipped"
    assert result["steps"]["after"]["output"]["message"] == "exit 4"
    kinds = [e["event_type"] for e in await events_of(runtime, result["workflow_id"])]
    assert "error_handler_invoked" in kinds and "step_ignored" in kinds


async def test_on_error_fallback_step_runs_the_named_step(runtime) -> None:
    definition = {
        "steps": [
            {
                "id": "primary",
                "action": "workflow.fail",
                "params": {"reason": "down"},
                "on_error": {"strategy": "fallback_step", "fallback_step": "backup"},
            },
            log("backup", "plan b"),
            log("after", "done", depends_on=["primary"]),
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "completed", result
    assert result["steps"]["primary"]["status"] == "failed"
    assert result["steps"]["backup"]["output"]["message"] == "plan b"
    events = await events_of(runtime, result["workflow_id"])
    fallback = [e for e in events if e["event_type"] == "step_fallback"]
    assert fallback[0]["payload"]["fallback_step"] == "backup"
    assert len([e for e in events if e["event_type"] == "step_started" and e["step_id"] == "backup"]) == 1


async def test_on_error_fail_workflow_and_workflow_hooks(runtime) -> None:
    ok = await run_definition(
        runtime, {"steps": [log("a")], "on_complete": log("celebrate", "done"), "on_error": log("mourn", "failed")}
    )
    assert ok["status"] == "completed"
    status = await service.workflow_status(runtime, workflow_id=ok["workflow_id"])
    assert status["steps"]["celebrate"]["status"] == "completed" and "mourn" not in status["steps"]
    bad = await run_definition(
        runtime,
        {
            "steps": [
                {
                    "id": "x",
                    "action": "workflow.fail",
                    "params": {"reason": "r"},
                    "on_error": {"strategy": "fail_workflow"},
                },
                log("never", depends_on=["x"]),
            ],
            "on_error": log("mourn", "failed"),
        },
    )
    assert bad["status"] == "failed"
    status = await service.workflow_status(runtime, workflow_id=bad["workflow_id"])
    assert status["steps"]["mourn"]["status"] == "completed" and "never" not in status["steps"]


def test_circuit_breaker_opens_refuses_half_opens_and_closes() -> None:
    now = [0.0]
    seen: list[str] = []
    breakers = CircuitBreakers(threshold=2, reset_after=10, clock=lambda: now[0])

    def note(action: str, state: str, details: dict) -> None:
        seen.append(state)

    breakers.before_call("http.get", note)
    breakers.failed("http.get", note)
    breakers.failed("http.get", note)
    assert seen == ["open"]
    with pytest.raises(OpcodeError) as info:
        breakers.before_call("http.get", note)
    assert info.value.code == CIRCUIT_OPEN
    now[0] = 11
    breakers.before_call("http.get", note)  # the one probe
    assert seen == ["open", "half_open"]
    with pytest.raises(OpcodeError):
        breakers.before_call("http.get", note)  # a second caller while probing
    breakers.succeeded("http.get", note)
    assert seen == ["open", "half_open", "closed"]
    breakers.before_call("http.get", note)


async def test_circuit_breaker_in_runs_records_events_and_skips_the_call(tmp_path) -> None:
    from opcode_core.runtime import Runtime
    from opcode_core.settings import load_settings

    settings = load_settings(
        {
            "OPCODE_HOME": str(tmp_path),
            "OPCODE_LOAD_PLUGINS": "",
            "OPCODE_BREAKER_THRESHOLD": "2",
            "OPCODE_BREAKER_RESET": "300ms",
        }
    )
    counter = tmp_path / "calls"
    failing = {
        "steps": [
            {
                "id": "s",
                "action": "shell.exec",
                "params": {"command": "sh", "args": ["-c", f"echo x >> {counter}; exit 1"]},
            }
        ]
    }
    rt = Runtime(settings)
    async with rt.running():
        for _ in range(2):
            assert (await run_definition(rt, failing))["error"]["code"] == "EXECUTION_ERROR"
        refused = await run_definition(rt, failing)
        assert refused["error"]["code"] == "CIRCUIT_OPEN"
        assert len(counter.read_text().splitlines()) == 2  # the third run never called the action
        time.sleep(0.35)
        ok = await run_definition(rt, {"steps": [{"id": "s", "action": "shell.exec", "params": {"command": "true"}}]})
        assert ok["status"] == "completed"
        kinds = [e["event_type"] for e in await events_of(rt, ok["workflow_id"])]
        assert "circuit_breaker_half_open" in kinds and "circuit_breaker_closed" in kinds


async def test_step_timeout_kills_the_subprocess_tree(runtime, tmp_path) -> None:
    pidfile = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pidfile}; echo $$ >> {pidfile}; wait"
    step = {
        "id": "slow",
        "action": "shell.exec",
        "params": {"command": "sh", "args": ["-c", script]},
        "timeout": "500ms",
    }
    started = time.monotonic()
    result = await run_definition(runtime, {"steps": [step]})
    assert time.monotonic() - started < 5
    assert result["status"] == "failed" and result["error"]["code"] == "TIMEOUT_ERROR"
    for pid in map(int, pidfile.read_text().split()):
        assert not _alive(pid), f"process {pid} survived the step timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("mode,status", [("fail", "failed"), ("cancel", "cancelled"), ("suspend", "suspended")])
async def test_workflow_timeout_modes(runtime, mode: str, status: str) -> None:
    definition = {
        "timeout": "300ms",
        "on_timeout": mode,
        "steps": [
            log("quick"),
            {"id": "slow", "type": "wait", "config": {"duration": "5s"}, "depends_on": ["quick"]},
            log("later", depends_on=["slow"]),
        ],
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == status, result
    state = await service.workflow_status(runtime, workflow_id=result["workflow_id"])
    assert state["status"] == status
    assert state["steps"]["quick"]["status"] == "completed"
    kinds = [e["event_type"] for e in state["events"]]
    assert "workflow_timed_out" in kinds
    if mode == "fail":
        assert state["workflow"]["error"]["code"] == "TIMEOUT_ERROR"
    if mode == "cancel":
        assert state["steps"]["slow"]["status"] == "skipped" and state["steps"]["later"]["status"] == "skipped"
    if mode == "suspend":
        assert state["steps"]["slow"]["status"] == "running"  # re-run by a `resume` signal
        answer = await service.send_signal(runtime, workflow_id=result["workflow_id"], signal_type="resume", payload={})
        assert answer["status"] == "suspended"  # the fresh window times out again on the 5 s wait

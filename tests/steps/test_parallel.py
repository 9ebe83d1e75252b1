"""The parallel step type: all and race (the loser really cancelled)."""

from __future__ import annotations

import asyncio
import os
import time

from tests.conftest import log, run_definition


async def test_all_runs_branches_concurrently_and_collects_outputs(runtime) -> None:
    sleep = {"action": "shell.exec", "params": {"command": "sleep", "args": ["0.5"]}}
    definition = {
        "steps": [
            {
                "id": "fan",
                "type": "parallel",
                "config": {
                    "mode": "all",
                    "branches": [
                        [{"id": "a", **sleep}, log("a2", "after a", depends_on=["a"])],
                        [{"id": "b", **sleep}],
                        [log("c", "quick")],
                    ],
                },
            }
        ]
    }
    started = time.monotonic()
    result = await run_definition(runtime, definition)
    assert result["status"] == "completed", result
    assert time.monotonic() - started < 1.4  # three branches, not one after another
    out = result["steps"]["fan"]["output"]
    assert out["mode"] == "all" and len(out["branches"]) == 3
    assert out["branches"][0]["message"] == "after a" and out["branches"][2]["message"] == "quick"
    assert result["steps"]["fan.branch_1.b"]["status"] == "completed"


async def test_all_fails_when_a_branch_fails(runtime) -> None:
    definition = {
        "steps": [
            {
                "id": "fan",
                "type": "parallel",
                "config": {
                    "branches": [
                        [log("ok")],
                        [{"id": "bad", "action": "workflow.fail", "params": {"reason": "broken"}}],
                    ]
                },
            }
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "failed" and result["error"]["step_id"] == "fan.branch_1.bad"


async def test_race_first_success_wins_and_the_loser_is_cancelled(runtime, tmp_path) -> None:
    marker = tmp_path / "loser-finished"
    slow = {
        "id": "slow",
        "action": "shell.exec",
        "params": {"command": "sh", "args": ["-c", f"sleep 2; touch {marker}"]},
    }
    definition = {
        "steps": [
            {
                "id": "race",
                "type": "parallel",
                "config": {"mode": "race", "branches": [[slow], [{"id": "quick", "action": "crypto.uuid"}]]},
            }
        ]
    }
    started = time.monotonic()
    result = await run_definition(runtime, definition)
    assert result["status"] == "completed", result
    assert time.monotonic() - started < 1.8
    out = result["steps"]["race"]["output"]
    assert out["mode"] == "race" and out["winner"] == 1 and "uuid" in out["output"]
    assert result["steps"]["race.branch_0.slow"]["status"] == "skipped"
    await asyncio.sleep(2.3)
    assert not os.path.exists(marker)  # the losing command was killed, not left running


async def test_race_fails_only_when_all_branches_fail(runtime) -> None:
    fail = {"action": "workflow.fail", "params": {"reason": "no"}}
    definition = {
        "steps": [
            {
                "id": "race",
                "type": "parallel",
                "config": {"mode": "race", "branches": [[{"id": "x", **fail}], [{"id": "y", **fail}]]},
            }
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "failed"
    one_wins = {
        "steps": [
            {
                "id": "race",
                "type": "parallel",
                "config": {"mode": "race", "branches": [[{"id": "x", **fail}], [log("y", "survivor")]]},
            }
        ]
    }
    result = await run_definition(runtime, one_wins)
    assert result["status"] == "completed" and result["steps"]["race"]["output"]["winner"] == 1


async def test_nesting_does_not_deadlock_with_a_small_pool(tmp_path) -> None:
    from opcode_core.runtime import Runtime
    from opcode_core.settings import load_settings

    settings = load_settings({"OPCODE_HOME": str(tmp_path), "OPCODE_LOAD_PLUGINS": "", "OPCODE_POOL_SIZE": "1"})
    inner = {"id": "inner", "type": "parallel", "config": {"branches": [[log("p")], [log("q")]]}}
    definition = {"steps": [{"id": "outer", "type": "parallel", "config": {"branches": [[inner], [inner]]}}]}
    rt = Runtime(settings)
    async with rt.running():
        result = await run_definition(rt, definition)
    assert result["status"] == "completed"
    assert result["steps"]["outer.branch_1.inner.branch_0.p"]["status"] == "completed"

"""The timer service: deadlines fire once, in order, at their time; cancelled or replaced ones never."""

from __future__ import annotations

import asyncio
import time

import pytest

from opcode_core.timers import TimerService


@pytest.fixture
async def timers():
    service = TimerService()
    task = asyncio.create_task(service.run())
    yield service
    task.cancel()


async def test_deadlines_fire_once_in_time_order(timers: TimerService) -> None:
    fired: list[tuple[str, float]] = []
    start = time.time()
    for key, delay in (("late", 0.15), ("soon", 0.05), ("past", -5.0)):
        timers.at(key, start + delay, lambda key=key: fired.append((key, time.time())))
    await asyncio.sleep(0.3)
    assert [key for key, _ in fired] == ["past", "soon", "late"]
    assert fired[1][1] - start >= 0.05 and fired[2][1] - start >= 0.15
    assert timers.armed() == {}


async def test_cancelled_and_replaced_timers_do_not_fire(timers: TimerService) -> None:
    fired: list[str] = []
    now = time.time()
    timers.at("gone", now + 0.05, lambda: fired.append("gone"))
    timers.at("moved", now + 0.05, lambda: fired.append("moved-early"))
    timers.at("moved", now + 0.1, lambda: fired.append("moved-late"))
    assert timers.cancel("gone") is True
    assert timers.cancel("never-armed") is False
    assert set(timers.armed()) == {"moved"}
    await asyncio.sleep(0.2)
    assert fired == ["moved-late"]


async def test_a_failing_callback_does_not_stop_the_others(timers: TimerService, caplog) -> None:
    fired: list[str] = []

    async def boom() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        fired.append("fine")

    now = time.time()
    timers.at("boom", now, boom)
    timers.at("fine", now + 0.02, fine)
    await asyncio.sleep(0.1)
    assert fired == ["fine"]
    assert "timer boom failed" in caplog.text


async def test_a_wait_step_sleeps_on_the_runtime_timer_service(runtime) -> None:
    from tests.conftest import run_definition

    started = await run_definition(runtime, {"steps": [{"id": "nap", "type": "wait", "config": {"duration": "400ms"}}]},
                                   wait=False)
    wid = started["workflow_id"]
    for _ in range(100):
        armed = {k: v for k, v in runtime.timers.armed().items() if k.startswith(f"sleep:{wid}:")}
        if armed:
            break
        await asyncio.sleep(0.01)
    (until,) = armed.values()
    assert 0.2 < until - time.time() <= 0.4
    await asyncio.wait_for(runtime.runs[wid].settled.wait(), 5)
    assert not any(k.startswith(f"sleep:{wid}:") for k in runtime.timers.armed())

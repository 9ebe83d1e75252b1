"""Crash recovery at start-up: interrupted runs are suspended (or resumed), timers re-armed, loops cut off."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opcode_core.errors import EXECUTION_ERROR

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime

log = logging.getLogger("opcode.recovery")


async def recover(rt: Runtime) -> dict[str, list[str]]:
    """Handle runs a crash left behind; only one server per database does this (it holds a lock)."""
    from opcode_core.service import revive_run

    report: dict[str, list[str]] = {"suspended": [], "resumed": [], "failed": [], "rearmed": []}
    if not await rt.db(rt.store.acquire_recovery_lock):
        log.warning("another opcode server holds the recovery lock of this database: not recovering runs")
        return report
    limit = rt.settings.max_recovery_attempts
    for wf in await rt.db(rt.store.active_workflows):
        wid = wf["id"]
        attempts = await rt.db(rt.store.bump_recovery_attempts, wid)
        rt.writer.append(wid, "workflow_interrupted", payload={"recovery_attempt": attempts}, agent_id=wf["agent_id"])
        if attempts > limit:
            error = {"code": EXECUTION_ERROR, "message": f"the run was interrupted by {attempts} crashes "
                     f"(max_recovery_attempts is {limit}); it is failed instead of resumed again"}
            await rt.writer.append(wid, "workflow_failed", payload={"error": error}, agent_id=wf["agent_id"])
            report["failed"].append(wid)
        elif rt.settings.recovery == "auto":
            await rt.writer.drain()
            await revive_run(rt, {**wf, "status": "active"}, interrupted=True)
            report["resumed"].append(wid)
        else:
            await rt.writer.append(wid, "workflow_suspended", payload={"reason": "interrupted"},
                                   agent_id=wf["agent_id"])
            report["suspended"].append(wid)
    # Runs waiting on a decision with a deadline come back so their timer fires, even if it passed meanwhile.
    for wf in await rt.db(rt.store.list_workflows, status="suspended", limit=None):
        pending = await rt.db(rt.store.list_decisions, wf["id"], status="pending")
        if any(d.get("timeout_at") for d in pending) and wf["id"] not in rt.runs:
            await revive_run(rt, wf)
            report["rearmed"].append(wf["id"])
    await rt.writer.drain()
    if any(report.values()):
        log.info("recovery: %s", {k: len(v) for k, v in report.items()})
    return report

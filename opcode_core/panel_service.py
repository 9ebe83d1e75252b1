"""Read-side service functions the web panel needs beyond the MCP tools: counters, tables, pages, queues."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from opcode_core import jobs, service
from opcode_core.decisions import decision_view
from opcode_core.engine.definition import load_definition
from opcode_core.errors import NOT_FOUND, OpcodeError
from opcode_core.runtime import Runtime
from opcode_core.scheduler import jobs_changed
from opcode_core.store.projection import new_step_state

# The panel acts as this agent, so what a human does in the browser is recorded like any agent's signal.
PANEL_AGENT = "panel"
PANEL_AGENT_TYPE = "human"
STATUSES = ("pending", "active", "suspended", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
TIMELINE_EVENTS = 500


@dataclass
class Page:
    """One page of rows and where it sits among all of them."""

    rows: list[dict[str, Any]]
    page: int
    per_page: int
    total: int | None = None  # None when only "is there a next page" is known
    has_next: bool = False
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def pages(self) -> int | None:
        """How many pages there are, when the total is known."""
        return None if self.total is None else max(1, math.ceil(self.total / self.per_page))


async def ensure_panel_agent(rt: Runtime) -> str:
    """Register the panel's agent (type human) before it acts; returns its id."""
    await rt.db(rt.store.ensure_agent, PANEL_AGENT, PANEL_AGENT_TYPE)
    return PANEL_AGENT


async def dashboard(rt: Runtime, *, feed: int = 30, decisions: int = 10, runs: int = 8) -> dict[str, Any]:
    """Counters by status, the per-agent table, pending decisions, the latest runs and the latest events."""
    await rt.writer.drain()
    agents = await agent_table(rt)
    totals = dict.fromkeys(STATUSES, 0)
    for agent in agents:
        for status, n in agent["counts"].items():
            totals[status] = totals.get(status, 0) + n
    pending = await pending_decisions(rt)
    events = await rt.db(rt.store.page_events, limit=feed)
    recent, _ = await rt.db(rt.store.page_workflows, limit=runs)
    return {
        "counts": totals,
        "total": sum(totals.values()),
        "agents": agents,
        "decisions": pending[:decisions],
        "decisions_total": len(pending),
        "events": events,
        "labels": await rt.db(rt.store.workflow_labels, {e["workflow_id"] for e in events}),
        "runs": recent,
    }


async def agent_table(rt: Runtime) -> list[dict[str, Any]]:
    """Every agent with its type, last contact and its workflows counted by status."""
    counts = await rt.db(rt.store.workflow_counts)
    rows = []
    for agent in await rt.db(rt.store.list_agents):
        by_status = counts.get(agent["id"], {})
        rows.append({**agent, "counts": by_status, "total": sum(by_status.values())})
    rows.sort(key=lambda a: a.get("last_seen") or "", reverse=True)
    return rows


async def pending_decisions(rt: Runtime) -> list[dict[str, Any]]:
    """Every pending decision across runs, oldest first, with the run it belongs to."""
    rows = await rt.db(rt.store.list_decisions, status="pending")
    runs: dict[str, dict[str, Any] | None] = {}
    out = []
    for row in rows:
        wid = row["workflow_id"]
        if wid not in runs:
            runs[wid] = await rt.db(rt.store.get_workflow, wid)
        wf = runs[wid] or {}
        out.append({**decision_view(row), "workflow_id": wid, "workflow_name": wf.get("name"),
                    "agent_id": wf.get("agent_id"), "workflow_status": wf.get("status")})
    return out


async def workflows_page(
    rt: Runtime, *, status: str | None = None, agent_id: str | None = None, page: int = 1, per_page: int = 25
) -> Page:
    """One page of runs, newest first, filtered by status and agent."""
    await rt.writer.drain()
    page = max(1, page)
    rows, total = await rt.db(
        rt.store.page_workflows, status=status, agent_id=agent_id, limit=per_page, offset=(page - 1) * per_page
    )
    return Page(rows, page, per_page, total=total, has_next=page * per_page < total,
                filters={"status": status, "agent_id": agent_id})


async def events_page(
    rt: Runtime, *, workflow_id: str | None = None, event_type: str | None = None, page: int = 1, per_page: int = 50
) -> Page:
    """One page of events, newest first, filtered by workflow and type."""
    await rt.writer.drain()
    page = max(1, page)
    rows = await rt.db(rt.store.page_events, workflow_id=workflow_id, event_type=event_type,
                       limit=per_page + 1, offset=(page - 1) * per_page)
    return Page(rows[:per_page], page, per_page, has_next=len(rows) > per_page,
                filters={"workflow_id": workflow_id, "event_type": event_type})


async def event_types(rt: Runtime) -> list[str]:
    """The event types recorded so far, for the events filter."""
    return await rt.db(rt.store.event_types)


async def workflow_detail(rt: Runtime, workflow_id: str) -> dict[str, Any]:
    """What the workflow page shows: `opcode.status`, plus each step's input and attempt, and every decision."""
    status = await service.workflow_status(rt, workflow_id=workflow_id)
    wf = await rt.db(rt.store.get_workflow, workflow_id)
    states = await rt.db(rt.store.get_step_states, workflow_id)
    steps = [{**state, "step_id": sid}
             for sid, state in sorted(states.items(), key=lambda kv: (kv[1].get("started_at") or "~", kv[0]))]
    # Top-level steps the run has not reached yet, in definition order, so the table lists the whole run.
    steps += [{**new_step_state(raw["id"])} for raw in (wf["definition"] or {}).get("steps") or []
              if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"] not in states]
    decisions = [
        {**decision_view(d), "resolution": d.get("resolution"), "resolved_at": d.get("resolved_at")}
        for d in await rt.db(rt.store.list_decisions, workflow_id)
    ]
    return {
        **status,
        "definition": wf["definition"],
        "input_params": wf.get("input_params") or {},
        "step_rows": steps,
        "states": states,
        "timeline": await timeline(rt, workflow_id),
        "decisions": decisions,
    }


async def recent_events(rt: Runtime, limit: int = 30) -> dict[str, Any]:
    """The latest events of every run, newest first, with a label for each run."""
    await rt.writer.drain()
    events = await rt.db(rt.store.page_events, limit=limit)
    return {"events": events, "labels": await rt.db(rt.store.workflow_labels, {e["workflow_id"] for e in events})}


async def timeline(rt: Runtime, workflow_id: str) -> list[dict[str, Any]]:
    """A run's latest events (up to TIMELINE_EVENTS), oldest first."""
    await rt.writer.drain()
    events = await rt.db(rt.store.list_events, workflow_id=workflow_id, limit=TIMELINE_EVENTS, newest_first=True)
    return list(reversed(events))


async def template_summaries(rt: Runtime) -> list[dict[str, Any]]:
    """One row per template name, most recently defined first."""
    return await rt.db(rt.store.template_summaries)


async def template_detail(rt: Runtime, name: str, version: str | None = None) -> dict[str, Any]:
    """One version of a template (the latest by default) and the list of all its versions."""
    template = await rt.db(rt.store.get_template, name, version)
    if template is None:
        which = f"version {version} of " if version else ""
        raise OpcodeError(NOT_FOUND, f"{which}template {name!r} not found")
    versions = await rt.db(rt.store.list_templates, name=name, limit=None)
    return {**template, "versions": [{"version": v["version"], "created_at": v["created_at"],
                                      "agent_id": v["agent_id"]} for v in versions]}


async def rerun(rt: Runtime, workflow_id: str, *, agent_id: str = PANEL_AGENT) -> dict[str, Any]:
    """Start a new run of the same template version with the same params, without waiting for it."""
    wf = await rt.db(rt.store.get_workflow, workflow_id)
    if wf is None:
        raise OpcodeError(NOT_FOUND, f"workflow {workflow_id!r} not found")
    await ensure_panel_agent(rt)
    params = wf.get("input_params") or {}
    if wf.get("template_name"):
        return await service.run_workflow(rt, template_name=wf["template_name"], version=wf.get("template_version"),
                                          agent_id=agent_id, params=params, wait=False)
    # A run started from a file (`opcode run FILE`) has no template: run its stored definition again.
    definition = load_definition(wf["definition"], rt.registry)
    return await service.start_run(rt, definition=definition, name=wf.get("name") or "run", agent_id=agent_id,
                                   params=params, wait=False)


def plugins(rt: Runtime) -> list[dict[str, Any]]:
    """Installed plugins with status and what they provide; plugin settings with secret-looking values hidden."""
    report = rt.report
    if report is None:
        return []
    settings = rt.settings.redacted_plugin_settings()
    descriptions = {a["name"]: a["description"] for a in rt.registry.describe_actions()} if rt.registry else {}
    rows = []
    for info in sorted(report.plugins.values(), key=lambda p: (not p.builtin, p.name)):
        row = info.to_dict()
        row["actions"] = [{"name": a, "description": descriptions.get(a, "")} for a in sorted(info.actions)]
        row["settings"] = settings.get(info.name)
        rows.append(row)
    return rows


# -- scheduled jobs ------------------------------------------------------------------------------------------


async def list_jobs(rt: Runtime) -> list[dict[str, Any]]:
    """Every scheduled job with its next and last run."""
    return await rt.db(rt.store.list_jobs)


async def get_job(rt: Runtime, job_id: str) -> dict[str, Any]:
    """One scheduled job; NOT_FOUND when there is none."""
    return await rt.db(jobs.get_job, rt.store, job_id)


async def save_job(rt: Runtime, *, job_id: str | None, **fields: Any) -> dict[str, Any]:
    """Create a job (no `job_id`) or change one (see `jobs.save_job`), and let the scheduler know."""
    job = await rt.db(jobs.save_job, rt.store, job_id=job_id, **fields)
    jobs_changed(rt)
    return job


async def toggle_job(rt: Runtime, job_id: str) -> dict[str, Any]:
    """Enable a disabled job (its next run counted from now) or disable an enabled one."""
    job = await get_job(rt, job_id)
    job = await rt.db(jobs.set_enabled, rt.store, job_id, not job["enabled"])
    jobs_changed(rt)
    return job


async def delete_job(rt: Runtime, job_id: str) -> None:
    """Delete a scheduled job; NOT_FOUND when there is none."""
    await rt.db(jobs.delete_job, rt.store, job_id)
    jobs_changed(rt)

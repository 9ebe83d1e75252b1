"""Service functions: the one API that MCP tools, the CLI and the panel all call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from opcode_core import jobs
from opcode_core.decisions import decision_view
from opcode_core.engine.definition import WorkflowDef, load_definition
from opcode_core.engine.executor import RunInfo, WorkflowRun
from opcode_core.engine.interpolation import StepResult
from opcode_core.errors import NOT_FOUND, VALIDATION_ERROR, OpcodeError, ValidationError, schema_problems, summarize
from opcode_core.runtime import Runtime
from opcode_core.scheduler import jobs_changed
from opcode_core.store.store import workflow_row

RESOURCES = ("workflows", "events", "templates", "actions")
CREATE_FIELDS = ("id", "name", "template_name", "template_version", "definition", "agent_id", "input_params",
                 "parent_workflow_id", "idempotency_key")
STATUS_EVENTS = 100
STEP_DONE_EVENTS = ("step_completed", "step_failed", "step_skipped")

Progress = Callable[[int, int], Awaitable[None]]


async def define_template(
    rt: Runtime,
    *,
    name: str,
    definition: dict[str, Any],
    agent_id: str,
    description: str | None = None,
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    triggers: dict[str, Any] | None = None,
    validate_only: bool = False,
) -> dict[str, Any]:
    """Validate a definition and store it as the next version of template `name`."""
    if not name or not name.strip():
        raise ValidationError("name must not be empty", [{"path": "name", "message": "must not be empty"}])
    load_definition(definition, rt.registry)
    for field_name, schema in (("input_schema", input_schema), ("output_schema", output_schema)):
        _check_schema(field_name, schema)
    if problems := jobs.check_triggers(triggers, input_schema):
        raise ValidationError(summarize(problems), problems)
    if validate_only:
        return {"name": name, "valid": True, "version": None}
    await rt.db(rt.store.ensure_agent, agent_id)
    version = await rt.db(
        rt.store.create_template,
        name,
        definition,
        agent_id,
        description=description,
        input_schema=input_schema,
        output_schema=output_schema,
        triggers=triggers,
    )
    # The template's cron jobs follow its latest version: created, changed, or dropped with its triggers.
    job_ids = await rt.db(jobs.sync_triggers, rt.store, name, triggers, agent_id)
    jobs_changed(rt)
    answer: dict[str, Any] = {"name": name, "version": version}
    if job_ids:
        answer["scheduled_jobs"] = job_ids
    return answer


async def run_workflow(
    rt: Runtime,
    *,
    template_name: str,
    agent_id: str,
    version: str | None = None,
    params: dict[str, Any] | None = None,
    wait: bool = True,
    idempotency_key: str | None = None,
    parent_workflow_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Start a run of a stored template; with `wait`, answer once it completes, fails or suspends."""
    template = await rt.db(rt.store.get_template, template_name, version)
    if template is None:
        which = f"version {version} of " if version else ""
        raise OpcodeError(NOT_FOUND, f"{which}template {template_name!r} not found")
    await rt.db(rt.store.ensure_agent, agent_id)
    if idempotency_key:
        existing = await rt.db(rt.store.find_workflow_by_idempotency_key, agent_id, idempotency_key)
        if existing is not None:
            return await _answer_for_existing(rt, existing["id"], wait)
    params = params or {}
    if template.get("input_schema"):
        _validate_against("params", template["input_schema"], params)
    definition = load_definition(template["definition"], rt.registry)
    return await start_run(
        rt,
        definition=definition,
        name=template_name,
        template_name=template_name,
        template_version=template["version"],
        agent_id=agent_id,
        params=params,
        wait=wait,
        idempotency_key=idempotency_key,
        parent_workflow_id=parent_workflow_id,
        progress=progress,
        output_schema=template.get("output_schema"),
    )


def build_run(
    rt: Runtime, info: RunInfo, definition: WorkflowDef, params: dict[str, Any], **kwargs: Any
) -> WorkflowRun:
    """A WorkflowRun wired to this runtime's registry, writer, pool, engines and decisions."""
    return WorkflowRun(
        info=info,
        definition=definition,
        params=params,
        registry=rt.registry,
        emit=rt.writer.append,
        pool=rt.pool,
        services=rt.services_for(info.workflow_id, info.agent_id),
        plugin_settings=rt.settings.plugin_config,
        expressions=rt.expressions,
        decisions=rt.decisions,
        breakers=rt.breakers,
        **kwargs,
    )


async def revive_run(rt: Runtime, wf: dict[str, Any], *, interrupted: bool = False) -> WorkflowRun:
    """Rebuild a stored run that is not live here and start it again: completed steps are never re-run."""
    await rt.writer.drain()
    definition = load_definition(wf["definition"], rt.registry)
    states = await rt.db(rt.store.get_step_states, wf["id"])
    restored = {
        sid: StepResult(st["status"], st.get("output"), st.get("error"))
        for sid, st in states.items()
        if st["status"] in ("completed", "skipped")
    }
    # A step that started before (interrupted, failed, retried) runs again as its next attempt, marked a re-run.
    attempts = {sid: st.get("attempt") or 1 for sid, st in states.items() if sid not in restored}
    waits = await rt.db(rt.store.list_events, workflow_id=wf["id"], event_type="wait_started")
    deadlines = {e["step_id"]: e["payload"]["until"] for e in waits if e["payload"].get("until")}
    context = await rt.db(rt.store.get_context, wf["id"])
    template = None
    if wf.get("template_name"):
        template = await rt.db(rt.store.get_template, wf["template_name"], wf.get("template_version"))
    info = RunInfo(
        wf["id"], wf.get("name") or "", wf.get("template_name"), wf.get("template_version"), wf["agent_id"]
    )
    status = "suspended" if interrupted else wf["status"]
    run = build_run(
        rt,
        info,
        definition,
        wf.get("input_params") or {},
        context=context or dict(definition.context),
        restored=restored,
        attempts=attempts,
        deadlines=deadlines,
        status=status if status != "pending" else "suspended",
        output_schema=(template or {}).get("output_schema"),
    )
    rt.start_run(run)
    return run


async def start_run(
    rt: Runtime,
    *,
    definition: WorkflowDef,
    name: str,
    agent_id: str,
    params: dict[str, Any],
    template_name: str | None = None,
    template_version: str | None = None,
    wait: bool = True,
    idempotency_key: str | None = None,
    parent_workflow_id: str | None = None,
    progress: Progress | None = None,
    output_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a new run, execute it in the runtime's task group, and answer as `opcode.run` does."""
    workflow_id = str(uuid.uuid4())
    row = workflow_row(id=workflow_id, name=name, template_name=template_name, template_version=template_version,
                       definition=definition.raw, agent_id=agent_id, input_params=params,
                       parent_workflow_id=parent_workflow_id, idempotency_key=idempotency_key)
    if idempotency_key:
        # The unique key must be checked before the run starts, so this row is written on its own.
        await rt.db(rt.store.create_workflow, **{k: row[k] for k in CREATE_FIELDS})
    else:
        rt.writer.add_workflow(row)  # committed with the run's first events, in one transaction
    run = build_run(
        rt,
        RunInfo(workflow_id, name, template_name, template_version, agent_id),
        definition,
        params,
        output_schema=output_schema,
    )
    rt.start_run(run)
    if not wait:
        return {"workflow_id": workflow_id, "status": "active", "output": None, "started_at": None, "steps": {}}
    unsubscribe = _report_progress(rt, workflow_id, len(definition.steps), progress) if progress else None
    try:
        # Shielded: a client that disconnects cancels its own wait, never the run.
        await asyncio.shield(run.settled.wait())
    finally:
        if unsubscribe:
            unsubscribe()
    return run.result()


def _report_progress(rt: Runtime, workflow_id: str, total: int, progress: Progress) -> Callable[[], None]:
    """Call `progress(done, total)` each time a top-level step of the run finishes."""
    done = 0
    pending: set[asyncio.Task[None]] = set()

    def observe(event: dict[str, Any]) -> None:
        nonlocal done
        step_id = event.get("step_id") or ""
        if event["workflow_id"] != workflow_id or event["event_type"] not in STEP_DONE_EVENTS or "." in step_id:
            return
        done += 1
        task = asyncio.ensure_future(progress(done, total))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return rt.subscribe(observe)


async def _answer_for_existing(rt: Runtime, workflow_id: str, wait: bool) -> dict[str, Any]:
    task = rt.tasks.get(workflow_id)
    run = rt.runs.get(workflow_id)
    if task is not None and run is not None and wait:
        await asyncio.shield(run.settled.wait())
        return run.result()
    status = await workflow_status(rt, workflow_id=workflow_id)
    wf = status["workflow"]
    out = {k: wf.get(k) for k in ("workflow_id", "status", "output", "started_at", "completed_at")}
    out["steps"] = status["steps"]
    if wf.get("error"):
        out["error"] = wf["error"]
    return out


async def workflow_status(rt: Runtime, *, workflow_id: str) -> dict[str, Any]:
    """A run's status, steps, pending decisions, context and its latest events."""
    await rt.writer.drain()
    wf = await rt.db(rt.store.get_workflow, workflow_id)
    if wf is None:
        raise OpcodeError(NOT_FOUND, f"workflow {workflow_id!r} not found")
    states = await rt.db(rt.store.get_step_states, workflow_id)
    events = await rt.db(rt.store.list_events, workflow_id=workflow_id, limit=STATUS_EVENTS, newest_first=True)
    total = await rt.db(rt.store.count_events, workflow_id)
    context = await rt.db(rt.store.get_context, workflow_id)
    steps = {}
    for sid, st in states.items():
        entry = {
            "step_id": sid,
            "status": st["status"],
            "output": st.get("output"),
            "duration_ms": st.get("duration_ms"),
        }
        if st.get("error"):
            entry["error"] = st["error"]
        steps[sid] = entry
    summary = {
        "workflow_id": wf["id"],
        "name": wf.get("name"),
        "template_name": wf.get("template_name"),
        "template_version": wf.get("template_version"),
        "agent_id": wf.get("agent_id"),
        "parent_workflow_id": wf.get("parent_workflow_id"),
        "status": wf["status"],
        "output": wf.get("output"),
        "error": wf.get("error"),
        "created_at": wf.get("created_at"),
        "started_at": wf.get("started_at"),
        "completed_at": wf.get("completed_at"),
    }
    return {
        "workflow_id": wf["id"],
        "status": wf["status"],
        "workflow": summary,
        "steps": steps,
        "pending_decisions": [
            decision_view(d) for d in await rt.db(rt.store.list_decisions, workflow_id, status="pending")
        ],
        "context": context or (wf.get("definition") or {}).get("context") or {},
        "events": list(reversed(events)),
        "events_total": total,
    }


async def query(rt: Runtime, *, resource: str, filter: dict[str, Any] | None = None) -> dict[str, Any]:
    """List workflows, events, templates or actions, answered as `{resource: [...]}`."""
    f = dict(filter or {})
    limit = f.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValidationError(
            "filter.limit must be a positive integer",
            [{"path": "filter.limit", "message": "must be a positive integer"}],
        )
    if resource == "workflows":
        await rt.writer.drain()
        rows = await rt.db(
            rt.store.list_workflows,
            status=f.get("status"),
            agent_id=f.get("agent_id"),
            since=f.get("since"),
            limit=limit or 100,
        )
        return {"workflows": [_workflow_row(r) for r in rows]}
    if resource == "events":
        if not f.get("workflow_id") and not f.get("event_type"):
            raise ValidationError(
                "an events query needs filter.workflow_id or filter.event_type",
                [{"path": "filter", "message": "needs workflow_id or event_type"}],
            )
        await rt.writer.drain()
        rows = await rt.db(
            rt.store.list_events,
            workflow_id=f.get("workflow_id"),
            step_id=f.get("step_id"),
            event_type=f.get("event_type"),
            since=f.get("since"),
            limit=limit,
        )
        return {"events": rows}
    if resource == "templates":
        rows = await rt.db(rt.store.list_templates, name=f.get("name"), agent_id=f.get("agent_id"), limit=limit or 100)
        return {"templates": rows}
    if resource == "actions":
        return {"actions": rt.registry.describe_actions(name=f.get("name"), plugin=f.get("plugin"))}
    raise ValidationError(
        f"unknown resource {resource!r} (expected one of {', '.join(RESOURCES)})",
        [{"path": "resource", "message": f"expected one of {', '.join(RESOURCES)}"}],
    )


async def send_signal(rt: Runtime, **arguments: Any) -> dict[str, Any]:
    """Deliver a signal (see `opcode_core.signals`)."""
    from opcode_core.signals import send_signal as deliver

    return await deliver(rt, **arguments)


async def render_diagram(
    rt: Runtime,
    *,
    format: str,
    template_name: str | None = None,
    workflow_id: str | None = None,
    version: str | None = None,
    include_status: bool = True,
) -> dict[str, Any]:
    """Draw a template, or a run with its step statuses, as ascii, mermaid or a PNG: `{format, diagram}`."""
    # Pillow and grandalf load only when a diagram is asked for.
    from opcode_core import diagrams

    if format not in diagrams.FORMATS:
        raise ValidationError(f"unknown format {format!r} (expected one of {', '.join(diagrams.FORMATS)})",
                              [{"path": "format", "message": f"expected one of {', '.join(diagrams.FORMATS)}"}])
    if bool(template_name) == bool(workflow_id):
        raise ValidationError("give exactly one of template_name or workflow_id",
                              [{"path": "template_name", "message": "exactly one of template_name, workflow_id"}])
    if workflow_id:
        if version:
            raise ValidationError("version goes with template_name; a run is drawn from the definition it ran",
                                  [{"path": "version", "message": "only with template_name"}])
        await rt.writer.drain()
        wf = await rt.db(rt.store.get_workflow, workflow_id)
        if wf is None:
            raise OpcodeError(NOT_FOUND, f"workflow {workflow_id!r} not found")
        states = await rt.db(rt.store.get_step_states, workflow_id) if include_status else None
        name = " ".join(filter(None, [wf.get("template_name") or wf.get("name"), wf.get("template_version")]))
        title = " · ".join(filter(None, [name, f"run {wf['id']}", wf["status"] if include_status else None]))
        diagram = diagrams.build_diagram(wf.get("definition") or {}, rt.registry.step_types, states=states,
                                         title=title, status=wf["status"] if include_status else None)
    else:
        template = await rt.db(rt.store.get_template, template_name, version)
        if template is None:
            which = f"version {version} of " if version else ""
            raise OpcodeError(NOT_FOUND, f"{which}template {template_name!r} not found")
        diagram = diagrams.build_diagram(template["definition"], rt.registry.step_types,
                                         title=f"{template_name} {template['version']}")
    # Layout and PNG encoding are CPU work: off the event loop, so other runs and tools keep moving.
    return await asyncio.to_thread(diagrams.render, diagram, format)


def _workflow_row(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "name",
        "template_name",
        "template_version",
        "status",
        "agent_id",
        "parent_workflow_id",
        "output",
        "error",
        "created_at",
        "started_at",
        "completed_at",
    )
    return {"workflow_id": row["id"], **{k: row.get(k) for k in keys}}


def _check_schema(field_name: str, schema: Any) -> None:
    if schema is None:
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValidationError(
            f"{field_name} is not a valid JSON Schema: {exc.message}", [{"path": field_name, "message": exc.message}]
        ) from None


def _validate_against(path: str, schema: dict[str, Any], value: Any) -> None:
    problems = schema_problems(Draft202012Validator(schema), value, path)
    if problems:
        raise OpcodeError(
            VALIDATION_ERROR,
            f"params do not match the template's input_schema: {summarize(problems)}",
            details={"problems": problems},
        )

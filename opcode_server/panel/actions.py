"""The panel's forms: the same service functions as the MCP tools, called as the agent `panel` (type human)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opcode_core import panel_service as ps
from opcode_core import service
from opcode_core.errors import NOT_FOUND, OpcodeError
from opcode_server.panel.pages import Pages
from opcode_server.panel.render import render

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime

log = logging.getLogger("opcode.panel")

# A signal answers once the run settles (SPEC §3); the panel answers sooner and the live feed shows the rest.
SIGNAL_WAIT_S = 1.0
DEFINE_KEYS = ("description", "input_schema", "output_schema", "triggers")


def field(form: FormData, name: str) -> str:
    """A text field of the form, stripped ('' when absent or a file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def redirect(path: str, notice: str | None = None) -> RedirectResponse:
    """303 to a panel page, with a notice key for it to show."""
    if notice:
        path += ("&" if "?" in path else "?") + f"notice={notice}"
    return RedirectResponse(path, status_code=303)


def problems_of(error: OpcodeError) -> list[dict[str, str]]:
    """Every problem an error lists, each with its path; the message alone when it lists none."""
    details = error.details if isinstance(error.details, dict) else {}
    problems = details.get("problems") or []
    if problems:
        return [{"path": str(p.get("path", "")), "message": str(p.get("message", ""))} for p in problems]
    return [{"path": "", "message": f"[{error.code}] {error.message}"}]


class Actions:
    """POST endpoints; each is wrapped by `security.protected` (Origin check and CSRF token) when routed."""

    def __init__(self, runtime: Runtime, pages: Pages) -> None:
        self.rt = runtime
        self.pages = pages
        self._background: set[asyncio.Task[Any]] = set()

    async def _signal(self, **arguments: Any) -> dict[str, Any] | None:
        """`opcode.signal` as the panel's agent; None when the run is still settling after SIGNAL_WAIT_S."""
        agent = await ps.ensure_panel_agent(self.rt)
        task = asyncio.ensure_future(service.send_signal(self.rt, agent_id=agent, **arguments))
        self._background.add(task)
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=SIGNAL_WAIT_S)
        return task.result() if task in done else None

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Seen by the browser when it came back in time; logged here for the case it came later.
            log.info("panel signal ended with %s", task.exception())

    # -- workflows -------------------------------------------------------------------------------------------

    async def cancel(self, request: Request, form: FormData) -> Response:
        """Send a `cancel` signal, exactly as `opcode.signal` does."""
        wid = request.path_params["workflow_id"]
        try:
            await self._signal(workflow_id=wid, signal_type="cancel", payload={},
                               reasoning=field(form, "reasoning") or None)
        except OpcodeError as exc:
            return render(request, "error.html", {"error": exc}, status_code=409 if exc.code != NOT_FOUND else 404)
        return redirect(f"/workflows/{quote(wid)}", "cancelled")

    async def rerun(self, request: Request, form: FormData) -> Response:
        """Start the same template version again with the same params."""
        try:
            started = await ps.rerun(self.rt, request.path_params["workflow_id"])
        except OpcodeError as exc:
            return render(request, "error.html", {"error": exc}, status_code=404 if exc.code == NOT_FOUND else 400)
        return redirect(f"/workflows/{quote(started['workflow_id'])}", "rerun")

    # -- decisions -------------------------------------------------------------------------------------------

    async def resolve(self, request: Request, form: FormData) -> Response:
        """Resolve a pending decision with a choice and reasoning (a `decision` signal)."""
        decision = await self.rt.db(self.rt.store.get_decision, request.path_params["decision_id"])
        if decision is None:
            return render(request, "error.html", {"error": OpcodeError(NOT_FOUND, "no such decision")},
                          status_code=404)
        choice = field(form, "choice")
        reasoning = field(form, "reasoning") or None
        error: OpcodeError | None = None
        try:
            await self._signal(workflow_id=decision["workflow_id"], signal_type="decision",
                               step_id=decision["step_id"], payload={"choice": choice}, reasoning=reasoning)
        except OpcodeError as exc:
            error = exc
        if request.headers.get("hx-request"):
            fresh = await self.rt.db(self.rt.store.get_decision, decision["id"])
            card = {**(fresh or decision), "workflow_id": decision["workflow_id"]}
            return render(request, "_decision_card.html",
                          {"d": card, "error": error, "form": {"choice": choice, "reasoning": reasoning or ""}})
        if error is not None:
            return render(request, "error.html", {"error": error}, status_code=400)
        return redirect(f"/workflows/{quote(decision['workflow_id'])}", "resolved")

    # -- templates -------------------------------------------------------------------------------------------

    async def define(self, request: Request, form: FormData) -> Response:
        """Store a pasted definition as the next version of a template; every problem is shown with its path."""
        values = {"name": field(form, "name"), "description": field(form, "description"),
                  "definition": form.get("definition") if isinstance(form.get("definition"), str) else ""}
        errors: list[dict[str, str]] = []
        arguments: dict[str, Any] = {}
        pasted: Any = None
        if not values["definition"].strip():
            errors.append({"path": "definition", "message": "required: paste the workflow's JSON"})
        else:
            try:
                pasted = json.loads(values["definition"])
            except json.JSONDecodeError as exc:
                errors.append({"path": "definition", "message": f"not valid JSON: line {exc.lineno}, "
                                                                f"column {exc.colno}: {exc.msg}"})
        if isinstance(pasted, dict) and isinstance(pasted.get("definition"), dict):
            # The arguments of `opcode.define` pasted whole: name and schemas come with them.
            arguments = {k: pasted[k] for k in DEFINE_KEYS if pasted.get(k) is not None}
            values["name"] = values["name"] or str(pasted.get("name") or "")
            pasted = pasted["definition"]
        if values["description"]:
            arguments["description"] = values["description"]
        if not values["name"]:
            errors.append({"path": "name", "message": "required"})
        if pasted is not None or not errors:
            try:
                # Checked even without a name, so that one submit shows every problem at once.
                await service.define_template(self.rt, name=values["name"] or "-", definition=pasted,
                                              agent_id=ps.PANEL_AGENT, validate_only=True, **arguments)
            except OpcodeError as exc:
                errors += problems_of(exc)
        if not errors:
            agent = await ps.ensure_panel_agent(self.rt)
            try:
                done = await service.define_template(self.rt, name=values["name"], definition=pasted, agent_id=agent,
                                                     **arguments)
            except OpcodeError as exc:
                errors = problems_of(exc)
            else:
                return redirect(f"/templates/{quote(done['name'], safe='')}?version={done['version']}", "defined")
        rows = await ps.template_summaries(self.rt)
        return render(request, "templates.html", {"page": "templates", "rows": rows, "form": values,
                                                  "errors": errors}, status_code=422)

    # -- scheduler -------------------------------------------------------------------------------------------

    async def save_job(self, request: Request, form: FormData) -> Response:
        """Create a job (`POST /scheduler`) or change one (`POST /scheduler/{job_id}`)."""
        job_id = request.path_params.get("job_id")
        values = {"template_name": field(form, "template_name"), "cron": " ".join(field(form, "cron").split()),
                  "timezone": field(form, "timezone") or "UTC", "agent_id": field(form, "agent_id"),
                  "params": field(form, "params"), "enabled": form.get("enabled") == "on"}
        try:
            await ps.save_job(self.rt, job_id=job_id, **values)
        except OpcodeError as exc:
            if exc.code == NOT_FOUND:
                raise
            context = await self.pages.scheduler_context({**values, "job_id": job_id}, problems_of(exc))
            return render(request, "scheduler.html", context, status_code=422)
        return redirect("/scheduler", "job-saved")

    async def toggle_job(self, request: Request, form: FormData) -> Response:
        """Enable or disable a job."""
        await ps.toggle_job(self.rt, request.path_params["job_id"])
        return redirect("/scheduler", "job-saved")

    async def delete_job(self, request: Request, form: FormData) -> Response:
        """Delete a job."""
        await ps.delete_job(self.rt, request.path_params["job_id"])
        return redirect("/scheduler", "job-deleted")

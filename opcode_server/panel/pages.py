"""The panel's pages and the fragments htmx re-reads when the live feed says something changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from opcode_core import panel_service as ps
from opcode_server.panel.render import render, to_json
from opcode_server.panel.svg import workflow_svg

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime


def int_param(request: Request, name: str, default: int = 1) -> int:
    """A positive integer query parameter; anything else is the default."""
    value = request.query_params.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else default


def text_param(request: Request, name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    """A non-empty query parameter (one of `allowed` when given), else None."""
    value = (request.query_params.get(name) or "").strip()
    if not value or (allowed is not None and value not in allowed):
        return None
    return value


class Pages:
    """GET endpoints: full pages, and `/parts/...` fragments of them."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # -- dashboard -------------------------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        """Counters, agents, pending decisions and the live activity feed."""
        return render(request, "dashboard.html", {"page": "dashboard", "d": await ps.dashboard(self.rt)})

    async def dashboard_summary(self, request: Request) -> Response:
        """The dashboard's counters, agents and decisions."""
        return render(request, "_dashboard_summary.html", {"d": await ps.dashboard(self.rt)})

    async def feed(self, request: Request) -> Response:
        """The latest events of every run, newest first."""
        return render(request, "_feed.html", await ps.recent_events(self.rt))

    # -- workflows -------------------------------------------------------------------------------------------

    async def _workflows(self, request: Request) -> dict[str, Any]:
        page = await ps.workflows_page(
            self.rt,
            status=text_param(request, "status", ps.STATUSES),
            agent_id=text_param(request, "agent_id"),
            page=int_param(request, "page"),
        )
        agents = [a["id"] for a in await self.rt.db(self.rt.store.list_agents)]
        return {"page": "workflows", "p": page, "statuses": ps.STATUSES, "agents": agents,
                "query": request.url.query, "terminal": ps.TERMINAL}

    async def workflows(self, request: Request) -> Response:
        """Runs, filtered by status and agent, a page at a time, with cancel and re-run."""
        return render(request, "workflows.html", await self._workflows(request))

    async def workflows_table(self, request: Request) -> Response:
        """The runs table alone."""
        return render(request, "_workflow_table.html", await self._workflows(request))

    async def _workflow(self, request: Request) -> dict[str, Any]:
        detail = await ps.workflow_detail(self.rt, request.path_params["workflow_id"])
        svg = workflow_svg(detail["definition"], self.rt.registry.step_types, states=detail["states"],
                           link_steps=True)
        return {"page": "workflows", "w": detail, "svg": svg, "terminal": ps.TERMINAL}

    async def workflow(self, request: Request) -> Response:
        """One run: its DAG in live colours, the step table, decisions and the event timeline."""
        return render(request, "workflow.html", await self._workflow(request))

    async def workflow_live(self, request: Request) -> Response:
        """The parts of a run's page that change as it advances (all but the timeline)."""
        return render(request, "_workflow_live.html", await self._workflow(request))

    async def workflow_timeline(self, request: Request) -> Response:
        """A run's event timeline."""
        wid = request.path_params["workflow_id"]
        events = await ps.timeline(self.rt, wid)
        return render(request, "_timeline.html", {"w": {"workflow_id": wid, "timeline": events}})

    # -- templates -------------------------------------------------------------------------------------------

    async def templates(self, request: Request) -> Response:
        """Templates, one row per name, and the form that defines one by pasting JSON."""
        rows = await ps.template_summaries(self.rt)
        return render(request, "templates.html", {"page": "templates", "rows": rows, "form": {}, "errors": []})

    async def template(self, request: Request) -> Response:
        """One template version: version selector, diagram preview and its definition."""
        name = request.path_params["name"]
        detail = await ps.template_detail(self.rt, name, text_param(request, "version"))
        svg = workflow_svg(detail["definition"], self.rt.registry.step_types)
        return render(request, "template.html", {"page": "templates", "t": detail, "svg": svg})

    # -- scheduler -------------------------------------------------------------------------------------------

    async def scheduler(self, request: Request) -> Response:
        """Scheduled jobs with their next and last run, the form to create one, or to edit one (`?edit=`)."""
        form: dict[str, Any] = {}
        edit = text_param(request, "edit")
        if edit:
            job = await ps.get_job(self.rt, edit)
            form = {**job, "job_id": job["id"], "params": to_json(job["params"]) if job["params"] else ""}
        return render(request, "scheduler.html", await self.scheduler_context(form, []))

    async def scheduler_context(self, form: dict[str, Any], errors: list[dict[str, str]]) -> dict[str, Any]:
        """What the scheduler page shows around its form."""
        names = [t["name"] for t in await ps.template_summaries(self.rt)]
        return {"page": "scheduler", "jobs": await ps.list_jobs(self.rt), "template_names": sorted(names),
                "form": form, "errors": errors}

    async def jobs_table(self, request: Request) -> Response:
        """The jobs table alone."""
        return render(request, "_job_table.html", {"jobs": await ps.list_jobs(self.rt)})

    # -- decisions, events, agents, plugins ------------------------------------------------------------------

    async def decisions(self, request: Request) -> Response:
        """Every pending decision, with its prompt, the data injected into it, and a form to resolve it."""
        rows = await ps.pending_decisions(self.rt)
        return render(request, "decisions.html", {"page": "decisions", "decisions": rows})

    async def decisions_list(self, request: Request) -> Response:
        """The pending decisions alone."""
        return render(request, "_decision_list.html", {"decisions": await ps.pending_decisions(self.rt)})

    async def events(self, request: Request) -> Response:
        """The event log, filtered by workflow and type, newest first."""
        page = await ps.events_page(
            self.rt,
            workflow_id=text_param(request, "workflow_id"),
            event_type=text_param(request, "event_type"),
            page=int_param(request, "page"),
        )
        types = await ps.event_types(self.rt)
        return render(request, "events.html", {"page": "events", "p": page, "types": types})

    async def agents(self, request: Request) -> Response:
        """Agents: id, type, first and last seen, and their runs by status."""
        rows = await ps.agent_table(self.rt)
        return render(request, "agents.html", {"page": "agents", "rows": rows, "statuses": ps.STATUSES})

    async def plugins(self, request: Request) -> Response:
        """Installed plugins: status, version, and the actions and step types each provides."""
        return render(request, "plugins.html", {"page": "plugins", "rows": ps.plugins(self.rt)})

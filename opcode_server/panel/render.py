"""Jinja2 templates of the panel, their filters, and the one function every page renders through."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from opcode_core.diagrams.styles import STATUS_STYLES, format_duration, status_style
from opcode_server.panel.security import csrf_token, set_csrf_cookie

HERE = Path(__file__).parent
JSON_PREVIEW = 160
NAV = (
    ("dashboard", "/", "Dashboard"),
    ("workflows", "/workflows", "Workflows"),
    ("templates", "/templates", "Templates"),
    ("decisions", "/decisions", "Decisions"),
    ("scheduler", "/scheduler", "Scheduler"),
    ("events", "/events", "Events"),
    ("agents", "/agents", "Agents"),
    ("plugins", "/plugins", "Plugins"),
)
# Notices a redirect may ask a page to show, by key: a link can never make the panel display text of its own.
NOTICES = {
    "defined": "Template stored.",
    "cancelled": "Cancel signal sent.",
    "rerun": "New run started.",
    "resolved": "Decision recorded.",
    "job-saved": "Job saved.",
    "job-deleted": "Job deleted.",
}
# Workflow statuses drawn with the step status of the same look (the diagrams' palette, in one place).
WORKFLOW_LOOK = {"active": "running", "cancelled": "skipped"}


def to_json(value: Any, indent: int | None = 2) -> str:
    """Pretty JSON for a `<pre>`; anything not JSON-able as its text."""
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str, sort_keys=False)


def json_preview(value: Any) -> str:
    """One line of JSON, clipped for a table cell."""
    text = to_json(value, indent=None)
    return text if len(text) <= JSON_PREVIEW else text[: JSON_PREVIEW - 1] + "…"


def short_time(value: str | None) -> str:
    """`14:03:22` for today (UTC), `2025-01-31 14:03` before."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def short_id(value: str | None) -> str:
    """The first 8 characters of a UUID, enough to tell runs apart on a page."""
    return (value or "")[:8]


def status_css() -> Markup:
    """CSS for status badges, from the diagrams' status palette so the badges match the DAG."""
    rules = [f".badge.st-{name}{{background:{s.fill};border-color:{s.stroke};color:{s.text}}}"
             for name, s in STATUS_STYLES.items()]
    for status, like in WORKFLOW_LOOK.items():
        s = status_style(like)
        rules.append(f".badge.st-{status}{{background:{s.fill};border-color:{s.stroke};color:{s.text}}}")
    return Markup("".join(rules))


def event_summary(event: dict[str, Any]) -> str:
    """A few words on what an event says, for feeds and timelines."""
    payload = event.get("payload") or {}
    kind = event.get("event_type", "")
    error = payload.get("error")
    if isinstance(error, dict):
        return f"[{error.get('code')}] {error.get('message')}"
    if kind == "decision_requested":
        prompt = (payload.get("context") or {}).get("prompt")
        return str(prompt or "decision requested")
    if kind == "decision_resolved":
        return f"chose {payload.get('choice')!r}" + (f" ({payload['reasoning']})" if payload.get("reasoning") else "")
    if kind == "signal_received":
        return f"{payload.get('signal_type')} signal"
    if kind == "custom_event":
        return str(payload.get("event_type") or "")
    if kind in ("step_completed", "step_failed") and payload.get("duration_ms") is not None:
        return format_duration(payload["duration_ms"])
    if payload.get("reason"):
        return str(payload["reason"])
    return ""


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    json=to_json, preview=json_preview, time=short_time, sid=short_id, duration=format_duration,
    summary=event_summary,
)
templates.env.globals.update(nav=NAV, status_css=status_css)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """Render a page or fragment with the CSRF token, and set the token's cookie when it was just minted."""
    context = {"csrf": csrf_token(request), "notice": NOTICES.get(request.query_params.get("notice", "")), **context}
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    return set_csrf_cookie(request, response)

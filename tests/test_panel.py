"""The web panel over HTTP: pages, template validation, CSRF and Host checks, and parity with MCP signals."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from opcode_server.panel import panel_routes
from tests.conftest import (
    OPCODE,
    ServerProcess,
    free_port,
    opcode_env,
    start_server,
    stop_server,
    write_settings,
)
from tests.test_mcp_e2e import call, connect

pytestmark = pytest.mark.slow

SECRET = "sup3r-s3cret-value"
GATED = {
    "steps": [
        {"id": "prepare", "action": "workflow.log", "params": {"message": "preparing ${{inputs.version}}"}},
        {"id": "approve", "type": "reasoning", "depends_on": ["prepare"], "config": {
            "prompt_context": "Ship ${{inputs.version}}?",
            "data_inject": {"version": "inputs.version"},
            "options": [{"id": "ship", "description": "deploy"}, {"id": "hold"}],
        }},
        {"id": "finish", "action": "workflow.log", "depends_on": ["approve"],
         "params": {"message": "chose ${{steps.approve.output.choice}}"}},
    ]
}
INVALID = {
    "timeout": "5 minutes",
    "steps": [
        {"id": "a", "action": "no.such_action"},
        {"id": "a", "action": "workflow.log", "params": {"message": "x"}, "depends_on": ["ghost"]},
    ],
}
# Values that vary between two otherwise identical runs.
VOLATILE = {"decision_id", "duration_ms", "timestamp", "started_at", "completed_at", "until", "timeout_at",
            "created_at", "id", "workflow_id"}


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose settings hold a plugin setting with a secret-looking key."""
    home = tmp_path_factory.mktemp("panel-home")
    write_settings(home, {"plugins": {"settings": {"http": {"api_token": SECRET, "timeout_s": 5}}}})
    proc = start_server(home)
    try:
        yield proc
    finally:
        stop_server(proc.process)


@pytest.fixture(scope="module")
def browser(panel: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client that has loaded a page, so it holds the CSRF cookie like a browser would."""
    with httpx.Client(base_url=panel.base_url, timeout=30) as client:
        assert client.get("/").status_code == 200
        assert client.cookies.get("opcode_csrf")
        yield client


def token(client: httpx.Client) -> str:
    """The CSRF token the panel put in its cookie (and in every form it renders)."""
    return client.cookies["opcode_csrf"]


async def mcp(server: ServerProcess, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One MCP tool call over Streamable HTTP."""
    async with connect(server, "streamable_http") as session:
        return await call(session, tool, args)


async def settle(server: ServerProcess, workflow_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    """`opcode.status` once the run reaches one of `statuses` (bounded)."""
    deadline = time.monotonic() + timeout
    async with connect(server, "streamable_http") as session:
        while True:
            status = await call(session, "opcode.status", {"workflow_id": workflow_id})
            if status["status"] in statuses:
                return status
            assert time.monotonic() < deadline, f"{workflow_id} stayed {status['status']}"
            await asyncio.sleep(0.1)


async def gated_run(server: ServerProcess, name: str) -> str:
    """Start a run of the gated template and return its id once it waits on the decision."""
    run = await mcp(server, "opcode.run", {"template_name": name, "agent_id": "tester", "params": {"version": "1.0"}})
    assert run["status"] == "suspended", run
    return run["workflow_id"]


def normalized(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Events without what differs between two runs (ids, times, durations)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [(e["event_type"], e["step_id"], e["agent_id"], strip(e["payload"])) for e in events]


async def all_events(server: ServerProcess, workflow_id: str) -> list[dict[str, Any]]:
    """Every event of a run, in order."""
    found = await mcp(server, "opcode.query", {"resource": "events", "filter": {"workflow_id": workflow_id}})
    return found["events"]


# -- pages ---------------------------------------------------------------------------------------------------


async def test_every_page_renders(panel: ServerProcess, browser: httpx.Client) -> None:
    await mcp(panel, "opcode.define", {"name": "pages", "definition": GATED, "agent_id": "tester"})
    wid = await gated_run(panel, "pages")
    decision = (await mcp(panel, "opcode.status", {"workflow_id": wid}))["pending_decisions"][0]
    pages = [
        "/", "/workflows", "/workflows?status=suspended&agent_id=tester&page=1", "/workflows?status=bogus&page=x",
        f"/workflows/{wid}", "/templates", "/templates/pages", "/templates/pages?version=v1", "/decisions",
        "/events", f"/events?workflow_id={wid}&event_type=step_completed", "/events?page=2", "/agents",
        "/plugins", "/scheduler", "/parts/scheduler", "/parts/dashboard", "/parts/feed",
        "/parts/workflows?status=suspended", f"/parts/workflows/{wid}", f"/parts/workflows/{wid}/timeline",
        "/parts/decisions",
    ]
    for path in pages:
        response = browser.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        # Works offline: nothing is fetched from another host.
        assert not re.search(r'(src|href)="(https?:)?//', response.text), path
    detail = browser.get(f"/workflows/{wid}").text
    assert "<svg" in detail and 'data-step="approve" data-status="suspended"' in detail
    assert "Ship 1.0?" in detail and f'id="decision-{decision["id"]}"' in detail
    assert 'data-step="prepare" data-status="completed"' in detail
    assert "Ship 1.0?" in browser.get("/decisions").text
    assert "pages" in browser.get("/templates").text
    for missing in ("/workflows/nope", "/templates/nope", "/templates/pages?version=v9"):
        assert browser.get(missing).status_code == 404


async def test_workflows_filter_and_pages(panel: ServerProcess, browser: httpx.Client) -> None:
    quick = {"steps": [{"id": "only", "action": "workflow.log", "params": {"message": "x"}}]}
    async with connect(panel, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "quick", "definition": quick, "agent_id": "pager"})
        ids = [(await call(session, "opcode.run", {"template_name": "quick", "agent_id": "pager"}))["workflow_id"]
               for _ in range(27)]

    def rows(html: str) -> list[str]:
        return re.findall(r'<tr data-workflow="([0-9a-f-]+)">', html)

    first = browser.get("/workflows?agent_id=pager&status=completed").text
    assert rows(first) == ids[::-1][:25] and "Page 1 of 2 · 27 in all" in first
    assert 'href="/workflows?status=completed&amp;agent_id=pager&amp;page=2"' in first
    second = browser.get("/workflows?agent_id=pager&status=completed&page=2").text
    assert rows(second) == ids[::-1][25:] and "Page 2 of 2" in second
    assert rows(browser.get("/workflows?agent_id=pager&status=failed").text) == []
    # The events page filters by run and by type.
    events = browser.get(f"/events?workflow_id={ids[0]}&event_type=step_completed").text
    assert events.count("<tr>") == 2 and ">step_completed</a>" in events  # header row + one event


def test_static_assets_are_served_from_the_package(browser: httpx.Client) -> None:
    for name, kind in (("htmx.min.js", "javascript"), ("sse.js", "javascript"), ("panel.js", "javascript"),
                       ("panel.css", "text/css"), ("favicon.svg", "image/svg")):
        response = browser.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"], name
    assert 'version:"2.0.11"' in browser.get("/static/htmx.min.js").text
    assert "defineExtension('sse'" in browser.get("/static/sse.js").text


def test_security_headers(browser: httpx.Client) -> None:
    headers = browser.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    cookie = next(c for c in browser.cookies.jar if c.name == "opcode_csrf")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "strict"


def test_secret_setting_values_are_never_rendered(browser: httpx.Client) -> None:
    page = browser.get("/plugins").text
    assert SECRET not in page
    assert "api_token" in page and "***" in page and "timeout_s" in page


async def test_vault_secret_never_appears_on_a_page(tmp_path: Path) -> None:
    home, key, value = tmp_path / "vault-home", "a long passphrase", "s3cr3t-t0ken-4242"
    home.mkdir()
    subprocess.run([OPCODE, "secrets", "set", "API_TOKEN", value], env=opcode_env(home, OPCODE_VAULT_KEY=key),
                   check=True, capture_output=True, timeout=60)
    proc = start_server(home, OPCODE_VAULT_KEY=key)
    try:
        leaky = {"steps": [{"id": "echo", "action": "shell.exec", "params": {
            "command": "sh", "args": ["-c", 'printf "%s" "$TOKEN"'], "env": {"TOKEN": "${{secrets.API_TOKEN}}"}}}]}
        await mcp(proc, "opcode.define", {"name": "leaky", "definition": leaky, "agent_id": "tester"})
        run = await mcp(proc, "opcode.run", {"template_name": "leaky", "agent_id": "tester"})
        assert run["status"] == "completed", run
        wid = run["workflow_id"]
        with httpx.Client(base_url=proc.base_url, timeout=30) as client:
            for path in ("/", f"/workflows/{wid}", f"/parts/workflows/{wid}", f"/parts/workflows/{wid}/timeline",
                         f"/events?workflow_id={wid}", "/parts/feed", "/templates/leaky"):
                page = client.get(path)
                assert page.status_code == 200 and value not in page.text, path
            assert "***" in client.get(f"/workflows/{wid}").text
    finally:
        stop_server(proc.process)


# -- templates -----------------------------------------------------------------------------------------------


def test_invalid_template_shows_every_error_with_its_path(browser: httpx.Client) -> None:
    response = browser.post("/templates", data={"csrf_token": token(browser), "name": "",
                                                "definition": json.dumps(INVALID)})
    assert response.status_code == 422
    page = response.text
    assert "5 problems" in page
    for path, message in (
        ("name", "required"),
        ("definition.timeout", "invalid duration"),
        ("definition.steps[0].action", "unknown action"),
        ("definition.steps[1].id", "duplicate step id"),
        ("definition.steps[1].depends_on[0]", "unknown step"),
    ):
        assert re.search(rf'<code class="path">{re.escape(path)}</code>[^<]*{message}', page), (path, page)
    # What was pasted stays in the form, to fix and resubmit.
    assert "no.such_action" in page


def test_template_json_syntax_error_is_shown_with_line_and_column(browser: httpx.Client) -> None:
    response = browser.post("/templates", data={"csrf_token": token(browser), "name": "broken",
                                                "definition": '{"steps": [\n  {"id": "a",}\n]}'})
    assert response.status_code == 422
    assert re.search(r'<code class="path">definition</code> not valid JSON: line 2, column 14', response.text)


async def test_valid_template_is_stored_with_the_next_version(panel: ServerProcess, browser: httpx.Client) -> None:
    definition = {"steps": [{"id": "hello", "action": "workflow.log", "params": {"message": "hi"}}]}
    for version in ("v1", "v2"):
        response = browser.post("/templates", data={"csrf_token": token(browser), "name": "pasted",
                                                    "description": "from the panel",
                                                    "definition": json.dumps(definition)})
        assert response.status_code == 303
        assert response.headers["location"] == f"/templates/pasted?version={version}&notice=defined"
    # The arguments of opcode.define, pasted whole, work too.
    whole = {"name": "pasted", "definition": definition, "input_schema": {"type": "object"}}
    response = browser.post("/templates", data={"csrf_token": token(browser), "definition": json.dumps(whole)})
    assert response.headers["location"].startswith("/templates/pasted?version=v3")
    found = await mcp(panel, "opcode.query", {"resource": "templates", "filter": {"name": "pasted"}})
    assert [(t["version"], t["agent_id"]) for t in found["templates"]] == [("v3", "panel"), ("v2", "panel"),
                                                                            ("v1", "panel")]
    assert found["templates"][0]["input_schema"] == {"type": "object"}
    assert "Template stored." in browser.get(response.headers["location"]).text


# -- scheduler -----------------------------------------------------------------------------------------------


async def test_scheduler_jobs_crud(panel: ServerProcess, browser: httpx.Client) -> None:
    await mcp(panel, "opcode.define", {"name": "nightly", "definition": GATED, "agent_id": "tester"})
    csrf = token(browser)
    bad = browser.post("/scheduler", data={"csrf_token": csrf, "template_name": "ghost", "cron": "every day",
                                           "timezone": "Mars/Olympus", "agent_id": "", "params": "[1]"})
    assert bad.status_code == 422
    for path in ("template_name", "cron", "timezone", "agent_id", "params"):
        assert f'<code class="path">{path}</code>' in bad.text, path
    assert "5 problems" in bad.text and "every day" in bad.text  # the form keeps what was typed

    made = browser.post("/scheduler", data={"csrf_token": csrf, "template_name": "nightly", "cron": "0 3 * * *",
                                            "timezone": "Europe/Paris", "agent_id": "night-ops",
                                            "params": '{"version": "2.0"}', "enabled": "on"})
    assert made.status_code == 303 and made.headers["location"] == "/scheduler?notice=job-saved"
    page = browser.get("/scheduler").text
    (job_id,) = re.findall(r'<tr data-job="([0-9a-f-]+)" data-enabled="true">', page)
    assert "0 3 * * *" in page and "Europe/Paris" in page and "night-ops" in page

    assert browser.post(f"/scheduler/{job_id}/toggle", data={"csrf_token": csrf}).status_code == 303
    assert f'<tr data-job="{job_id}" data-enabled="false">' in browser.get("/scheduler").text
    edit = browser.get(f"/scheduler?edit={job_id}").text
    assert 'value="0 3 * * *"' in edit and f'action="/scheduler/{job_id}"' in edit
    changed = browser.post(f"/scheduler/{job_id}", data={"csrf_token": csrf, "template_name": "nightly",
                                                         "cron": "*/30 * * * *", "timezone": "UTC",
                                                         "agent_id": "night-ops", "enabled": "on"})
    assert changed.status_code == 303
    page = browser.get("/parts/scheduler").text
    assert f'<tr data-job="{job_id}" data-enabled="true">' in page and "*/30 * * * *" in page
    assert browser.post(f"/scheduler/{job_id}/delete", data={"csrf_token": csrf}).status_code == 303
    assert job_id not in browser.get("/scheduler").text
    assert browser.post(f"/scheduler/{job_id}/delete", data={"csrf_token": csrf}).status_code == 404
    assert browser.get(f"/scheduler?edit={job_id}").status_code == 404


# -- CSRF, Origin and Host -----------------------------------------------------------------------------------


def post_paths() -> list[str]:
    return [r.path.replace("{workflow_id}", "x").replace("{decision_id}", "x").replace("{job_id}", "x")
            for r in panel_routes(_FakeRuntime()) if getattr(r, "methods", None) == {"POST"}]


class _FakeRuntime:
    settings = None


def test_every_route_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "panel.md").read_text()
    for route in panel_routes(_FakeRuntime()):
        path = re.sub(r"\{(workflow|decision|job)_id\}", "{id}", route.path)
        if path == "/static":
            path = "/static/…"
        assert f"`{path}`" in doc or f"`{path}?" in doc, path


@pytest.mark.parametrize("path", post_paths())
def test_post_without_csrf_token_is_refused(browser: httpx.Client, path: str) -> None:
    assert browser.post(path, data={"name": "x"}).status_code == 403
    assert browser.post(path, data={"csrf_token": "wrong" * 10}).status_code == 403
    # A client without the cookie cannot make up a token either.
    with httpx.Client(base_url=str(browser.base_url)) as stranger:
        assert stranger.post(path, data={"csrf_token": token(browser)}).status_code == 403


def test_cross_origin_post_is_refused_even_with_the_token(browser: httpx.Client) -> None:
    data = {"csrf_token": token(browser), "name": "x", "definition": "{}"}
    assert browser.post("/templates", data=data, headers={"Origin": "http://evil.example"}).status_code == 403
    assert browser.post("/templates", data=data, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    own = str(browser.base_url).rstrip("/")
    assert browser.post("/templates", data=data, headers={"Origin": own}).status_code == 422


def test_foreign_host_is_refused(browser: httpx.Client) -> None:
    assert browser.get("/", headers={"Host": "evil.example"}).status_code == 421
    assert browser.get("/live", headers={"Host": "evil.example:80"}).status_code == 421


def test_panel_off_leaves_mcp_and_health(tmp_path: Path) -> None:
    proc = start_server(tmp_path, OPCODE_PANEL="false")
    try:
        assert httpx.get(f"{proc.base_url}/").status_code == 404
        assert httpx.get(f"{proc.base_url}/static/htmx.min.js").status_code == 404
        assert httpx.get(f"{proc.base_url}/health").status_code == 200
    finally:
        stop_server(proc.process)


# -- parity with MCP -----------------------------------------------------------------------------------------


async def test_resolve_in_the_panel_is_the_mcp_decision_signal(panel: ServerProcess, browser: httpx.Client) -> None:
    await mcp(panel, "opcode.define", {"name": "parity-decide", "definition": GATED, "agent_id": "tester"})
    in_panel, over_mcp = await gated_run(panel, "parity-decide"), await gated_run(panel, "parity-decide")

    decision = (await mcp(panel, "opcode.status", {"workflow_id": in_panel}))["pending_decisions"][0]
    bad = browser.post(f"/decisions/{decision['id']}/resolve", headers={"HX-Request": "true"},
                       data={"csrf_token": token(browser), "choice": "maybe"})
    assert bad.status_code == 200 and "is not an option" in bad.text and 'data-status="pending"' in bad.text
    response = browser.post(f"/decisions/{decision['id']}/resolve",
                            data={"csrf_token": token(browser), "choice": "ship", "reasoning": "looks good"})
    assert response.status_code == 303 and response.headers["location"] == f"/workflows/{in_panel}?notice=resolved"
    await mcp(panel, "opcode.signal", {"workflow_id": over_mcp, "signal_type": "decision", "step_id": "approve",
                                       "payload": {"choice": "ship"}, "agent_id": "panel",
                                       "reasoning": "looks good"})
    panel_status = await settle(panel, in_panel, "completed")
    await settle(panel, over_mcp, "completed")
    assert panel_status["steps"]["approve"]["output"]["resolved_by"] == "panel"
    assert normalized(await all_events(panel, in_panel)) == normalized(await all_events(panel, over_mcp))
    resolved = [e for e in await all_events(panel, in_panel) if e["event_type"] == "decision_resolved"]
    assert resolved[0]["agent_id"] == "panel" and resolved[0]["payload"]["choice"] == "ship"
    # The panel's agent is a human.
    assert re.search(r">panel</a></td>\s*<td><span class=\"chip\">human</span>", browser.get("/agents").text)
    # Resolving again is refused, as over MCP.
    again = browser.post(f"/decisions/{decision['id']}/resolve", headers={"HX-Request": "true"},
                         data={"csrf_token": token(browser), "choice": "ship"})
    assert "[CONFLICT]" in again.text and "takes no more signals" in again.text


async def test_cancel_in_the_panel_is_the_mcp_cancel_signal(panel: ServerProcess, browser: httpx.Client) -> None:
    await mcp(panel, "opcode.define", {"name": "parity-cancel", "definition": GATED, "agent_id": "tester"})
    in_panel, over_mcp = await gated_run(panel, "parity-cancel"), await gated_run(panel, "parity-cancel")
    response = browser.post(f"/workflows/{in_panel}/cancel", data={"csrf_token": token(browser)})
    assert response.status_code == 303 and response.headers["location"] == f"/workflows/{in_panel}?notice=cancelled"
    await mcp(panel, "opcode.signal", {"workflow_id": over_mcp, "signal_type": "cancel", "payload": {},
                                       "agent_id": "panel"})
    await settle(panel, in_panel, "cancelled")
    await settle(panel, over_mcp, "cancelled")
    assert normalized(await all_events(panel, in_panel)) == normalized(await all_events(panel, over_mcp))
    events = await all_events(panel, in_panel)
    signal = next(e for e in events if e["event_type"] == "signal_received")
    assert signal["agent_id"] == "panel" and signal["payload"]["signal_type"] == "cancel"
    assert events[-1]["event_type"] == "workflow_cancelled" and "panel" in json.dumps(events[-1]["payload"])
    # A finished run refuses another cancel, and the page says why.
    again = browser.post(f"/workflows/{in_panel}/cancel", data={"csrf_token": token(browser)})
    assert again.status_code == 409 and "takes no more signals" in again.text


async def test_rerun_starts_the_same_version_with_the_same_params(panel: ServerProcess,
                                                                 browser: httpx.Client) -> None:
    await mcp(panel, "opcode.define", {"name": "again", "definition": GATED, "agent_id": "tester"})
    first = await gated_run(panel, "again")
    await mcp(panel, "opcode.define", {"name": "again", "definition": GATED, "agent_id": "tester"})  # v2
    response = browser.post(f"/workflows/{first}/rerun", data={"csrf_token": token(browser)})
    assert response.status_code == 303
    second = response.headers["location"].split("/")[-1].split("?")[0]
    status = await settle(panel, second, "suspended")
    assert status["workflow"]["template_version"] == "v1" and status["workflow"]["agent_id"] == "panel"
    assert status["pending_decisions"][0]["context"]["data"] == {"version": "1.0"}


# -- the live feed -------------------------------------------------------------------------------------------


def read_events(lines: Iterator[str], wanted: str, deadline: float) -> list[tuple[str, str]]:
    """SSE events up to and including the first of type `wanted`."""
    seen: list[tuple[str, str]] = []
    kind, data = "", []
    for line in lines:
        assert time.monotonic() < deadline, f"no {wanted} event in time; saw {seen}"
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and kind:
            seen.append((kind, "\n".join(data)))
            if kind == wanted:
                return seen
            kind, data = "", []
    raise AssertionError(f"stream ended before {wanted}; saw {seen}")


async def test_live_feed_streams_rows_and_change_hints(panel: ServerProcess) -> None:
    await mcp(panel, "opcode.define", {"name": "live", "definition": GATED, "agent_id": "tester"})

    def listen(started: threading.Event, out: list[Any]) -> None:
        with httpx.Client(base_url=panel.base_url, timeout=10) as client, client.stream("GET", "/live") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            deadline = time.monotonic() + 20
            read_events(lines, "ready", deadline)
            started.set()
            out.extend(read_events(lines, "changed", deadline))

    started, seen = threading.Event(), []
    thread = threading.Thread(target=listen, args=(started, seen), daemon=True)
    thread.start()
    assert await asyncio.to_thread(started.wait, 10)
    wid = await gated_run(panel, "live")
    await asyncio.to_thread(thread.join, 20)
    assert not thread.is_alive()
    rows = [data for kind, data in seen if kind == "activity"]
    assert any(f'id="ev-{wid}-1"' in row and "workflow_started" in row for row in rows)
    assert json.loads(seen[-1][1]) == [wid]


def test_closed_stream_unsubscribes(tmp_path: Path) -> None:
    """A browser that goes away leaves no observer behind (in-process server, to count observers)."""
    from opcode_core.runtime import Runtime
    from opcode_core.settings import load_settings
    from opcode_server.app import create_app

    port = free_port()
    settings = load_settings({"OPCODE_HOME": str(tmp_path), "OPCODE_LOAD_PLUGINS": "",
                              "OPCODE_LISTEN_ADDR": f"127.0.0.1:{port}"})
    runtime = Runtime(settings)
    server = uvicorn.Server(uvicorn.Config(create_app(runtime, settings), host="127.0.0.1", port=port,
                                           log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        before = len(runtime._observers)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            with client.stream("GET", "/live") as stream:
                read_events(stream.iter_lines(), "ready", time.monotonic() + 10)
                assert len(runtime._observers) == before + 1
            while len(runtime._observers) != before:
                assert time.monotonic() < deadline, "the stream's observer stayed subscribed"
                time.sleep(0.05)
    finally:
        server.should_exit = True
        thread.join(15)

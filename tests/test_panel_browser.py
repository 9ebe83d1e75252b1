"""The panel in a real headless Chromium against a real `opcode serve`: live updates, resolving a decision.

Also `python -m tests.test_panel_browser DIR` (what `make screenshots` runs): seed a server with a few runs
and save screenshots of the dashboard and of a workflow page into DIR.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, start_server, stop_server
from tests.test_mcp_e2e import call, connect

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 15_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium); "
                                                 "CI installs it"),
]

RELEASE = {
    "context": {"intent": "ship a release once a human approves it"},
    "steps": [
        {"id": "build", "action": "shell.exec",
         "params": {"command": "echo", "args": ['{"artifact": "app-${{inputs.version}}.tar.gz", "size": 18231}']}},
        {"id": "checksum", "action": "crypto.hash", "depends_on": ["build"],
         "params": {"data": "${{steps.build.output.stdout.artifact}}"}},
        {"id": "tests", "action": "workflow.log", "depends_on": ["build"], "params": {"message": "tests passed"}},
        {"id": "approve", "type": "reasoning", "depends_on": ["checksum", "tests"], "config": {
            "prompt_context": "Release ${{inputs.version}} to production?",
            "data_inject": {"artifact": "steps.build.output.stdout", "sha256": "steps.checksum.output.hash"},
            "options": [{"id": "ship", "description": "deploy now"},
                        {"id": "hold", "description": "keep it in staging"}],
        }},
        {"id": "cool_down", "type": "wait", "depends_on": ["approve"], "config": {"duration": "1500ms"}},
        {"id": "route", "type": "condition", "depends_on": ["cool_down"], "config": {
            "expression": "steps['approve'].choice",
            "branches": {
                "ship": [{"id": "deploy", "action": "workflow.log", "params": {"message": "deploying"}}],
                "hold": [{"id": "notify", "action": "workflow.log", "params": {"message": "held back"}}],
            },
        }},
    ],
}


def run_async(coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
    """Run a coroutine on its own thread and loop (Playwright's sync API owns this thread's), bounded."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=timeout)


async def tool(server: ServerProcess, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """One MCP tool call with the official client over Streamable HTTP."""
    async with connect(server, "streamable_http") as session:
        return await call(session, name, args)


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A page of a fresh headless Chromium (Debian's, driven by Playwright), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS * 2)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.js_errors = errors
            yield page
        finally:
            browser.close()


def open_live(page: Any, url: str) -> None:
    """Load a panel page and wait until its live stream is open."""
    page.goto(url)
    page.wait_for_selector('body[data-live="open"]', timeout=WAIT_MS)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `opcode serve` with its own home."""
    proc = start_server(tmp_path / "home")
    try:
        yield proc
    finally:
        stop_server(proc.process)


def test_a_run_appears_live_and_is_resolved_in_the_browser(served: ServerProcess) -> None:
    from playwright.sync_api import expect

    run_async(tool(served, "opcode.define", {"name": "release", "definition": RELEASE, "agent_id": "release-bot"}))
    with chromium_page() as page:
        open_live(page, served.base_url + "/")
        page.evaluate("window.__samePage = true")

        # Started over MCP after the page loaded: it shows up without a reload.
        run = run_async(tool(served, "opcode.run", {"template_name": "release", "agent_id": "release-bot",
                                                    "params": {"version": "1.4.2"}}))
        wid = run["workflow_id"]
        assert run["status"] == "suspended"
        feed_link = page.locator(f'#feed a[href="/workflows/{wid}"]').first
        expect(feed_link).to_be_visible(timeout=WAIT_MS)
        expect(page.locator(f'#summary tr[data-workflow="{wid}"] .badge')).to_have_text("suspended", timeout=WAIT_MS)
        expect(page.locator(f'#summary .decisions a[href="/workflows/{wid}"]')).to_be_visible(timeout=WAIT_MS)
        expect(page.locator('#summary .counter[data-status="suspended"] .n')).to_have_text("1", timeout=WAIT_MS)
        assert page.evaluate("window.__samePage") is True

        # Its page: the DAG in status colours, waiting on the decision.
        feed_link.click()
        page.wait_for_url(f"**/workflows/{wid}", timeout=WAIT_MS)
        page.wait_for_selector('body[data-live="open"]', timeout=WAIT_MS)
        expect(page.locator("#run-head")).to_have_attribute("data-status", "suspended")
        expect(page.locator('svg.dag [data-step="approve"]')).to_have_attribute("data-status", "suspended")
        expect(page.locator('svg.dag [data-step="build"]')).to_have_attribute("data-status", "completed")
        expect(page.locator(".decision .prompt").first).to_have_text("Release 1.4.2 to production?")
        page.evaluate("window.__samePage = true")

        # Resolve it in the browser; the run completes live (the wait after the decision outlasts the answer).
        card = page.locator(".decision[data-status=pending]").first
        card.locator('input[value="ship"]').check()
        card.locator('textarea[name="reasoning"]').fill("checksums match")
        card.locator('button[type="submit"]').click()
        expect(page.locator("#run-head")).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
        expect(page.locator('svg.dag [data-step="route.ship.deploy"]')).to_have_attribute(
            "data-status", "completed", timeout=WAIT_MS)
        expect(page.locator('#timeline li[data-type="workflow_completed"]')).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator('#timeline li[data-type="decision_resolved"] .agent')).to_have_text("by panel")
        assert page.evaluate("window.__samePage") is True, "the page reloaded instead of updating live"
        assert not page.js_errors, page.js_errors

    status = run_async(tool(served, "opcode.status", {"workflow_id": wid}))
    assert status["status"] == "completed"
    resolved = [e for e in status["events"] if e["event_type"] == "decision_resolved"]
    assert resolved[0]["agent_id"] == "panel" and resolved[0]["payload"]["reasoning"] == "checksums match"


# -- make screenshots ----------------------------------------------------------------------------------------


FAILING = {"steps": [
    {"id": "fetch", "action": "shell.exec", "params": {"command": "sh", "args": ["-c", "echo fetching; exit 3"]}},
    {"id": "load", "action": "workflow.log", "depends_on": ["fetch"], "params": {"message": "loaded"}},
]}
SQUARES = {"steps": [
    {"id": "list", "action": "shell.exec", "params": {"command": "echo", "args": ["[1, 2, 3]"]}},
    {"id": "each", "type": "loop", "depends_on": ["list"], "config": {
        "mode": "for_each", "over": "steps['list'].stdout",
        "body": [{"id": "square", "action": "expr.eval", "params": {"expression": "data * data",
                                                                  "data": "${{loop.item}}"}}]}},
    {"id": "report", "action": "workflow.log", "depends_on": ["each"], "params": {"message": "squared"}},
]}


async def seed(server: ServerProcess) -> dict[str, str]:
    """A few agents, templates and runs in every state, for the screenshots."""
    async with connect(server, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "release", "definition": RELEASE, "agent_id": "release-bot",
                                              "description": "Build, checksum and ship once approved"})
        await call(session, "opcode.define", {"name": "nightly-import", "definition": FAILING,
                                              "agent_id": "etl-agent"})
        await call(session, "opcode.define", {"name": "squares", "definition": SQUARES, "agent_id": "etl-agent"})
        shipped = await call(session, "opcode.run", {"template_name": "release", "agent_id": "release-bot",
                                                     "params": {"version": "1.4.1"}})
        await call(session, "opcode.signal", {"workflow_id": shipped["workflow_id"], "signal_type": "decision",
                                              "payload": {"choice": "ship"}, "agent_id": "ops-lead",
                                              "reasoning": "smoke tests green"})
        await call(session, "opcode.run", {"template_name": "squares", "agent_id": "etl-agent"})
        await call(session, "opcode.run", {"template_name": "nightly-import", "agent_id": "etl-agent"})
        pending = await call(session, "opcode.run", {"template_name": "release", "agent_id": "release-bot",
                                                     "params": {"version": "1.4.2"}})
        return {"pending": pending["workflow_id"], "shipped": shipped["workflow_id"]}


def screenshots(out: Path) -> list[Path]:
    """Start a server, seed it, and save the dashboard and a workflow page as PNGs under `out`."""
    if CHROMIUM is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        server = start_server(Path(home))
        try:
            runs = run_async(seed(server), timeout=120)
            saved = []
            with chromium_page() as page:
                open_live(page, server.base_url + "/")
                page.wait_for_timeout(500)
                saved.append(out / "panel-dashboard.png")
                page.screenshot(path=str(saved[-1]))
                open_live(page, f"{server.base_url}/workflows/{runs['pending']}")
                page.locator('input[value="ship"]').check()
                page.locator('textarea[name="reasoning"]').fill("checksums match the build")
                page.wait_for_timeout(500)
                saved.append(out / "panel-workflow.png")
                page.screenshot(path=str(saved[-1]), full_page=True)
            return saved
        finally:
            stop_server(server.process)


if __name__ == "__main__":
    for path in screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")):
        print(path)

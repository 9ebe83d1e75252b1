"""The original's examples that need nothing outside this machine run to the status their design implies.

Each example of `../shared/upstream-examples/` is defined unchanged (with its input_schema) and run on a
real runtime (tmp SQLite) with inputs that point its URLs at a local HTTP server (`compat_server`) and
its paths into a temp directory; reasoning steps are answered with `decision` signals where the design
has an agent decide. `CASES` is the table: example → inputs builder, expected status, decisions, checks,
or the reason it is skipped. A few examples have a second row (`example[variant]`) for another branch
of their design that is cheap to run (a failure path, an un-answered decision, another severity).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opcode_core import service
from opcode_core.errors import OpcodeError
from tests.compat_server import CompatServer
from tests.conftest import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "upstream-examples"

pytestmark = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"{EXAMPLES} is absent: the upstream example corpus lives outside the repo"
)

AGENT = "compat-agent"
RUN_BOUND = 30.0  # seconds any one run or signal may take before the test fails instead of hanging
HELPER_SCRIPT = "its shell.exec steps run the original's helper script {} (not copied beside the examples)"


@dataclass
class Env:
    """What an inputs builder or a check may use: the local server and a temp directory."""

    server: CompatServer
    tmp: Path

    def url(self, path: str) -> str:
        """A URL on the local server."""
        return self.server.url(path)

    def posted(self, path: str) -> list[Any]:
        """JSON bodies POSTed to `path`, in order."""
        return [r.json for r in self.server.received(path, "POST")]


@dataclass(frozen=True)
class Decision:
    """One answer to a pending reasoning step."""

    choice: str
    step_id: str | None = None  # the step the pending decision must belong to (None: don't check)
    agent_id: str = AGENT
    refused_agent: str | None = None  # first try as this agent and expect PERMISSION_DENIED


Inputs = Callable[[Env], dict[str, Any]]
Check = Callable[[Env, dict[str, Any]], None]


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    example: str
    expected: str = "completed"
    inputs: Inputs | None = None
    decisions: tuple[Decision, ...] = ()
    check: Check | None = None
    skip: str | None = None
    variant: str = ""

    @property
    def id(self) -> str:
        return f"{self.example}[{self.variant}]" if self.variant else self.example


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unreachable() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}/down"


def step(status: dict[str, Any], step_id: str) -> dict[str, Any]:
    """A step's state from `workflow_status`, failing clearly when it is absent."""
    steps = status["steps"]
    assert step_id in steps, f"no step {step_id!r}; steps: {sorted(steps)}"
    return steps[step_id]


def custom_events(status: dict[str, Any]) -> list[str]:
    return [e["payload"].get("event_type") for e in status["events"] if e["event_type"] == "custom_event"]


# ---------------------------------------------------------------------------------------------- inputs


def alert_inputs(severity: str) -> Inputs:
    def build(env: Env) -> dict[str, Any]:
        return {"severity": severity, "title": "Disk full", "message": "/var is at 97%",
                "slack_dm_url": env.url("/slack-dm"), "slack_channel_url": env.url("/slack-channel"),
                "email_api_url": env.url("/email")}
    return build


def check_alert_critical(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/slack-dm") == [{"text": "[CRITICAL] Disk full: /var is at 97%"}]
    assert env.posted("/email") == [{"subject": "[CRITICAL] Disk full", "body": "/var is at 97%", "priority": "high"}]
    assert env.posted("/slack-channel") == []
    assert "critical_alert" in custom_events(st)


def check_alert_warning(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/slack-channel") == [{"text": "[WARNING] Disk full: /var is at 97%"}]
    assert env.posted("/slack-dm") == env.posted("/email") == []


def approval_inputs(env: Env) -> dict[str, Any]:
    return {"request_id": "REQ-7", "request_summary": "Raise the staging quota to 200 GB"}


def check_approval(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "reviewer2")["output"]["choice"] == "approve"
    assert step(st, "log-completed")["status"] == "completed"


def check_approval_pending(env: Env, st: dict[str, Any]) -> None:
    [pending] = st["pending_decisions"]
    assert pending["step_id"] == "reviewer1"
    assert pending["context"]["data"] == {"request_id": "REQ-7",
                                         "request_summary": "Raise the staging quota to 200 GB"}
    assert {o["id"] for o in pending["options"]} == {"approve", "reject"}


def responder_inputs(message: str) -> Inputs:
    def build(env: Env) -> dict[str, Any]:
        return {"message": message, "faq_keywords": ["password", "billing"], "respond_api_url": env.url("/respond"),
                "sender_id": "u-17", "template_response": "See https://example.test/reset"}
    return build


def check_responder_faq(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/respond") == [{"sender_id": "u-17", "response": "See https://example.test/reset",
                                       "tracking_hash": sha256("How do I reset my password?"), "type": "faq"}]


def check_responder_custom(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/respond") == []
    assert step(st, "check-faq.default.draft-response")["output"]["choice"].startswith("Thanks")


def batch_inputs(env: Env) -> dict[str, Any]:
    src = env.tmp / "incoming"
    src.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (src / name).write_text(name)
    return {"input_dir": str(src), "output_dir": str(env.tmp / "processed")}


def check_batch(env: Env, st: dict[str, Any]) -> None:
    assert len(step(st, "list-files")["output"]["entries"]) == 3
    assert step(st, "process-each")["output"]["iterations"] == 3


def content_pipeline_inputs(env: Env) -> dict[str, Any]:
    return {"content": "Release notes for 2.0", "author": "ana", "publish_api_url": env.url("/publish"),
            "slack_webhook_url": env.url("/slack"), "email_api_url": env.url("/email")}


def check_content_pipeline(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "review-content")["output"]["choice"] == "publish"
    assert step(st, "log-review-complete")["status"] == "completed"


def summarizer_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/article", body="<h1>opcode</h1>", content_type="text/html; charset=utf-8")
    return {"url": env.url("/article"), "output_path": str(env.tmp / "summary.txt")}


def check_summarizer(env: Env, st: dict[str, Any]) -> None:
    assert len(env.server.received("/article", "GET")) == 1
    assert (env.tmp / "summary.txt").read_text() == "Summary approved for URL"
    assert step(st, "hash-content")["output"]["hash"] == sha256("text/html; charset=utf-8")


def anonymizer_inputs(env: Env) -> dict[str, Any]:
    source = env.tmp / "people.json"
    source.write_text(json.dumps([{"email": "a@example.test", "name": "A", "phone": "1"}]))
    return {"input_path": str(source), "output_path": str(env.tmp / "people-anon.json"),
            "pii_fields": ["email", "name", "phone"]}


def check_anonymizer(env: Env, st: dict[str, Any]) -> None:
    assert (env.tmp / "people-anon.json").read_text() == (env.tmp / "people.json").read_text()
    assert step(st, "hash-fields")["output"]["iterations"] == 3


def digest_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/missing", status=404, body={"error": "not found"})
    return {"sources": [env.url("/news"), env.url("/blog"), env.url("/missing")],
            "send_api_url": env.url("/send"), "recipient": "team@example.test"}


def check_digest(env: Env, st: dict[str, Any]) -> None:
    assert [r.path for r in env.server.received(method="GET")] == ["/news", "/blog", "/missing"]
    assert env.posted("/send") == [{"to": "team@example.test", "subject": "Daily Digest",
                                    "message": "Digest compiled from configured sources"}]


def errors_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/errors", body=[{"error": "NullPointer", "count": 12}])
    return {"error_logs_url": env.url("/errors"), "ticket_api_url": env.url("/tickets")}


def check_errors(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/tickets") == [{"title": "Error investigation required", "source": env.url("/errors")}]


def escalation_inputs(status: int) -> Inputs:
    def build(env: Env) -> dict[str, Any]:
        env.server.route("/health", status=status, body={"healthy": status == 200})
        return {"health_url": env.url("/health"), "escalation_webhook_url": env.url("/escalate")}
    return build


def check_escalation_unhealthy(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "check-health")["output"]["branch"] == "true"
    assert step(st, "check-health.true.wait-before-decision")["status"] == "completed"
    assert step(st, "check-health.true.agent-triage")["output"]["choice"] == "escalate"


def check_escalation_healthy(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "check-health")["output"]["branch"] == "false"
    assert step(st, "check-health.false.log-healthy")["status"] == "completed"


def etl_inputs(status: int) -> Inputs:
    def build(env: Env) -> dict[str, Any]:
        env.server.route("/source", status=status, body={"records": [1, 2, 3]} if status == 200 else {"error": "x"})
        return {"source_url": env.url("/source"), "destination_url": env.url("/dest")}
    return build


def check_etl_loaded(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/dest") == [{"source": env.url("/source"), "status": "extracted"}]


def check_etl_aborted(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/dest") == []
    assert step(st, "check-status.default.log-failure")["status"] == "completed"


FORM = {"name": "Ana", "email": "ana@example.test", "type": "support", "message": "The export button is broken"}


def form_inputs(env: Env) -> dict[str, Any]:
    return {"form_data": FORM, "ticket_api_url": env.url("/tickets"), "crm_api_url": env.url("/crm"),
            "inbox_api_url": env.url("/inbox")}


def check_form(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/tickets") == [{**FORM, "message_hash": sha256(FORM["message"])}]
    assert env.posted("/inbox") == []


def free_form_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/data", body={"cpu": 0.97, "disk": 0.4})
    return {"data_url": env.url("/data"), "alert_url": env.url("/alert")}


def check_free_form(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "assess")["output"]["choice"] == "critical: CPU at 97%"
    assert step(st, "log-result")["status"] == "completed"


def git(*args: str, cwd: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "compat", "GIT_AUTHOR_EMAIL": "compat@example.test",
           "GIT_COMMITTER_NAME": "compat", "GIT_COMMITTER_EMAIL": "compat@example.test"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=30)


def branch_cleanup_inputs(env: Env) -> dict[str, Any]:
    repo = env.tmp / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "init", cwd=repo)
    for branch in ("develop", "feature-a", "fix-b"):
        git("branch", branch, cwd=repo)
    git("checkout", "-q", "-b", "wip", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "not merged", cwd=repo)
    git("checkout", "-q", "main", cwd=repo)
    return {"repo_dir": str(repo)}


def check_branch_cleanup(env: Env, st: dict[str, Any]) -> None:
    left = subprocess.run(["git", "-C", str(env.tmp / "repo"), "branch", "--format=%(refname:short)"],
                          check=True, capture_output=True, text=True, timeout=30).stdout.split()
    assert sorted(left) == ["develop", "main", "wip"]  # merged and unprotected: deleted; protected/unmerged kept
    assert step(st, "cleanup-loop")["output"]["iterations"] == 4


def sweep_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/cache/health", status=500, body={"healthy": False})
    return {"endpoint_a": env.url("/api/health"), "endpoint_b": env.url("/db/health"),
            "endpoint_c": env.url("/cache/health")}


def check_sweep(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "check-c")["output"]["status_code"] == 500
    assert step(st, "validate-services")["output"]["iterations"] == 3


def image_inputs(env: Env) -> dict[str, Any]:
    source = env.tmp / "photo.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return {"source_path": str(source), "output_path": str(env.tmp / "photo-out.png"),
            "cdn_upload_url": env.url("/cdn"), "max_width": 800, "quality": 80}


def check_image(env: Env, st: dict[str, Any]) -> None:
    source = env.tmp / "photo.png"
    assert (env.tmp / "photo-out.png").read_bytes() == source.read_bytes()
    assert env.posted("/cdn") == [{"file_path": str(env.tmp / "photo-out.png"),
                                   "original_size": source.stat().st_size,
                                   "source_hash": sha256(step(st, "read-source")["output"]["path"]),
                                   "source_path": str(source)}]


def invoice_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/orders", body={"id": "ORD-42", "total": 30})
    return {"order_api_url": env.url("/orders"), "order_id": "ORD-42", "output_path": str(env.tmp / "invoice.txt"),
            "email_api_url": env.url("/email"), "recipient_email": "billing@example.test"}


def check_invoice(env: Env, st: dict[str, Any]) -> None:
    [fetch] = env.server.received("/orders", "GET")
    assert fetch.headers.get("X-Order-Id") == "ORD-42"
    assert (env.tmp / "invoice.txt").read_text() == "200 OK"
    [mail] = env.posted("/email")
    invoice_id = step(st, "generate-invoice-id")["output"]["uuid"]
    uuid.UUID(invoice_id)
    assert mail == {"to": "billing@example.test", "subject": f"Invoice {invoice_id}", "order_id": "ORD-42",
                    "invoice_id": invoice_id, "status_code": 200}


def refinement_inputs(env: Env) -> dict[str, Any]:
    return {"draft_content": "opcode runs workflows"}


def check_refinement(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "review")["output"]["choice"] == "approve"
    assert step(st, "log-review-complete")["status"] == "completed"


def kb_inputs(env: Env) -> dict[str, Any]:
    return {"source_url": env.url("/kb-source"), "last_hash": "0" * 64, "kb_path": str(env.tmp / "kb.md")}


def check_kb(env: Env, st: dict[str, Any]) -> None:
    assert (env.tmp / "kb.md").read_text() == "Updated from source"
    assert step(st, "hash-content")["output"]["hash"] == sha256("200 OK")


def lead_inputs(env: Env) -> dict[str, Any]:
    return {"company_lookup_url": env.url("/company"), "social_lookup_url": env.url("/social"),
            "crm_url": env.url("/crm"), "lead_email": "lead@example.test"}


def check_lead(env: Env, st: dict[str, Any]) -> None:
    for path in ("/company", "/social"):
        [lookup] = env.server.received(path, "GET")
        assert lookup.query == {"email": ["lead@example.test"]}
    assert env.posted("/crm") == [{"email": "lead@example.test", "company_status": 200, "social_status": 200}]


def brief_inputs(env: Env) -> dict[str, Any]:
    return {"calendar_url": env.url("/calendar"), "documents_url": env.url("/documents"),
            "notes_url": env.url("/notes"), "output_path": str(env.tmp / "brief.md")}


def check_brief(env: Env, st: dict[str, Any]) -> None:
    assert sorted(r.path for r in env.server.received(method="GET")) == ["/calendar", "/documents", "/notes"]
    assert (env.tmp / "brief.md").read_text() == "Meeting prep briefing compiled successfully"


def review_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/research", body={"items": [{"id": "a", "score": 0.9}, {"id": "b", "score": 0.2},
                                                  {"id": "c", "score": 0.75}]})
    return {"data_url": env.url("/research"), "threshold": 0.7}


def check_review(env: Env, st: dict[str, Any]) -> None:
    assert [i["id"] for i in step(st, "analyze")["output"]["result"]] == ["a", "c"]
    assert step(st, "publish")["status"] == "skipped"
    assert step(st, "review-gate")["output"]["resolved_by"] == "reviewer-agent"


def research_inputs(env: Env) -> dict[str, Any]:
    return {"source_a_url": env.url("/a"), "source_b_url": env.url("/b"), "source_c_url": env.url("/c")}


def check_research(env: Env, st: dict[str, Any]) -> None:
    assert len(env.server.received(method="GET")) == 3
    assert step(st, "pick-best")["output"]["choice"] == "source_b"


def router_inputs(env: Env) -> dict[str, Any]:
    return {"severity": "critical", "title": "DB down", "message": "primary unreachable",
            "slack_webhook_url": env.url("/slack"), "email_api_url": env.url("/email")}


def check_router(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/slack") == [{"text": "[CRITICAL] DB down: primary unreachable"}]
    assert env.posted("/email") == [{"subject": "[CRITICAL] DB down", "body": "primary unreachable",
                                     "priority": "high"}]
    assert custom_events(st) == ["notification.received", "notification.critical.sent"]


def drip_inputs(env: Env) -> dict[str, Any]:
    return {"user_email": "new@example.test", "user_name": "Nia", "email_api_url": env.url("/email")}


def check_drip(env: Env, st: dict[str, Any]) -> None:
    assert [b["template"] for b in env.posted("/email")] == ["welcome", "tips"]
    assert step(st, "wait-engagement")["status"] == "completed"


ORDER = {"id": "o-1", "product": "widget", "quantity": 2, "price": 19.5}


def order_inputs(available: bool) -> Inputs:
    def build(env: Env) -> dict[str, Any]:
        env.server.route("/stock", body={"available": available})
        return {"order": ORDER, "stock_api_url": env.url("/stock"), "payment_api_url": env.url("/pay"),
                "fulfillment_api_url": env.url("/fulfil"), "notification_api_url": env.url("/notify")}
    return build


def check_order_in_stock(env: Env, st: dict[str, Any]) -> None:
    [stock] = env.server.received("/stock", "GET")
    assert (stock.headers.get("X-Product"), stock.headers.get("X-Quantity")) == ("widget", "2")
    assert env.posted("/pay") == [{"order_id": "o-1", "product": "widget", "quantity": 2, "price": 19.5}]
    assert env.posted("/fulfil") == [{"order_id": "o-1", "product": "widget", "quantity": 2}]
    assert [b["subject"] for b in env.posted("/notify")] == ["Order Confirmed"]


def check_order_out_of_stock(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/pay") == env.posted("/fulfil") == []
    assert [b["subject"] for b in env.posted("/notify")] == ["Out of Stock"]


def price_inputs(env: Env) -> dict[str, Any]:
    return {"products": [{"name": "lamp", "url": env.url("/lamp"), "threshold": 30},
                         {"name": "desk", "url": unreachable(), "threshold": 200}],
            "notification_api_url": env.url("/notify")}


def check_price(env: Env, st: dict[str, Any]) -> None:
    assert [b["product"] for b in env.posted("/notify")] == ["lamp", "desk"]
    assert step(st, "check-prices.iter_1.fetch-price")["status"] == "skipped"  # failed, on_error: ignore


def report_inputs(env: Env) -> dict[str, Any]:
    return {"sales_api_url": env.url("/sales"), "users_api_url": env.url("/users"),
            "metrics_api_url": env.url("/metrics"), "report_path": str(env.tmp / "report.txt"),
            "email_api_url": env.url("/email")}


def check_report(env: Env, st: dict[str, Any]) -> None:
    assert (env.tmp / "report.txt").read_text() == "Report generated successfully"
    assert env.posted("/email") == [{"subject": "Generated Report", "report_path": str(env.tmp / "report.txt")}]


def rotation_inputs(status: int) -> Inputs:
    def build(env: Env) -> dict[str, Any]:
        if status != 200:
            env.server.route("/rotate", status=status, body={"error": "rotation refused"})
        return {"service_url": env.url("/rotate"), "service_name": "billing"}
    return build


def check_rotation_ok(env: Env, st: dict[str, Any]) -> None:
    [body] = env.posted("/rotate")
    assert body["new_secret"] == step(st, "generate-secret")["output"]["uuid"]
    assert step(st, "verify-update")["output"] == {"pass": True}
    assert step(st, "log-rotation")["status"] == "completed"
    assert step(st, "audit-success")["status"] == "completed"  # the definition's on_complete step
    assert "audit-failure" not in st["steps"]


def check_rotation_failed(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "verify-update")["status"] == "failed"
    assert step(st, "verify-update")["error"]["code"] == "ASSERTION_FAILED"
    assert st["steps"].get("log-rotation", {}).get("status") != "completed"
    assert step(st, "audit-failure")["status"] == "completed"  # the definition's on_error step
    assert "audit-success" not in st["steps"]


def cross_post_inputs(env: Env) -> dict[str, Any]:
    return {"content": "opcode 1.0 is out", "title": "Release", "twitter_api_url": unreachable(),
            "linkedin_api_url": env.url("/linkedin"), "blog_api_url": env.url("/blog")}


def check_cross_post(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/linkedin") == [{"title": "Release", "text": "opcode 1.0 is out"}]
    assert env.posted("/blog") == [{"title": "Release", "content": "opcode 1.0 is out", "status": "published"}]
    assert step(st, "cross-post.branch_0.post-twitter")["status"] == "skipped"  # failed, on_error: ignore


def standup_inputs(env: Env) -> dict[str, Any]:
    return {"tickets_url": env.url("/tickets"), "prs_url": env.url("/prs"), "logs_url": env.url("/logs"),
            "output_path": str(env.tmp / "standup.md")}


def check_standup(env: Env, st: dict[str, Any]) -> None:
    assert (env.tmp / "standup.md").read_text() == "Standup report generated successfully"
    assert len(env.server.received(method="GET")) == 3


def drift_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/b", body="id,name\n1,x\n", content_type="text/csv")
    return {"source_a_url": env.url("/a"), "source_b_url": env.url("/b"), "sync_url": env.url("/sync")}


def check_drift(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/sync") == [{"action": "sync", "source": env.url("/a"), "hash_a": sha256("application/json"),
                                    "hash_b": sha256("text/csv")}]


def triage_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/tickets", body=[{"id": 1, "title": "Login broken"}, {"id": 2, "title": "Typo on pricing"}])
    return {"tickets_url": env.url("/tickets"), "update_url": env.url("/update")}


def check_triage(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "triage-loop")["output"]["iterations"] == 2
    assert step(st, "triage-loop.iter_1.prioritize")["output"]["choice"] == "p3-low"


def sync_inputs(env: Env) -> dict[str, Any]:
    env.server.route("/system-b", status=202, body={"records": []})
    return {"system_a_url": env.url("/system-a"), "system_b_url": env.url("/system-b"),
            "upsert_url": env.url("/upsert")}


def check_sync(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/upsert") == [{"action": "sync", "source": "a", "status_a": 200, "status_b": 202}]


def uptime_inputs(env: Env) -> dict[str, Any]:
    return {"endpoints": [{"name": "api", "url": env.url("/api")}, {"name": "gone", "url": unreachable()}],
            "alert_webhook_url": env.url("/alert")}


def check_uptime(env: Env, st: dict[str, Any]) -> None:
    assert step(st, "check-endpoints.iter_0.ping")["output"]["status_code"] == 200
    assert step(st, "check-endpoints.iter_1.ping")["status"] == "skipped"  # refused, on_error: ignore
    assert env.posted("/alert") == [{"message": "Uptime monitor cycle complete"}]


def webhook_inputs(env: Env) -> dict[str, Any]:
    return {"payload": {"event": "order.created", "id": 7}, "destination_url": env.url("/hook"),
            "expected_source": "shop"}


def check_webhook(env: Env, st: dict[str, Any]) -> None:
    assert env.posted("/hook") == [{"event": "order.created", "payload_hash": sha256("order.created")}]


# ----------------------------------------------------------------------------------------------- table

CASES: list[Case] = [
    Case("alert-pipeline", inputs=alert_inputs("critical"), check=check_alert_critical),
    Case("alert-pipeline", variant="warning", inputs=alert_inputs("warning"), check=check_alert_warning),
    Case("approval-chain", inputs=approval_inputs, check=check_approval,
         decisions=(Decision("approve", "reviewer1"), Decision("approve", "reviewer2"))),
    Case("approval-chain", variant="undecided", expected="suspended", inputs=approval_inputs,
         check=check_approval_pending),
    Case("auto-responder", inputs=responder_inputs("How do I reset my password?"), check=check_responder_faq),
    Case("auto-responder", variant="custom-reply", inputs=responder_inputs("Can you ship to Mars?"),
         decisions=(Decision("Thanks, we will check and reply today.", "check-faq.default.draft-response"),),
         check=check_responder_custom),
    Case("backup-verification", skip=HELPER_SCRIPT.format("scripts/check_backup.sh")),
    Case("batch-file-processor", inputs=batch_inputs, check=check_batch),
    Case("content-pipeline", inputs=content_pipeline_inputs, check=check_content_pipeline,
         decisions=(Decision("publish", "review-content"),)),
    Case("content-summarizer", inputs=summarizer_inputs, check=check_summarizer,
         decisions=(Decision("approve", "review-quality"),)),
    Case("csv-to-api", skip=HELPER_SCRIPT.format("scripts/parse_csv.py")),
    Case("data-anonymizer", inputs=anonymizer_inputs, check=check_anonymizer),
    Case("dependency-audit", skip=HELPER_SCRIPT.format("scripts/scan.sh")),
    Case("deploy-gate", skip=HELPER_SCRIPT.format("scripts/run-tests.sh")),
    Case("digest-builder", inputs=digest_inputs, check=check_digest),
    Case("error-aggregator", inputs=errors_inputs, check=check_errors,
         decisions=(Decision("investigate", "check-new-errors.true.triage-decision"),)),
    Case("escalation-ladder", inputs=escalation_inputs(503), check=check_escalation_unhealthy,
         decisions=(Decision("escalate", "check-health.true.agent-triage"),)),
    Case("escalation-ladder", variant="healthy", inputs=escalation_inputs(200), check=check_escalation_healthy),
    Case("etl-with-validation", inputs=etl_inputs(200), check=check_etl_loaded),
    Case("etl-with-validation", variant="source-error", inputs=etl_inputs(500), check=check_etl_aborted),
    Case("form-processor", inputs=form_inputs, check=check_form),
    Case("free-form-decision", inputs=free_form_inputs, check=check_free_form,
         decisions=(Decision("critical: CPU at 97%", "assess"),)),
    Case("git-branch-cleanup", inputs=branch_cleanup_inputs, check=check_branch_cleanup,
         skip=None if shutil.which("git") else "needs the git binary, not on this machine"),
    Case("git-changelog", skip=HELPER_SCRIPT.format("scripts/parse_commits.py")),
    Case("health-check-sweep", inputs=sweep_inputs, check=check_sweep),
    Case("image-processing", inputs=image_inputs, check=check_image),
    Case("invoice-generator", inputs=invoice_inputs, check=check_invoice),
    Case("iterative-refinement", inputs=refinement_inputs, check=check_refinement,
         decisions=(Decision("approve", "review"),)),
    Case("knowledge-base-updater", inputs=kb_inputs, check=check_kb,
         decisions=(Decision("relevant", "check-changed.true.review-relevance"),)),
    Case("lead-enrichment", inputs=lead_inputs, check=check_lead),
    Case("log-anomaly-triage", skip=HELPER_SCRIPT.format("scripts/analyze.py")),
    Case("meeting-prep-brief", inputs=brief_inputs, check=check_brief),
    # `publish` posts to the hard-coded https://api.example.com/publish (no input sets it): run the
    # reviewer's reject path, where `publish` is skipped and nothing leaves the machine.
    Case("multi-agent-review", inputs=review_inputs, check=check_review,
         decisions=(Decision("reject", "review-gate", agent_id="reviewer-agent", refused_agent=AGENT),)),
    Case("multi-source-research", inputs=research_inputs, check=check_research,
         decisions=(Decision("source_b", "pick-best"),)),
    Case("notification-router", inputs=router_inputs, check=check_router,
         decisions=(Decision("acknowledged", "route-severity.critical.critical-alerts.branch_2.acknowledge"),)),
    Case("onboarding-checklist", skip=HELPER_SCRIPT.format("scripts/verify.sh")),
    Case("onboarding-drip", inputs=drip_inputs, check=check_drip,
         decisions=(Decision("mark-complete", "engagement-decision"),)),
    Case("openclaw-version-checker", skip=HELPER_SCRIPT.format("scripts/check_version.sh")
         + ", after `git ls-remote` of a remote repository"),
    Case("order-processing", inputs=order_inputs(True), check=check_order_in_stock),
    Case("order-processing", variant="out-of-stock", inputs=order_inputs(False), check=check_order_out_of_stock),
    Case("price-monitor", inputs=price_inputs, check=check_price),
    Case("repo-health-check", skip="runs `go test` and `go vet` on a Go module: the Go toolchain is not on "
         "this machine"),
    Case("report-generator", inputs=report_inputs, check=check_report),
    Case("secret-rotation", inputs=rotation_inputs(200), check=check_rotation_ok),
    Case("secret-rotation", variant="service-error", expected="failed", inputs=rotation_inputs(500),
         check=check_rotation_failed),
    Case("social-cross-post", inputs=cross_post_inputs, check=check_cross_post),
    Case("standup-report", inputs=standup_inputs, check=check_standup),
    Case("sync-drift-detection", inputs=drift_inputs, check=check_drift,
         decisions=(Decision("sync", "check-drift.true.triage-drift"),)),
    Case("task-triage", inputs=triage_inputs, check=check_triage,
         decisions=(Decision("p1-high", "triage-loop.iter_0.prioritize"),
                    Decision("p3-low", "triage-loop.iter_1.prioritize"))),
    Case("two-way-sync", inputs=sync_inputs, check=check_sync),
    Case("uptime-monitor", inputs=uptime_inputs, check=check_uptime),
    Case("webhook-handler", inputs=webhook_inputs, check=check_webhook),
]


def _param(case: Case) -> Any:
    marks = []
    if case.skip:
        marks.append(pytest.mark.skip(reason=f"{case.example}: {case.skip}"))
    return pytest.param(case, id=case.id, marks=marks)


def test_the_table_covers_every_example_once() -> None:
    on_disk = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    main_rows = sorted(c.example for c in CASES if not c.variant)
    assert main_rows == on_disk
    assert {c.example for c in CASES if c.variant} <= set(on_disk)
    assert all(c.skip or c.inputs for c in CASES)


@pytest.fixture
def compat_server():
    with CompatServer() as srv:
        yield srv


async def _decide(rt: Any, workflow_id: str, decision: Decision) -> dict[str, Any]:
    status = await service.workflow_status(rt, workflow_id=workflow_id)
    pending = [d["step_id"] for d in status["pending_decisions"]]
    assert len(pending) == 1, f"expected one pending decision, found {pending}"
    if decision.step_id:
        assert pending == [decision.step_id]
    signal = {"workflow_id": workflow_id, "signal_type": "decision", "payload": {"choice": decision.choice},
              "step_id": pending[0], "reasoning": "compatibility run"}
    if decision.refused_agent:
        with pytest.raises(OpcodeError) as refused:
            await asyncio.wait_for(service.send_signal(rt, **signal, agent_id=decision.refused_agent), RUN_BOUND)
        assert refused.value.code == "PERMISSION_DENIED"
    return await asyncio.wait_for(service.send_signal(rt, **signal, agent_id=decision.agent_id), RUN_BOUND)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
async def test_example_runs_to_its_designed_status(case: Case, runtime, compat_server, tmp_path) -> None:
    doc = json.loads((EXAMPLES / f"{case.example}.json").read_text())
    env = Env(compat_server, tmp_path / "work")
    env.tmp.mkdir()
    defined = await service.define_template(
        runtime, name=doc["name"], definition=doc["definition"], agent_id=AGENT,
        description=doc.get("description"), input_schema=doc.get("input_schema"),
    )
    assert defined["version"] == "v1"
    assert case.inputs is not None
    result = await asyncio.wait_for(
        service.run_workflow(runtime, template_name=doc["name"], agent_id=AGENT, params=case.inputs(env)), RUN_BOUND
    )
    workflow_id = result["workflow_id"]
    for decision in case.decisions:
        assert result["status"] == "suspended", f"expected a pending decision, run is {result['status']}: {result}"
        result = await _decide(runtime, workflow_id, decision)
    status = await service.workflow_status(runtime, workflow_id=workflow_id)
    summary = {sid: (s["status"], (s.get("error") or {}).get("message")) for sid, s in status["steps"].items()}
    assert status["status"] == case.expected, f"{status['workflow']['error']}\nsteps: {summary}"
    if case.expected == "suspended":
        assert status["pending_decisions"], "a suspended run here waits on a decision"
    else:
        assert not status["pending_decisions"]
    if case.check:
        case.check(env, status)

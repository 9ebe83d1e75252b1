"""Scheduled jobs: checking, saving, enabling and deleting them, and the jobs a template's `triggers.cron` owns.

Functions here take a Store and run synchronously, so the server (through `Runtime.db`), the panel and the
`opcode schedule` CLI (on the database directly, with or without a running server) share one set of rules.
"""

from __future__ import annotations

import json
import uuid
import zoneinfo
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from jsonschema import Draft202012Validator

from opcode_core.errors import NOT_FOUND, OpcodeError, ValidationError, schema_problems, summarize
from opcode_core.store.store import Store
from opcode_core.store.times import to_iso

Problem = dict[str, str]

# A template's jobs get ids derived from it, so defining a new version updates them instead of adding more.
TRIGGER_ID_PREFIX = "trigger:"
TRIGGERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "cron": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "cron": {"type": "string"},
                    # The original's names for an entry: a label and `expression` for `cron`.
                    "expression": {"type": "string"},
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                    "params": {"type": "object"},
                    "agent_id": {"type": "string", "minLength": 1},
                    "timezone": {"type": "string"},
                    "enabled": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
_TRIGGERS = Draft202012Validator(TRIGGERS_SCHEMA)


def next_run(cron: str, timezone: str, after: datetime | None = None) -> str:
    """The next time a 5-field cron expression fires in a time zone after `after` (default now), in store format."""
    start = (after or datetime.now(UTC)).astimezone(zoneinfo.ZoneInfo(timezone))
    return to_iso(croniter(cron, start).get_next(datetime))


def check_schedule(cron: str, timezone: str, path: str = "") -> list[Problem]:
    """What is wrong with a cron expression and a time zone; paths are prefixed with `path`."""
    problems = []
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        problems.append({"path": f"{path}cron",
                         "message": f"{cron!r} is not a 5-field cron expression (e.g. */15 * * * *)"})
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append({"path": f"{path}timezone", "message": f"unknown time zone {timezone!r}"})
    return problems


def _raise(problems: list[Problem]) -> None:
    if problems:
        raise ValidationError(summarize(problems), problems)


def parse_params(params: Any) -> tuple[dict[str, Any], list[Problem]]:
    """Job params given as a dict, as JSON text, or empty; the problems when they are not a JSON object."""
    if params is None or (isinstance(params, str) and not params.strip()):
        return {}, []
    value = params
    if isinstance(params, str):
        try:
            value = json.loads(params)
        except json.JSONDecodeError as exc:
            return {}, [{"path": "params",
                         "message": f"not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"}]
    if not isinstance(value, dict):
        return {}, [{"path": "params", "message": "must be a JSON object"}]
    return value, []


def get_job(store: Store, job_id: str) -> dict[str, Any]:
    """One scheduled job; NOT_FOUND when there is none."""
    job = store.get_job(job_id)
    if job is None:
        raise OpcodeError(NOT_FOUND, f"scheduled job {job_id!r} not found")
    return job


def save_job(
    store: Store,
    *,
    job_id: str | None,
    template_name: str,
    cron: str,
    agent_id: str,
    timezone: str = "UTC",
    params: Any = None,
    enabled: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create a job (no `job_id`) or change one, after checking every field; ValidationError lists each problem."""
    cron = " ".join(cron.split())
    timezone = timezone or "UTC"
    problems = []
    if not template_name:
        problems.append({"path": "template_name", "message": "required"})
    elif store.get_template(template_name) is None:
        problems.append({"path": "template_name", "message": f"no template named {template_name!r}"})
    problems += check_schedule(cron, timezone)
    if not agent_id:
        problems.append({"path": "agent_id", "message": "required"})
    values, bad_params = parse_params(params)
    _raise(problems + bad_params)
    if job_id is not None:
        get_job(store, job_id)
    fields = {"template_name": template_name, "cron": cron, "timezone": timezone, "agent_id": agent_id,
              "params": values, "enabled": enabled, "next_run_at": next_run(cron, timezone, now) if enabled else None}
    store.ensure_agent(agent_id)
    if job_id is None:
        return store.create_job(id=str(uuid.uuid4()), **fields)
    store.update_job(job_id, **fields)
    return get_job(store, job_id)


def set_enabled(store: Store, job_id: str, enabled: bool, now: datetime | None = None) -> dict[str, Any]:
    """Enable a job (its next run counted from now) or disable it; NOT_FOUND when there is none."""
    job = get_job(store, job_id)
    if bool(job["enabled"]) != enabled or (enabled and job["next_run_at"] is None):
        store.update_job(job_id, enabled=enabled,
                         next_run_at=next_run(job["cron"], job["timezone"] or "UTC", now) if enabled else None)
    return get_job(store, job_id)


def delete_job(store: Store, job_id: str) -> None:
    """Delete a scheduled job; NOT_FOUND when there is none."""
    if not store.delete_job(job_id):
        raise OpcodeError(NOT_FOUND, f"scheduled job {job_id!r} not found")


# -- jobs a template's triggers own -----------------------------------------------------------------------------


def check_triggers(triggers: Any, input_schema: dict[str, Any] | None = None) -> list[Problem]:
    """What is wrong with a template's `triggers`, each problem with its path (e.g. `triggers.cron[0].cron`)."""
    if triggers is None:
        return []
    problems = schema_problems(_TRIGGERS, triggers, "triggers")
    entries = triggers.get("cron") if isinstance(triggers, dict) else None
    params_check = Draft202012Validator(input_schema) if input_schema else None
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue
        path = f"triggers.cron[{i}]."
        if "cron" in entry and "expression" in entry:
            problems.append({"path": f"{path}expression", "message": "give `cron` or `expression`, not both"})
        elif "cron" not in entry and "expression" not in entry:
            problems.append({"path": f"{path}cron", "message": "required: a 5-field cron expression"})
        cron, timezone = entry.get("cron", entry.get("expression")), entry.get("timezone", "UTC")
        if isinstance(cron, str) and isinstance(timezone, str):
            problems += check_schedule(cron, timezone, path)
        if isinstance(entry.get("name"), str):
            if entry["name"] in seen:
                problems.append({"path": f"{path}name",
                                 "message": f"{entry['name']!r} names triggers.cron[{seen[entry['name']]}] already"})
            seen.setdefault(entry["name"], i)
        if params_check is not None and isinstance(entry.get("params", {}), dict):
            problems += [{**p, "message": f"does not match the input_schema: {p['message']}"}
                         for p in schema_problems(params_check, entry.get("params", {}), path + "params")]
    return problems


def trigger_job_id(template_name: str, entry: dict[str, Any], index: int) -> str:
    """The id of the job a `triggers.cron` entry owns: by its `name`, else by its place in the list."""
    return f"{TRIGGER_ID_PREFIX}{template_name}:{entry.get('name', index)}"


def sync_triggers(
    store: Store, template_name: str, triggers: dict[str, Any] | None, agent_id: str, now: datetime | None = None
) -> list[str]:
    """Create or update the jobs of a template's `triggers.cron` and drop those it no longer lists; their ids."""
    _raise(check_triggers(triggers))
    entries = (triggers or {}).get("cron", [])
    ids = []
    for i, entry in enumerate(entries):
        job_id = trigger_job_id(template_name, entry, i)
        job_agent = entry.get("agent_id", agent_id)
        cron, timezone = " ".join(entry.get("cron", entry.get("expression", "")).split()), entry.get("timezone", "UTC")
        enabled = entry.get("enabled", True)
        existing = store.get_job(job_id)
        # Redefining a template keeps a job's place in its schedule unless the schedule itself changed.
        keep_next = (existing is not None and existing["enabled"] and enabled and existing["cron"] == cron
                     and existing["timezone"] == timezone and existing["next_run_at"] is not None)
        fields = {"template_name": template_name, "cron": cron, "timezone": timezone, "agent_id": job_agent,
                  "params": entry.get("params", {}), "enabled": enabled,
                  "next_run_at": existing["next_run_at"] if keep_next else
                  next_run(cron, timezone, now) if enabled else None}
        store.ensure_agent(job_agent)
        if existing is None:
            store.create_job(id=job_id, **fields)
        else:
            store.update_job(job_id, **fields)
        ids.append(job_id)
    # This template's trigger jobs are `trigger:<template>:<label>`, and a label never holds a colon.
    prefix = f"{TRIGGER_ID_PREFIX}{template_name}:"
    for job in store.list_jobs():
        label = job["id"][len(prefix):]
        if (job["id"].startswith(prefix) and ":" not in label and job["template_name"] == template_name
                and job["id"] not in ids):
            store.delete_job(job["id"])
    return ids

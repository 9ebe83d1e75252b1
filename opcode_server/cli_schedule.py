"""`opcode schedule list|add|enable|disable|remove`: the cron jobs of the configured database.

Like `opcode secrets`, these work on the database directly, with or without a running server; a running
server sees a change at its next look at the jobs (within 30 s, or at once when the panel made it).
"""

from __future__ import annotations

import json
from typing import Any

import click

from opcode_core import jobs
from opcode_server.cli_common import cli_settings, open_store, parse_param

COLUMNS = ("id", "template_name", "cron", "timezone", "enabled", "next_run_at", "last_run_at", "last_run_status")


@click.group()
def schedule() -> None:
    """Manage cron jobs that run a template with params as an agent."""


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_command(as_json: bool) -> None:
    """List jobs with their schedule, next run, last run and its status."""
    with open_store(cli_settings()) as store:
        rows = store.list_jobs()
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no scheduled jobs", err=True)
        return
    table = [[_cell(row, col) for col in COLUMNS] for row in rows]
    headers = [col.upper().replace("_NAME", "").replace("_AT", "").replace("_", " ") for col in COLUMNS]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    for line in [headers, *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if column == "enabled":
        return "yes" if value else "no"
    return "-" if value is None else str(value)


@schedule.command("add")
@click.argument("template")
@click.argument("cron")
@click.option("--param", "-p", "params", multiple=True, help="Run input as key=value (JSON if it parses).")
@click.option("--params-json", help="All run inputs as one JSON object (merged under --param).")
@click.option("--agent-id", default="scheduler", show_default=True, help="The agent the runs are started as.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone the cron expression reads in.")
@click.option("--disabled", is_flag=True, help="Create the job disabled.")
def add_command(template: str, cron: str, params: tuple[str, ...], params_json: str | None, agent_id: str,
                timezone: str, disabled: bool) -> None:
    """Schedule TEMPLATE (its latest version) on the 5-field CRON expression, e.g. '*/15 * * * *'."""
    values, problems = jobs.parse_params(params_json)
    if problems:
        raise click.BadParameter(problems[0]["message"], param_hint="--params-json")
    values.update(parse_param(p) for p in params)
    with open_store(cli_settings()) as store:
        job = jobs.save_job(store, job_id=None, template_name=template, cron=cron, agent_id=agent_id,
                            timezone=timezone, params=values, enabled=not disabled)
    click.echo(job["id"])
    click.echo(f"next run: {job['next_run_at'] or '- (disabled)'}", err=True)


@schedule.command("enable")
@click.argument("job_id")
def enable_command(job_id: str) -> None:
    """Enable job JOB_ID; its next run is counted from now."""
    _set_enabled(job_id, True)


@schedule.command("disable")
@click.argument("job_id")
def disable_command(job_id: str) -> None:
    """Disable job JOB_ID; it keeps its settings and last run."""
    _set_enabled(job_id, False)


def _set_enabled(job_id: str, enabled: bool) -> None:
    with open_store(cli_settings()) as store:
        job = jobs.set_enabled(store, job_id, enabled)
    state = f"enabled, next run {job['next_run_at']}" if enabled else "disabled"
    click.echo(f"job {job_id} {state}")


@schedule.command("remove")
@click.argument("job_id")
def remove_command(job_id: str) -> None:
    """Delete job JOB_ID (a template's trigger job comes back when the template is defined again)."""
    with open_store(cli_settings()) as store:
        jobs.delete_job(store, job_id)
    click.echo(f"job {job_id} removed")

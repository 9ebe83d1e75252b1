"""The `opcode` command line: serve (the default), version, plugins, run; plugins may add commands."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from opcode_core import __version__
from opcode_core.errors import ConfigError, OpcodeError
from opcode_core.logs import configure_logging
from opcode_core.settings import Settings, load_settings
from opcode_server.cli_common import parse_param
from opcode_server.cli_diagram import diagram
from opcode_server.cli_ops import OPERATOR_COMMANDS
from opcode_server.cli_schedule import schedule
from opcode_server.cli_secrets import secrets


def _settings(ctx: click.Context) -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(invoke_without_command=True)
@click.version_option(__version__, "--version", prog_name="opcode")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """opcode: an execution runtime for AI agents. With no command, runs `opcode serve`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@cli.command()
@click.option("--listen-addr", help="host:port to listen on (default 127.0.0.1:4100).")
@click.option("--db-path", type=click.Path(dir_okay=False), help="SQLite database file.")
@click.option("--vault-key", help="Vault passphrase, kept in memory only.")
@click.pass_context
def serve(ctx: click.Context, listen_addr: str | None, db_path: str | None, vault_key: str | None) -> None:
    """Serve MCP (SSE at /sse, Streamable HTTP at /mcp) and /health; SIGHUP reloads settings.json."""
    from opcode_core.settings import split_listen_addr
    from opcode_server import process

    settings = _settings(ctx)
    overrides: dict[str, Any] = {}
    if listen_addr:
        try:
            split_listen_addr(listen_addr)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen-addr") from None
        overrides["listen_addr"] = listen_addr
    if db_path:
        overrides["db_path"] = Path(db_path).expanduser()
    if vault_key:
        overrides["vault_key"] = vault_key
    settings = settings.with_overrides(**overrides) if overrides else settings
    configure_logging(settings.log_level)
    if not settings.host:
        click.echo("warning: listening on every interface and MCP has no authentication yet", err=True)
    try:
        # Pidfile, port, SIGHUP reload and a bounded stop live in opcode_server.process.
        process.serve(settings, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except process.ProcessError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@cli.command()
def version() -> None:
    """Print opcode's version."""
    click.echo(__version__)


@cli.command()
@click.pass_context
def plugins(ctx: click.Context) -> None:
    """Print every plugin entry point as JSON: status, hooks, actions, step types (exit 0 even if some failed)."""
    from opcode_core.plugins import build_plugin_manager
    from opcode_core.registry import Registry, plugin_states

    settings = _settings(ctx)
    pm, report = build_plugin_manager(settings)
    registry = Registry.from_plugins(pm, report, settings)
    rows = [info.to_dict() for info in report.plugins.values()]
    # A plugin's own state (e.g. its external MCP servers) is live when this home's server runs, else from settings.
    live_url, states = _live_plugin_states(settings)
    states = states if states is not None else plugin_states(pm, settings)
    for row in rows:
        if row["name"] in states:
            row["state"] = states[row["name"]]
    out: dict[str, Any] = {"plugins": rows}
    if states:
        out["state_from"] = f"{live_url}/health" if live_url else "settings"
    if registry.duplicates:
        out["duplicates"] = registry.duplicates
    if report.unknown_names:
        out["unknown_configured"] = report.unknown_names
    out["settings"] = settings.redacted_plugin_settings()
    click.echo(json.dumps(out, indent=2))


def _live_plugin_states(settings: Settings) -> tuple[str | None, dict[str, Any] | None]:
    """The running server's URL and its plugins' states from /health; (None, None) when none runs or answers."""
    import httpx

    from opcode_server import process

    try:
        url = process.running_server(settings, wait_s=2.0)
        if url is None:
            return None, None
        return url, httpx.get(f"{url}/health", timeout=5).json()["plugins"]["state"]
    except (process.ProcessError, httpx.HTTPError, ValueError, KeyError, TypeError):
        return None, None


@cli.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--param", "-p", "params", multiple=True, help="Input as key=value (value parsed as JSON if it can be).")
@click.option("--agent-id", default="cli", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No per-step progress on stderr.")
@click.pass_context
def run_file(ctx: click.Context, file: str, params: tuple[str, ...], agent_id: str, quiet: bool) -> None:
    """Run a workflow file on the embedded store and print the result as JSON."""
    settings = _settings(ctx)
    configure_logging("warning")
    doc = _read_json(Path(file))
    definition = doc.get("definition", doc) if isinstance(doc, dict) else doc
    name = doc.get("name") if isinstance(doc, dict) and "definition" in doc else Path(file).stem
    inputs = dict(parse_param(p) for p in params)
    try:
        result = asyncio.run(_run_file(settings, definition, name, agent_id, inputs, quiet))
    except (OpcodeError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2, default=str))
    sys.exit(0 if result["status"] == "completed" else 1)


async def _run_file(settings: Settings, definition: Any, name: str, agent_id: str, params: dict[str, Any],
                    quiet: bool) -> dict[str, Any]:
    from opcode_core import service
    from opcode_core.engine.definition import load_definition
    from opcode_core.runtime import Runtime

    settings.home.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(settings)
    async with runtime.running():
        if not quiet:
            runtime.subscribe(_progress_printer())
        model = load_definition(definition, runtime.registry)
        await runtime.db(runtime.store.ensure_agent, agent_id)
        return await service.start_run(runtime, definition=model, name=name, agent_id=agent_id, params=params)


def _progress_printer():
    marks = {"step_started": "…", "step_completed": "✓", "step_failed": "✗", "step_skipped": "-"}

    def show(event: dict[str, Any]) -> None:
        mark = marks.get(event["event_type"])
        if mark is None:
            return
        payload = event.get("payload") or {}
        took = f" ({payload['duration_ms']} ms)" if payload.get("duration_ms") is not None else ""
        why = f": {payload['error']['message']}" if event["event_type"] == "step_failed" else ""
        click.echo(f"{mark} {event['step_id']}{took}{why}", err=True)

    return show


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path}: not valid JSON: {exc}") from None


for _command in OPERATOR_COMMANDS:
    cli.add_command(_command)
cli.add_command(diagram)
cli.add_command(secrets)
cli.add_command(schedule)


def main() -> None:
    """Entry point of the `opcode` console script; plugins' commands are added first."""
    from opcode_core.plugins import build_plugin_manager

    try:
        pm, _ = build_plugin_manager(load_settings())
        pm.hook.opcode_register_commands(cli=cli)
    except ConfigError as exc:
        click.echo(f"warning: plugin commands not loaded: {exc}", err=True)
    cli()

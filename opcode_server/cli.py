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
    """Serve MCP (SSE at /sse, Streamable HTTP at /mcp) and /health."""
    import uvicorn

    from opcode_core.runtime import Runtime
    from opcode_core.settings import split_listen_addr
    from opcode_server.app import create_app

    settings = _settings(ctx)
    overrides: dict[str, Any] = {}
    if listen_addr:
        split_listen_addr(listen_addr)
        overrides["listen_addr"] = listen_addr
    if db_path:
        overrides["db_path"] = Path(db_path).expanduser()
    if vault_key:
        overrides["vault_key"] = vault_key
    settings = settings.with_overrides(**overrides) if overrides else settings
    configure_logging(settings.log_level)
    if not settings.host:
        click.echo("warning: listening on every interface and MCP has no authentication yet", err=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(settings)
    try:
        runtime.load_plugins()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(runtime, settings)
    config = uvicorn.Config(app, host=settings.host or "0.0.0.0", port=settings.port, log_config=None,
                            lifespan="on", timeout_graceful_shutdown=10)
    uvicorn.Server(config).run()


@cli.command()
def version() -> None:
    """Print opcode's version."""
    click.echo(__version__)


@cli.command()
@click.pass_context
def plugins(ctx: click.Context) -> None:
    """Print every plugin entry point as JSON: status, hooks, actions, step types (exit 0 even if some failed)."""
    from opcode_core.plugins import build_plugin_manager
    from opcode_core.registry import Registry

    settings = _settings(ctx)
    pm, report = build_plugin_manager(settings)
    registry = Registry.from_plugins(pm, report, settings)
    rows = [info.to_dict() for info in report.plugins.values()]
    out: dict[str, Any] = {"plugins": rows}
    if registry.duplicates:
        out["duplicates"] = registry.duplicates
    if report.unknown_names:
        out["unknown_configured"] = report.unknown_names
    out["settings"] = settings.redacted_plugin_settings()
    click.echo(json.dumps(out, indent=2))


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
    inputs = dict(_parse_param(p) for p in params)
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


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not key=value", param_hint="--param")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    """Entry point of the `opcode` console script; plugins' commands are added first."""
    from opcode_core.plugins import build_plugin_manager

    try:
        pm, _ = build_plugin_manager(load_settings())
        pm.hook.opcode_register_commands(cli=cli)
    except ConfigError as exc:
        click.echo(f"warning: plugin commands not loaded: {exc}", err=True)
    cli()

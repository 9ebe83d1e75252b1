"""`opcode diagram`: draw a template or a run from the configured store, as ascii, mermaid or PNG."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path
from typing import Any

import click

from opcode_core.errors import ConfigError, OpcodeError
from opcode_core.settings import Settings, load_settings

FORMATS = ("ascii", "mermaid", "image")


@click.command("diagram")
@click.option("--template", "template_name", metavar="NAME", help="Draw this template's structure.")
@click.option("--version", "version", metavar="VERSION", help="Template version, e.g. v2 (default: latest).")
@click.option("--workflow", "workflow_id", metavar="ID", help="Draw this run with its step statuses.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="ascii", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE, not stdout.")
@click.option("--no-status", is_flag=True, help="For a run: draw the structure only.")
def diagram(template_name: str | None, version: str | None, workflow_id: str | None, fmt: str,
            output: Path | None, no_status: bool) -> None:
    """Draw a template (--template) or a run (--workflow) as ascii, mermaid or a PNG image."""
    if bool(template_name) == bool(workflow_id):
        raise click.UsageError("give exactly one of --template NAME or --workflow ID")
    if version and not template_name:
        raise click.UsageError("--version goes with --template")
    if fmt == "image" and output is None and sys.stdout.isatty():
        raise click.UsageError("--format image writes PNG bytes: give --output FILE or redirect stdout")
    from opcode_core.logs import configure_logging

    configure_logging("warning")
    arguments: dict[str, Any] = {"format": fmt, "include_status": not no_status}
    if template_name:
        arguments.update(template_name=template_name, version=version)
    else:
        arguments["workflow_id"] = workflow_id
    try:
        result = asyncio.run(_render(load_settings(), arguments))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if isinstance(result, OpcodeError):
        raise click.ClickException(str(result))
    if fmt == "image":
        png = base64.b64decode(result["diagram"])
        if output is None:
            sys.stdout.buffer.write(png)
            sys.stdout.buffer.flush()
        else:
            output.write_bytes(png)
            click.echo(f"wrote {output} ({result['width']}x{result['height']} px)", err=True)
    elif output is None:
        click.echo(result["diagram"], nl=False)
    else:
        output.write_text(result["diagram"], encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


async def _render(settings: Settings, arguments: dict[str, Any]) -> dict[str, Any] | OpcodeError:
    from opcode_core import service
    from opcode_core.runtime import Runtime

    settings.home.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(settings)
    async with runtime.running():
        try:
            return await service.render_diagram(runtime, **arguments)
        except OpcodeError as exc:
            return exc  # returned, not raised: the runtime's task group would wrap it in an exception group

"""The hooks opcode calls on its plugins; built-ins implement them exactly as third parties do."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from opcode_core.settings import Settings
    from opcode_core.specs import ActionSpec, ExpressionEngineSpec, StepTypeSpec

hookspec = pluggy.HookspecMarker("opcode")
hookimpl = pluggy.HookimplMarker("opcode")


@hookspec
def opcode_register_actions(settings: Settings) -> list[ActionSpec]:
    """Return the actions this plugin provides.

    :param settings: the loaded settings; `settings.plugin_config(name)` gives a plugin its own block.
    """


@hookspec
def opcode_register_step_types(settings: Settings) -> list[StepTypeSpec]:
    """Return the step types this plugin provides.

    :param settings: the loaded settings.
    """


@hookspec
def opcode_register_expression_engines(settings: Settings) -> list[ExpressionEngineSpec]:
    """Return the expression engines this plugin provides (e.g. `cel`, `jq`).

    :param settings: the loaded settings.
    """


@hookspec
def opcode_register_commands(cli: click.Group) -> None:
    """Add click commands to the `opcode` CLI.

    :param cli: the top-level click group.
    """


@hookspec
def opcode_workflow_event(event: dict[str, Any]) -> None:
    """Observe an event once it is durable; must be quick and must not raise.

    :param event: `{workflow_id, sequence, event_type, step_id, payload, agent_id, timestamp}`.
    """


@hookspec
def opcode_startup(runtime: Any) -> Awaitable[None] | None:
    """Run when the runtime starts; may return an awaitable, which is awaited."""


@hookspec
def opcode_shutdown(runtime: Any) -> Awaitable[None] | None:
    """Run when the runtime stops; may return an awaitable, which is awaited."""

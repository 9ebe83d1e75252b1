"""The objects plugins hand to the core: actions, step types, and the contexts they run with."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opcode_core.engine.definition import StepDef

JSON = dict[str, Any]


class RunServices(Protocol):
    """What an action may ask of the runtime for its own run; never the store or the server."""

    async def emit(self, event_type: str, payload: JSON) -> None:
        """Record a `custom_event` in the run's event log."""

    async def get_context(self) -> JSON:
        """The run's `context` object."""

    async def update_context(self, values: JSON) -> JSON:
        """Merge values into the run's context (`variable_set`) and return the new context."""

    async def notify(self, message: str, data: Any = None, step_id: str | None = None) -> bool:
        """Push a notification to the run's agent; False when it is not connected."""

    async def scope(self) -> JSON:
        """What expressions see of the run: `{steps: {id: output}, inputs, workflow, context}`."""

    async def run_child(self, template_name: str, *, version: str | None, params: JSON) -> JSON:
        """Run a template as a child of this run and return its result."""

    async def sleep_until(self, when: float) -> None:
        """Sleep until epoch time `when` on the runtime's timer service; cancellable like any await."""


@dataclass
class ActionContext:
    """Everything an action's `execute(params, ctx)` may use besides its params."""

    workflow_id: str
    step_id: str
    agent_id: str
    attempt: int
    logger: logging.LoggerAdapter
    settings: JSON
    runtime: RunServices
    # Set once the step is cancelled or timed out; actions that spawn work outside the
    # current task (threads, subprocesses) watch it, plain awaits are cancelled by asyncio.
    timeout_s: float | None = None


Execute = Callable[[JSON, ActionContext], Awaitable[JSON]]


@dataclass(frozen=True)
class ActionSpec:
    """An action: dotted name, description, JSON Schema of its params, async execute."""

    name: str
    description: str
    params_schema: JSON
    execute: Execute
    output_schema: JSON | None = None
    plugin: str | None = field(default=None, compare=False)


class StepContext(Protocol):
    """What the executor offers a step type while it runs one step."""

    workflow_id: str
    agent_id: str
    step: StepDef

    def interpolate(self, value: Any) -> Any:
        """Resolve `${{...}}` references in a value against the run's scope."""

    async def run_action(self, name: str, params: JSON) -> JSON:
        """Validate and execute an action under the worker pool limit."""

    async def emit(self, event_type: str, payload: JSON) -> None:
        """Append an event for this step."""


RunStep = Callable[["StepDef", StepContext], Awaitable[JSON]]


@dataclass(frozen=True)
class StepTypeSpec:
    """A step type: name, JSON Schema of its `config`, and an async run returning the step's output."""

    name: str
    description: str
    config_schema: JSON
    run: RunStep
    # Step types that need `action` set (the action step type) say so for validation.
    requires_action: bool = False
    essential: bool = False
    # Nested step lists in a config, as (id segment, raw steps) pairs, so validation and diagrams
    # can walk them without knowing the step type (condition branches, loop body, parallel branches).
    nested_steps: Callable[[JSON], list[tuple[str, list[JSON]]]] | None = None
    # Expressions in a config, as (config key, source) pairs, compiled at define time to catch errors early.
    expressions: Callable[[JSON], list[tuple[str, str]]] | None = None
    plugin: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ExpressionEngineSpec:
    """An expression language: compile once (errors raise ExpressionError), evaluate many times.

    `evaluate(compiled, activation)` gets plain JSON-like Python values (dicts, lists, str, int, float,
    bool, None) for only the names the expression uses, and returns JSON-like values.
    `references(source)` names the top-level variables an expression reads (e.g. {"steps", "inputs"});
    the executor then builds only those parts of the scope.
    """

    name: str
    description: str
    compile: Callable[[str], Any]
    evaluate: Callable[[Any, JSON], Any]
    references: Callable[[str], set[str]] | None = None
    plugin: str | None = field(default=None, compare=False)

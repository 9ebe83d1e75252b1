"""Fixtures for the built-in action plugins: a real ActionContext and a RunServices that records its calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from opcode_core.specs import ActionContext, ActionSpec


class RecordingServices:
    """A small in-memory RunServices (the seam the runtime fills in) that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.context: dict[str, Any] = {"intent": "test"}
        self.connected = True
        self.notify_error: Exception | None = None
        self.child_result: dict[str, Any] = {"workflow_id": "child-1", "status": "completed", "output": {"ok": 1}}

    async def emit(self, event_type: str, payload: Any) -> None:
        """Record the event."""
        self.calls.append(("emit", event_type, payload))

    async def get_context(self) -> dict[str, Any]:
        """Return a copy of the context."""
        self.calls.append(("get_context",))
        return dict(self.context)

    async def update_context(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge values into the context."""
        self.calls.append(("update_context", values))
        self.context = {**self.context, **values}
        return dict(self.context)

    async def notify(self, message: str, data: Any = None, step_id: str | None = None) -> bool:
        """Pretend to push to the agent's session."""
        self.calls.append(("notify", message, data, step_id))
        if self.notify_error is not None:
            raise self.notify_error
        return self.connected

    async def run_child(self, template_name: str, *, version: str | None, params: dict[str, Any]) -> dict[str, Any]:
        """Pretend to run a child workflow."""
        self.calls.append(("run_child", template_name, version, params))
        return self.child_result


@pytest.fixture
def services() -> RecordingServices:
    """A fresh recording RunServices."""
    return RecordingServices()


@pytest.fixture
def make_ctx(services: RecordingServices) -> Callable[..., ActionContext]:
    """Build an ActionContext; keyword arguments override settings, logger and ids."""

    def make(settings: dict[str, Any] | None = None, **overrides: Any) -> ActionContext:
        fields: dict[str, Any] = {
            "workflow_id": "wf-1",
            "step_id": "step-1",
            "agent_id": "agent-1",
            "attempt": 1,
            "logger": logging.LoggerAdapter(logging.getLogger("test"), {}),
            "settings": settings or {},
            "runtime": services,
        }
        fields.update(overrides)
        return ActionContext(**fields)

    return make


@pytest.fixture
def ctx(make_ctx: Callable[..., ActionContext]) -> ActionContext:
    """An ActionContext with empty plugin settings."""
    return make_ctx()


def schema_errors(spec: ActionSpec, params: Any) -> list[str]:
    """The messages of every JSON Schema error for these params (empty when valid)."""
    return [e.message for e in Draft202012Validator(spec.params_schema).iter_errors(params)]


def check_well_formed(specs: list[ActionSpec], open_schemas: tuple[str, ...] = ()) -> None:
    """Every schema is valid 2020-12, closed (unless listed), and describes every property."""
    for spec in specs:
        Draft202012Validator.check_schema(spec.params_schema)
        assert spec.description, spec.name
        schema = spec.params_schema
        assert schema["type"] == "object", spec.name
        assert schema["additionalProperties"] is (spec.name in open_schemas), spec.name
        for prop, sub in schema["properties"].items():
            assert sub.get("description"), f"{spec.name}.{prop} has no description"


@pytest.fixture
def schema_check() -> Callable[[ActionSpec, Any], list[str]]:
    """`schema_check(spec, params)` → the list of schema errors."""
    return schema_errors


@pytest.fixture
def well_formed() -> Callable[..., None]:
    """`well_formed(specs, open_schemas=())` asserts each schema is complete."""
    return check_well_formed


def actions_through_entry_point(name: str) -> tuple[Any, list[ActionSpec]]:
    """Load a built-in through its `opcode` entry point into a fresh plugin manager; return module and actions."""
    import importlib.metadata

    import pluggy

    from opcode_core import hookspecs

    (ep,) = [ep for ep in importlib.metadata.entry_points(group="opcode") if ep.name == name]
    module = ep.load()
    pm = pluggy.PluginManager("opcode")
    pm.add_hookspecs(hookspecs)
    pm.register(module, name=name)
    pm.check_pending()
    return module, [spec for specs in pm.hook.opcode_register_actions(settings=None) for spec in specs]


@pytest.fixture
def via_entry_point() -> Callable[[str], tuple[Any, list[ActionSpec]]]:
    """`via_entry_point(name)` → (module, actions) as the runtime would load them."""
    return actions_through_entry_point

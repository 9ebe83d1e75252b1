"""Test helpers and pytest fixtures for plugin authors: load plugins as `opcode serve` does, run real workflows.

Registered as a `pytest11` entry point, so any project that installs opcode gets the fixtures
`opcode_settings`, `opcode_loaded_plugins`, `opcode_registry`, `run_action` and `run_workflow` without a conftest.
The fixtures are synchronous and hand out async callables, so they work under pytest-asyncio in either
mode without this module importing an async test plugin.

This module is imported by pytest in every environment where opcode is installed: keep its top-level
imports light (the runtime is imported inside the functions that need it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from opcode_core.errors import OpcodeError

if TYPE_CHECKING:
    import pluggy

    from opcode_core.plugins import PluginReport
    from opcode_core.registry import Registry
    from opcode_core.runtime import Runtime
    from opcode_core.settings import Settings

JSON = dict[str, Any]
TEST_AGENT = "plugin-tests"


def make_settings(
    home: str | Path,
    *,
    plugins: Iterable[str] | None = None,
    plugin_settings: Mapping[str, JSON] | None = None,
    deny: Iterable[str] = (),
    **values: Any,
) -> Settings:
    """Settings for a test home, written to `settings.json` and read back through the real loader.

    The process environment's `OPCODE_*` variables are ignored so a developer's shell cannot change a test.

    :param plugins: the third-party plugins to load (as `OPCODE_LOAD_PLUGINS`); None loads every installed one.
    :param plugin_settings: `plugins.settings`, each plugin's own block by plugin name.
    :param deny: `plugins.deny`.
    :param values: other settings by name (`pool_size=2`).
    """
    from opcode_core.settings import load_settings

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    document: JSON = dict(values)
    document["plugins"] = {"deny": list(deny), "settings": dict(plugin_settings or {})}
    (home / "settings.json").write_text(json.dumps(document, default=str))
    env = {"OPCODE_HOME": str(home)}
    if plugins is not None:
        env["OPCODE_LOAD_PLUGINS"] = ",".join(plugins)
    return load_settings(env)


def with_plugin_settings(settings: Settings, plugin_settings: Mapping[str, JSON]) -> Settings:
    """A copy of settings whose `plugins.settings` has these plugins' blocks replaced."""
    merged = {**settings.plugins.settings, **plugin_settings}
    return replace(settings, plugins=replace(settings.plugins, settings=merged))


@dataclass
class LoadedPlugins:
    """What loading plugins produced: the pluggy manager, the per-plugin report, the registry."""

    pm: pluggy.PluginManager
    report: PluginReport
    registry: Registry

    def row(self, name: str) -> JSON:
        """The `opcode plugins` row of one plugin (KeyError when no entry point has that name)."""
        return self.report.plugins[name].to_dict()


def load_plugins(settings: Settings, extra_plugins: Mapping[str, object] | None = None) -> LoadedPlugins:
    """Discover and load plugins exactly as `opcode serve` does; ConfigError when start-up would stop.

    :param extra_plugins: in-process plugin objects (modules or classes with `@hookimpl` functions) by name.
    """
    from opcode_core.runtime import load_registry

    pm, report, registry = load_registry(settings, dict(extra_plugins) if extra_plugins else None)
    return LoadedPlugins(pm, report, registry)


@asynccontextmanager
async def start_runtime(
    settings: Settings, extra_plugins: Mapping[str, object] | None = None
) -> AsyncIterator[Runtime]:
    """A started runtime (plugins, SQLite store under the settings' home, event writer), stopped on exit."""
    from opcode_core.runtime import Runtime

    rt = Runtime(settings, dict(extra_plugins) if extra_plugins else None)
    async with rt.running():
        yield rt


async def run_in(rt: Runtime, definition: JSON, params: JSON | None = None, *, agent_id: str = TEST_AGENT) -> JSON:
    """Define `definition` as a new template in a started runtime and run it; the `opcode.run` answer."""
    from opcode_core import service

    name = f"test-{uuid.uuid4().hex[:8]}"
    await service.define_template(rt, name=name, definition=definition, agent_id=agent_id)
    return await service.run_workflow(rt, template_name=name, agent_id=agent_id, params=params or {})


async def run_workflow_once(
    settings: Settings,
    definition: JSON,
    params: JSON | None = None,
    *,
    extra_plugins: Mapping[str, object] | None = None,
    agent_id: str = TEST_AGENT,
) -> JSON:
    """Start a runtime, run one workflow to its end (or suspension), stop; the `opcode.run` answer.

    A run that started and failed is an answer with `status: failed`; a definition that does not validate
    raises OpcodeError (VALIDATION_ERROR), as `opcode.define` would.
    """
    async with start_runtime(settings, extra_plugins) as rt:
        return await run_in(rt, definition, params, agent_id=agent_id)


async def run_action_once(
    settings: Settings,
    name: str,
    params: JSON | None = None,
    *,
    extra_plugins: Mapping[str, object] | None = None,
    agent_id: str = TEST_AGENT,
) -> JSON:
    """Run one action as the only step of a real workflow run and return its output.

    A failed step raises OpcodeError with the step's error code (VALIDATION_ERROR for params that do not
    match the action's schema, the code of an ActionError, EXECUTION_ERROR for any other exception).
    """
    step = {"id": "action", "action": name, "params": params or {}}
    result = await run_workflow_once(settings, {"steps": [step]}, extra_plugins=extra_plugins, agent_id=agent_id)
    if result["status"] != "completed":
        error = result.get("error") or result["steps"]["action"].get("error") or {}
        raise OpcodeError(
            error.get("code", "EXECUTION_ERROR"),
            error.get("message", f"run ended {result['status']}"),
            details=error.get("details"),
            step_id=error.get("step_id"),
        )
    return result["steps"]["action"]["output"]


# --- pytest fixtures -------------------------------------------------------------------------------------

RunAction = Callable[..., Awaitable[JSON]]
RunWorkflow = Callable[..., Awaitable[JSON]]


@pytest.fixture
def opcode_settings(tmp_path: Path) -> Settings:
    """Settings with a fresh home under tmp_path and every installed plugin enabled; override to choose."""
    return make_settings(tmp_path / "opcode-home")


@pytest.fixture
def opcode_loaded_plugins(opcode_settings: Settings) -> LoadedPlugins:
    """The plugins loaded as `opcode serve` would load them with `opcode_settings`."""
    return load_plugins(opcode_settings)


@pytest.fixture
def opcode_registry(opcode_loaded_plugins: LoadedPlugins) -> Registry:
    """The action and step-type registry built from the installed plugins."""
    return opcode_loaded_plugins.registry


@pytest.fixture
def run_action(opcode_settings: Settings) -> RunAction:
    """`await run_action(name, params, plugin_settings=None)`: run one action in a real run; its output."""

    async def run(name: str, params: JSON | None = None, *, plugin_settings: Mapping[str, JSON] | None = None,
                  extra_plugins: Mapping[str, object] | None = None) -> JSON:
        settings = with_plugin_settings(opcode_settings, plugin_settings) if plugin_settings else opcode_settings
        return await run_action_once(settings, name, params, extra_plugins=extra_plugins)

    return run


@pytest.fixture
def run_workflow(opcode_settings: Settings) -> RunWorkflow:
    """`await run_workflow(definition, params, plugin_settings=None)`: a real run's `opcode.run` answer."""

    async def run(definition: JSON, params: JSON | None = None, *,
                  plugin_settings: Mapping[str, JSON] | None = None,
                  extra_plugins: Mapping[str, object] | None = None) -> JSON:
        settings = with_plugin_settings(opcode_settings, plugin_settings) if plugin_settings else opcode_settings
        return await run_workflow_once(settings, definition, params, extra_plugins=extra_plugins)

    return run


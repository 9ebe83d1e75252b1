"""The action and step-type registries, assembled from the plugins' register hooks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson
import pluggy
from jsonschema import Draft202012Validator

from opcode_core.engine.expressions import ExpressionEvaluator
from opcode_core.errors import (
    ACTION_UNAVAILABLE,
    ConfigError,
    OpcodeError,
    ValidationError,
    schema_problems,
    summarize,
)
from opcode_core.plugins import PluginReport
from opcode_core.settings import Settings
from opcode_core.specs import ActionSpec, ExpressionEngineSpec, StepTypeSpec

# Bounds of the accepted-params cache: entries per action, and the size of params worth remembering.
ACCEPTED_PER_ACTION = 1024
ACCEPTED_MAX_BYTES = 4096


def _canonical(params: Any) -> bytes | None:
    """Params as canonical JSON (equal bytes: equal JSON, so equal validity); None when not cacheable."""
    try:
        key = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not plain JSON (a Decimal, a non-string key): always validated
        return None
    return key if len(key) <= ACCEPTED_MAX_BYTES else None


class DuplicateNameError(ConfigError):
    """Two plugins registered the same action or step-type name."""


class Registry:
    """Actions and step types by name, each remembering the plugin that provided it."""

    def __init__(
        self,
        actions: dict[str, ActionSpec],
        step_types: dict[str, StepTypeSpec],
        engines: dict[str, ExpressionEngineSpec] | None = None,
    ) -> None:
        self.actions = actions
        self.step_types = step_types
        self.engines = engines if engines is not None else {}
        self.duplicates: list[str] = []
        # Per action: the spec it was built for, its validator, and the params it accepted by their canonical
        # JSON. A workflow run again and again passes the same params; validating costs 20-100 µs each time.
        self._validators: dict[str, tuple[ActionSpec, Draft202012Validator, set[bytes]]] = {}
        self._evaluator: ExpressionEvaluator | None = None

    @property
    def evaluator(self) -> ExpressionEvaluator:
        """The expression engines behind one compile cache, shared by validation and runs."""
        if self._evaluator is None:
            self._evaluator = ExpressionEvaluator(self.engines)
        return self._evaluator

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager, report: PluginReport, settings: Settings) -> Registry:
        """Call every plugin's register hooks; a hook that raises marks its plugin failed."""
        registry = cls({}, {})
        registry._collect(pm, report, settings, "opcode_register_actions", registry.actions, "actions")
        registry._collect(pm, report, settings, "opcode_register_step_types", registry.step_types, "step_types")
        registry._collect(pm, report, settings, "opcode_register_expression_engines", registry.engines, "engines")
        return registry

    def _collect(
        self,
        pm: pluggy.PluginManager,
        report: PluginReport,
        settings: Settings,
        hook_name: str,
        into: dict[str, Any],
        attr: str,
    ) -> None:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            name = impl.plugin_name
            try:
                specs = impl.function(**{a: settings for a in impl.argnames if a == "settings"}) or []
                for spec in specs:
                    _check_spec(spec, name)
            except Exception as exc:
                report.mark_failed(name, exc)
                continue
            for spec in specs:
                if spec.name in into:
                    other = into[spec.name].plugin
                    kind = {"actions": "action", "step_types": "step type", "engines": "expression engine"}[attr]
                    self.duplicates.append(
                        f"{kind} {spec.name!r} is registered by both plugin {other!r} and plugin {name!r}"
                    )
                    continue
                into[spec.name] = replace(spec, plugin=name)
                if name in report.plugins:
                    getattr(report.plugins[name], attr).append(spec.name)

    def add_actions(self, plugin: str, specs: list[ActionSpec], report: PluginReport | None = None) -> None:
        """Add a plugin's actions after start-up (e.g. an external MCP server's tools): all of them, or none.

        A name already held raises DuplicateNameError naming both plugins, as at start-up.
        """
        taken: list[str] = []
        seen: set[str] = set()
        for spec in specs:
            _check_spec(spec, plugin)
            if spec.name in self.actions or spec.name in seen:
                other = self.actions[spec.name].plugin if spec.name in self.actions else plugin
                taken.append(f"action {spec.name!r} is registered by both plugin {other!r} and plugin {plugin!r}")
            seen.add(spec.name)
        if taken:
            raise DuplicateNameError("; ".join(taken))
        for spec in specs:
            self.actions[spec.name] = replace(spec, plugin=plugin)
            self._validators.pop(spec.name, None)
            if report is not None and plugin in report.plugins:
                report.plugins[plugin].actions.append(spec.name)

    def remove_actions(self, plugin: str, names: Iterable[str], report: PluginReport | None = None) -> None:
        """Forget actions a plugin added with add_actions; a name another plugin holds is left alone."""
        for name in list(names):
            if name in self.actions and self.actions[name].plugin == plugin:
                del self.actions[name]
                self._validators.pop(name, None)
                if report is not None and plugin in report.plugins and name in report.plugins[plugin].actions:
                    report.plugins[plugin].actions.remove(name)

    def raise_on_duplicates(self) -> None:
        """Stop start-up when two plugins claimed the same name."""
        if self.duplicates:
            raise DuplicateNameError("; ".join(self.duplicates))

    def action(self, name: str) -> ActionSpec:
        """The action called `name`, or ACTION_UNAVAILABLE."""
        try:
            return self.actions[name]
        except KeyError:
            raise OpcodeError(ACTION_UNAVAILABLE, f"action {name!r} is not available") from None

    def validate_params(self, spec: ActionSpec, params: Any, *, path: str = "params") -> None:
        """Check params against the action's JSON Schema; every problem is listed with its path."""
        cached = self._validators.get(spec.name)
        if cached is None or cached[0] is not spec:
            cached = self._validators[spec.name] = (spec, Draft202012Validator(spec.params_schema), set())
        _, validator, accepted = cached
        key = _canonical(params)
        if key is not None and key in accepted:
            return
        problems = schema_problems(validator, params, path)
        if problems:
            raise ValidationError(f"invalid params for {spec.name}: {summarize(problems)}", problems)
        if key is not None:
            if len(accepted) >= ACCEPTED_PER_ACTION:
                accepted.clear()
            accepted.add(key)

    def describe_actions(self, name: str | None = None, plugin: str | None = None) -> list[dict[str, Any]]:
        """Actions with description and params schema, for agents writing workflows."""
        rows = []
        for spec in sorted(self.actions.values(), key=lambda s: s.name):
            if name and not (spec.name == name or spec.name.startswith(name.rstrip(".") + ".")):
                continue
            if plugin and spec.plugin != plugin:
                continue
            row = {"name": spec.name, "plugin": spec.plugin, "description": spec.description,
                   "params_schema": spec.params_schema}
            if spec.output_schema:
                row["output_schema"] = spec.output_schema
            rows.append(row)
        return rows


def plugin_states(pm: pluggy.PluginManager, settings: Settings, runtime: Any = None) -> dict[str, Any]:
    """What plugins report about their own state (e.g. external MCP servers), by plugin name.

    A plugin takes part by defining `plugin_state(config, runtime)`, given its own settings block and the running
    runtime (None outside a server, as in `opcode plugins`); it returns JSON, or None to be left out.
    """
    states: dict[str, Any] = {}
    for name, plugin in pm.list_name_plugin():
        describe = getattr(plugin, "plugin_state", None)
        if not callable(describe):
            continue
        try:
            state = describe(settings.plugin_config(name), runtime)
        except Exception as exc:
            state = {"error": f"{type(exc).__name__}: {exc}"}
        if state is not None:
            states[name] = state
    return states


def _check_spec(spec: Any, plugin: str) -> None:
    if not isinstance(spec, ActionSpec | StepTypeSpec | ExpressionEngineSpec):
        raise TypeError(f"plugin {plugin!r} returned {type(spec).__name__}, not a spec object")
    if isinstance(spec, ActionSpec):
        Draft202012Validator.check_schema(spec.params_schema)
    elif isinstance(spec, StepTypeSpec):
        Draft202012Validator.check_schema(spec.config_schema)

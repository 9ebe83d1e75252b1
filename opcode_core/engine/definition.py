"""The workflow definition model and its validation: every problem reported at once, each with its path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from opcode_core.engine.dag import find_cycle
from opcode_core.engine.durations import parse_duration
from opcode_core.engine.expressions import split_engine
from opcode_core.engine.interpolation import REFERENCE
from opcode_core.errors import CYCLE_DETECTED, VALIDATION_ERROR, OpcodeError, ValidationError, json_path, summarize

if TYPE_CHECKING:
    from opcode_core.registry import Registry

STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
ON_TIMEOUT = ("fail", "suspend", "cancel")
BACKOFFS = ("none", "linear", "exponential", "constant")
ERROR_STRATEGIES = ("ignore", "fail_workflow", "fallback_step", "retry")

STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "type": {"type": "string"},
        "action": {"type": "string"},
        "params": {"type": "object"},
        "depends_on": {"type": "array", "items": {"type": "string"}},
        "condition": {"type": "string"},
        "timeout": {"type": ["string", "number"]},
        "retry": {
            "type": "object",
            "properties": {
                "max": {"type": "integer", "minimum": 0},
                "backoff": {"enum": list(BACKOFFS)},
                "delay": {"type": ["string", "number"]},
                "max_delay": {"type": ["string", "number"]},
            },
            "additionalProperties": False,
        },
        "on_error": {
            "type": "object",
            "properties": {
                "strategy": {"enum": list(ERROR_STRATEGIES)},
                "fallback_step": {"type": "string"},
            },
            "required": ["strategy"],
            "additionalProperties": False,
        },
        "config": {"type": "object"},
        "description": {"type": "string"},
        "name": {"type": "string"},
    },
    "additionalProperties": False,
}

DEFINITION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["steps"],
    "properties": {
        "steps": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "inputs": {"type": "object"},
        "context": {"type": "object"},
        "timeout": {"type": ["string", "number"]},
        "on_timeout": {"enum": list(ON_TIMEOUT)},
        "on_complete": {"type": "object"},
        "on_error": {"type": "object"},
        "metadata": {"type": "object"},
        "output": {},
    },
    "additionalProperties": False,
}

_definition_validator = Draft202012Validator(DEFINITION_SCHEMA)
_step_validator = Draft202012Validator(STEP_SCHEMA)


@dataclass
class StepDef:
    """One step as written, with durations parsed."""

    id: str
    type: str = "action"
    action: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    condition: str | None = None
    timeout: float | None = None
    retry: dict[str, Any] | None = None
    on_error: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> StepDef:
        """Build from an already validated step object."""
        timeout = raw.get("timeout")
        return cls(
            id=raw["id"],
            type=raw.get("type") or "action",
            action=raw.get("action"),
            params=raw.get("params") or {},
            depends_on=list(raw.get("depends_on") or []),
            condition=raw.get("condition"),
            timeout=parse_duration(timeout) if timeout not in (None, "") else None,
            retry=raw.get("retry"),
            on_error=raw.get("on_error"),
            config=raw.get("config") or {},
            raw=raw,
        )


@dataclass
class WorkflowDef:
    """A validated workflow definition."""

    steps: list[StepDef]
    inputs: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    on_timeout: str = "fail"
    on_complete: StepDef | None = None
    on_error: StepDef | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def terminal_steps(self) -> list[str]:
        """Top-level steps no other top-level step depends on."""
        needed = {dep for step in self.steps for dep in step.depends_on}
        return [s.id for s in self.steps if s.id not in needed]


def parse_steps(raw_steps: list[dict[str, Any]]) -> list[StepDef]:
    """StepDefs for an already validated list (nested lists included)."""
    return [StepDef.from_raw(raw) for raw in raw_steps]


def load_definition(raw: Any, registry: Registry) -> WorkflowDef:
    """Validate a definition against the registry and return the model; ValidationError lists every problem."""
    problems = validate_definition(raw, registry)
    if problems:
        cycles = [p for p in problems if p.get("code") == CYCLE_DETECTED]
        if cycles and len(cycles) == len(problems):
            raise OpcodeError(CYCLE_DETECTED, cycles[0]["message"], details={"problems": problems})
        summary = summarize(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValidationError(f"invalid workflow definition: {summary}{more}", problems)
    timeout = raw.get("timeout")
    return WorkflowDef(
        steps=parse_steps(raw["steps"]),
        inputs=raw.get("inputs") or {},
        context=raw.get("context") or {},
        timeout=parse_duration(timeout) if timeout not in (None, "") else None,
        on_timeout=raw.get("on_timeout") or "fail",
        on_complete=StepDef.from_raw(raw["on_complete"]) if raw.get("on_complete") else None,
        on_error=StepDef.from_raw(raw["on_error"]) if raw.get("on_error") else None,
        metadata=raw.get("metadata") or {},
        output=raw.get("output"),
        raw=raw,
    )


def validate_definition(raw: Any, registry: Registry) -> list[dict[str, str]]:
    """Every problem in a definition as `{path, message, code}`; an empty list means valid."""
    problems: list[dict[str, str]] = []
    add = _collector(problems)
    for err in _definition_validator.iter_errors(raw):
        add(json_path("definition", err.absolute_path), err.message)
    if problems or not isinstance(raw, dict):
        return problems
    _check_duration(raw.get("timeout"), "definition.timeout", add)
    known: set[str] = set()
    _validate_step_list(raw["steps"], "definition.steps", registry, add, seen_ids={}, known=known)
    for hook in ("on_complete", "on_error"):
        if raw.get(hook):
            _validate_step_list([raw[hook]], f"definition.{hook}", registry, add, seen_ids={}, single=True,
                                known=known)
    if not problems:
        _check_references(raw, known, registry, add)
    return problems


def _collector(problems: list[dict[str, str]]):
    def add(path: str, message: str, code: str = VALIDATION_ERROR) -> None:
        problems.append({"path": path, "message": message, "code": code})

    add.problems = problems  # type: ignore[attr-defined]
    return add


def _validate_step_list(
    steps: list[Any],
    path: str,
    registry: Registry,
    add: Any,
    seen_ids: dict[str, str],
    single: bool = False,
    known: set[str] | None = None,
    prefix: str = "",
) -> None:
    known = known if known is not None else set()
    ids: dict[str, int] = {}
    for index, raw in enumerate(steps):
        where = path if single else f"{path}[{index}]"
        errors = list(_step_validator.iter_errors(raw))
        for err in errors:
            add(json_path(where, err.absolute_path), err.message)
        if errors:
            continue
        step_id = raw["id"]
        if not STEP_ID.match(step_id):
            add(f"{where}.id", f"step id {step_id!r} must start with a letter or digit and hold only "
                "letters, digits, '_' and '-'")
        if step_id in ids:
            add(f"{where}.id", f"duplicate step id {step_id!r} (also at index {ids[step_id]})")
        ids.setdefault(step_id, index)
        known.update((step_id, prefix + step_id))
        _validate_step(raw, where, registry, add, seen_ids, known, prefix)
    known = set(ids)
    deps: dict[str, list[str]] = {}
    for index, raw in enumerate(steps):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            continue
        where = path if single else f"{path}[{index}]"
        for dep_index, dep in enumerate(raw.get("depends_on") or []):
            if not isinstance(dep, str):
                continue
            if dep not in known:
                add(f"{where}.depends_on[{dep_index}]", f"unknown step {dep!r} in depends_on of {raw['id']!r}")
            elif dep == raw["id"]:
                add(f"{where}.depends_on[{dep_index}]", f"step {dep!r} depends on itself", CYCLE_DETECTED)
        deps[raw["id"]] = [d for d in raw.get("depends_on") or [] if isinstance(d, str) and d != raw["id"]]
    cycle = find_cycle(deps)
    if cycle:
        add(path, f"dependency cycle: {' -> '.join(cycle)}", CYCLE_DETECTED)


def _validate_step(
    raw: dict[str, Any], where: str, registry: Registry, add: Any, seen: dict[str, str], known: set[str], prefix: str
) -> None:
    type_name = raw.get("type") or "action"
    spec = registry.step_types.get(type_name)
    if spec is None:
        add(f"{where}.type", f"unknown step type {type_name!r} (known: {', '.join(sorted(registry.step_types))})")
        return
    if spec.requires_action:
        action = raw.get("action")
        if not action:
            add(f"{where}.action", f"step {raw['id']!r} of type {type_name!r} needs an action")
        elif action not in registry.actions:
            add(f"{where}.action", f"unknown action {action!r}")
    config = raw.get("config") or {}
    for err in Draft202012Validator(spec.config_schema).iter_errors(config):
        add(json_path(f"{where}.config", err.absolute_path), err.message)
    _check_duration(raw.get("timeout"), f"{where}.timeout", add)
    retry = raw.get("retry") or {}
    for key in ("delay", "max_delay"):
        _check_duration(retry.get(key), f"{where}.retry.{key}", add)
    on_error = raw.get("on_error") or {}
    if on_error.get("strategy") == "fallback_step" and not on_error.get("fallback_step"):
        add(f"{where}.on_error.fallback_step", "strategy fallback_step needs fallback_step")
    if isinstance(raw.get("condition"), str):
        _check_expression(raw["condition"], f"{where}.condition", registry, add)
    if spec.expressions and not any(p["path"].startswith(f"{where}.config") for p in add.problems):
        for key, source in spec.expressions(config):
            _check_expression(source, f"{where}.config.{key}", registry, add)
    if spec.nested_steps:
        for segment, nested in spec.nested_steps(config):
            if isinstance(nested, list):
                # Loop bodies repeat as iter_<i>; their full ids are not known statically, local ids are.
                child = f"{prefix}{raw['id']}.{segment}."
                _validate_step_list(nested, f"{where}.config.{segment}", registry, add, seen, known=known,
                                    prefix=child)


def _check_expression(source: str, path: str, registry: Registry, add: Any) -> None:
    engine, body = split_engine(source, "cel")
    if engine not in registry.engines:
        add(path, f"expression engine {engine!r} is not available (known: {', '.join(sorted(registry.engines))})")
        return
    try:
        registry.evaluator.compile(engine, body)
    except OpcodeError as exc:
        add(path, exc.message)


def _check_references(raw: dict[str, Any], known: set[str], registry: Registry, add: Any) -> None:
    """`${{steps.x...}}` and CEL `steps['x']` must name a step that exists somewhere in the definition."""

    def known_prefix(ref: str) -> bool:
        cuts = [i for i, ch in enumerate(ref) if ch in ".["] + [len(ref)]
        return any(ref[:cut] in known for cut in cuts)

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            for match in REFERENCE.finditer(value):
                ref = match.group(1).strip()
                if ref.startswith("steps.") and not known_prefix(ref[len("steps."):]):
                    add(path, f"${{{{{ref}}}}} refers to a step that does not exist in this workflow")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    walk(raw.get("steps"), "definition.steps")
    walk(raw.get("output"), "definition.output")


def _check_duration(value: Any, path: str, add: Any) -> None:
    if value in (None, ""):
        return
    try:
        parse_duration(value)
    except ValueError as exc:
        add(path, str(exc))

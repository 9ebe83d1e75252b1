"""`${{namespace.path}}` references in params, resolved against a run's scope (SPEC §6)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from opcode_core.errors import INTERPOLATION_ERROR, VAULT_ERROR, OpcodeError

REFERENCE = re.compile(r"\$\{\{\s*([^{}]+?)\s*\}\}")
_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\[['\"]([^'\"]+)['\"]\]")
NAMESPACES = ("steps", "inputs", "workflow", "context", "secrets", "loop")
# `steps['id'].field`, as CEL and the original's examples write it: the step's output, indexed by id.
_STEP_INDEX = re.compile(r"""steps\[\s*(['"])(?P<id>[^'"]+)\1\s*\](?P<tail>.*)$""", re.S)


@dataclass
class StepResult:
    """What a finished (or skipped) step leaves in the scope."""

    status: str
    output: Any = None
    error: dict[str, Any] | None = None


@dataclass
class Scope:
    """Everything `${{...}}` can read during one run; nested scopes see their parent's steps."""

    inputs: Mapping[str, Any] = field(default_factory=dict)
    workflow: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    steps: dict[str, StepResult] = field(default_factory=dict)
    loop: Mapping[str, Any] | None = None
    secret_lookup: Callable[[str], str] | None = None
    # Id prefixes of the nested lists this scope is inside, innermost first ("loop.iter_2."), so a
    # local id means the step of the same iteration or branch.
    prefixes: tuple[str, ...] = ()

    def child(self, prefix: str, loop: Mapping[str, Any] | None = None) -> Scope:
        """The scope of a nested step list whose ids carry `prefix`."""
        return replace(self, prefixes=(prefix, *self.prefixes), loop=loop if loop is not None else self.loop)

    def find_step(self, ref: str) -> tuple[str, str] | None:
        """Split `id.rest` into (full step id, rest): local ids first, then the longest known id."""
        if "." not in ref and "[" not in ref:  # a bare id (an expression's steps['id']): no shorter id to try
            for prefix in (*self.prefixes, ""):
                if prefix + ref in self.steps:
                    return prefix + ref, ""
            return None
        cuts = [i for i, ch in enumerate(ref) if ch in ".["] + [len(ref)]
        for prefix in (*self.prefixes, ""):
            for cut in reversed(cuts):
                full = prefix + ref[:cut]
                if full in self.steps:
                    return full, ref[cut:]
        return None

    def step_output(self, step_id: str) -> Any:
        """The output of a step named as an expression would (a local id inside a loop body)."""
        found = self.find_step(step_id)
        return self.steps[found[0]].output if found and found[1] == "" else None


def interpolate(value: Any, scope: Scope) -> Any:
    """Resolve references in strings, recursively through lists and dicts; secrets in a second pass."""
    if type(value) is dict and not value:
        return {}  # the params of many steps: a fresh dict, as the walk would make
    return _walk(value, lambda text: _render_both(text, scope))


def _render_both(text: str, scope: Scope) -> Any:
    # The secrets pass runs on each string right after the first pass, so one walk of the params does both:
    # a reference that resolved to text holding `${{secrets.X}}` (e.g. an input default) is resolved too.
    first = _render(text, scope, secrets=False)
    if isinstance(first, str) and "${{" in first and "secrets." in first:
        return _render(first, scope, secrets=True)
    return _walk(first, lambda inner: _render(inner, scope, secrets=True)) if _has_secret_ref(first) else first


def _has_secret_ref(value: Any) -> bool:
    if isinstance(value, str):
        return "${{" in value and "secrets." in value
    if isinstance(value, list):
        return any(_has_secret_ref(v) for v in value)
    if isinstance(value, dict):
        return any(_has_secret_ref(v) for v in value.values())
    return False


def _walk(value: Any, render: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return render(value) if "${{" in value else value
    if isinstance(value, list):
        return [_walk(v, render) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, render) for k, v in value.items()}
    return value


def _render(text: str, scope: Scope, *, secrets: bool) -> Any:
    whole = REFERENCE.fullmatch(text)
    if whole:
        ref = whole.group(1)
        if _is_secret(ref) != secrets:
            return text
        return resolve(ref, scope)

    def substitute(match: re.Match[str]) -> str:
        ref = match.group(1)
        if _is_secret(ref) != secrets:
            return match.group(0)
        value = resolve(ref, scope)
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    return REFERENCE.sub(substitute, text)


def _is_secret(ref: str) -> bool:
    return ref.startswith("secrets.")


def resolve(ref: str, scope: Scope) -> Any:
    """The value a reference such as `steps.fetch.output.body[0].id` names; INTERPOLATION_ERROR if none."""
    indexed = _STEP_INDEX.match(ref)
    if indexed:
        return _resolve_step(ref, f"{indexed['id']}.output{indexed['tail']}", scope)
    namespace, _, rest = ref.partition(".")
    if namespace not in NAMESPACES:
        raise _error(ref, f"unknown namespace {namespace!r} (expected one of {', '.join(NAMESPACES)})")
    if namespace == "steps":
        return _resolve_step(ref, rest, scope)
    if namespace == "secrets":
        if scope.secret_lookup is None:
            raise OpcodeError(VAULT_ERROR, f"cannot resolve ${{{{{ref}}}}}: no secret vault is configured")
        return scope.secret_lookup(rest)
    if namespace == "loop" and scope.loop is None:
        raise _error(ref, "loop variables exist only inside a loop body")
    root = {"inputs": scope.inputs, "workflow": scope.workflow, "context": scope.context, "loop": scope.loop}
    return _follow(root[namespace], "." + rest if rest else "", ref)


def _resolve_step(ref: str, rest: str, scope: Scope) -> Any:
    # Nested ids contain dots (`cond.true.x`), so the longest known id wins.
    found = scope.find_step(rest)
    if found is None:
        raise _error(ref, f"unknown step {rest.split('.')[0]!r} (no such step has run yet)")
    step_id, tail = found
    result = scope.steps[step_id]
    if tail == "" or tail == ".output" or tail.startswith((".output.", ".output[")):
        if result.status == "skipped" and result.output is None:
            raise _error(ref, f"step {step_id!r} was skipped; it has no output")
        return _follow(result.output, tail[len(".output"):] if tail else "", ref)
    if tail == ".status":
        return result.status
    if tail == ".error":
        return result.error
    raise _error(ref, f"expected steps.{step_id}.output... or steps.{step_id}.status")


def _follow(value: Any, path: str, ref: str) -> Any:
    pos = 0
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if not match:
            raise _error(ref, f"cannot parse path {path[pos:]!r}")
        key, index, quoted = match.groups()
        pos = match.end()
        if index is not None:
            if not isinstance(value, list) or int(index) >= len(value):
                raise _error(ref, f"no element [{index}]")
            value = value[int(index)]
            continue
        name = key if key is not None else quoted
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            raise _error(ref, f"no field {name!r}")
    return value


def _error(ref: str, why: str) -> OpcodeError:
    return OpcodeError(INTERPOLATION_ERROR, f"cannot resolve ${{{{{ref}}}}}: {why}", details={"reference": ref})

"""The `cel` expression engine (Common Expression Language) for conditions, guards and loops.

Default implementation: the Rust-backed `common-expression-language` (module `cel`): it takes plain
dicts with mixed int/float numbers as JSON gives them, and evaluates small expressions in microseconds.
`cel-python` stays selectable with `plugins.settings.cel.implementation = "cel-python"`.
"""

from __future__ import annotations

import re
from typing import Any

from opcode_core import ExpressionEngineSpec, ExpressionError, hookimpl

NAMES = ("steps", "inputs", "workflow", "context", "iter")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_STEP_ACCESS = re.compile(
    r"""\bsteps\s*(?:\[\s*(?P<q>['"])(?P<quoted>[^'"]+)(?P=q)\s*\]|\.\s*(?P<dotted>[A-Za-z_]\w*))"""
)


def references(source: str) -> set[str]:
    """Top-level names the expression reads, plus `steps:<id>` per step it indexes (`steps:*` if unsure)."""
    refs: set[str] = set()
    code = _STRING.sub(lambda m: '""' if not _follows_steps(source, m.start()) else m.group(0), source)
    bare = _STRING.sub('""', source)
    for name in NAMES:
        if re.search(rf"(?<![\w.]){name}\b", bare):
            refs.add(name)
    if "steps" in refs:
        accesses = list(_STEP_ACCESS.finditer(code))
        for match in accesses:
            refs.add("steps:" + (match.group("quoted") or match.group("dotted")))
        if len(re.findall(r"(?<![\w.])steps\b", bare)) > len(accesses):
            refs.add("steps:*")
    return refs


def _follows_steps(source: str, pos: int) -> bool:
    return re.search(r"\bsteps\s*\[\s*$", source[:pos]) is not None


def _compile_rust(source: str) -> Any:
    import cel

    try:
        return cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        raise ExpressionError(str(exc).split("\n")[0], expression=source, engine="cel") from None


def _evaluate_rust(program: Any, activation: dict[str, Any]) -> Any:
    try:
        return program.execute(activation)
    except Exception as exc:
        raise ExpressionError(f"{type(exc).__name__}: {exc}", expression=program.source, engine="cel",
                              code="EXECUTION_ERROR") from None


@hookimpl
def opcode_register_expression_engines(settings: Any) -> list[ExpressionEngineSpec]:
    """Provide the `cel` engine."""
    return [ExpressionEngineSpec(
        name="cel",
        description="Common Expression Language; `steps['id']` is a step's output, `iter.item` / `iter.index` "
        "inside loops, plus `inputs`, `workflow`, `context`.",
        compile=_compile_rust,
        evaluate=_evaluate_rust,
        references=references,
    )]

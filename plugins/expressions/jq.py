"""The `jq` expression engine, for transforms and `over: "jq: ..."` (the whole scope is its input)."""

from __future__ import annotations

from typing import Any

from opcode_core import ExpressionEngineSpec, ExpressionError, hookimpl


def _compile(source: str) -> Any:
    import jq

    try:
        return (source, jq.compile(source))
    except ValueError as exc:
        raise ExpressionError(str(exc), expression=source, engine="jq") from None


def _evaluate(compiled: Any, activation: dict[str, Any]) -> Any:
    source, program = compiled
    try:
        outputs = program.input_value(activation).all()
    except ValueError as exc:
        raise ExpressionError(str(exc), expression=source, engine="jq", code="EXECUTION_ERROR") from None
    # One output is the value; several (a stream such as `.[]`) are collected into a list.
    return outputs[0] if len(outputs) == 1 else outputs


@hookimpl
def opcode_register_expression_engines(settings: Any) -> list[ExpressionEngineSpec]:
    """Provide the `jq` engine."""
    return [ExpressionEngineSpec(
        name="jq",
        description="jq programs over {steps, inputs, workflow, context, iter}; several outputs become a list.",
        compile=_compile,
        evaluate=_evaluate,
        references=lambda source: {"steps:*", "inputs", "workflow", "context", "iter"},
    )]

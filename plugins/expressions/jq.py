"""The `jq` expression engine: transforms and `over: "jq: ..."`, with the whole scope as the program's input.

The input is `{steps, inputs, workflow, context, iter}` (`.steps["list"].entries`, `.inputs.items | map(.id)`).
Output rule, as the original's gojq engine: no output is null, one output is that value, several outputs
(a stream such as `.items[]`) are collected into a list in order. A stream that happens to yield one value
therefore gives the value itself; write `[.items[]]` to always get a list.

As the original does, programs are sandboxed from the server: `env` and `$ENV` are empty objects, and
`import`/`include` (which read module files from disk) are rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opcode_core import ExpressionEngineSpec, ExpressionError, hookimpl
from opcode_core.errors import EXECUTION_ERROR

ENGINE = "jq"
REFERENCES = frozenset({"steps:*", "inputs", "workflow", "context", "iter"})

# The user's program runs inside this wrapper; it starts on the wrapper's second line, and the newline
# before `)` keeps a trailing `# comment` from swallowing the parenthesis.
_WRAP_HEAD = "def env: {}; {} as $ENV | (\n"
_WRAP_TAIL = "\n)"
_JQ_ERROR = re.compile(r"jq: error: (.*?) at <[^>]*>, line (\d+), column (\d+)", re.DOTALL)


@dataclass(frozen=True)
class Compiled:
    """A compiled jq program and its source."""

    source: str
    program: Any


def _position(source: str, line: int, column: int) -> int:
    """Where in the user's source a wrapper line/column (1-based, user code from line 2) points."""
    lines = source.split("\n")
    line = max(line - 1, 1)
    offset = sum(len(text) + 1 for text in lines[:line - 1]) + max(column - 1, 0)
    return min(offset, len(source))


def compile_jq(source: str) -> Compiled:
    """Compile once; a syntax error or an undefined function raises ExpressionError (VALIDATION_ERROR)."""
    import jq

    try:
        return Compiled(source, jq.compile(_WRAP_HEAD + source + _WRAP_TAIL))
    except ValueError as exc:
        found = _JQ_ERROR.search(str(exc))
        if found is None:
            raise ExpressionError(str(exc).split("\n")[0], expression=source, engine=ENGINE) from None
        message = found.group(1)
        if "unexpected import" in message or "unexpected include" in message:
            message = "modules (import/include) are not available"
        raise ExpressionError(message, expression=source, engine=ENGINE,
                              position=_position(source, int(found.group(2)), int(found.group(3)))) from None


def evaluate_jq(compiled: Compiled, activation: dict[str, Any]) -> Any:
    """Run the program on the activation; null, the single output, or the list of outputs."""
    try:
        outputs = compiled.program.input_value(activation).all()
    except Exception as exc:  # jq reports runtime errors (and `error(...)`) as ValueError; JSON encoding as TypeError
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ExpressionError(message, expression=compiled.source, engine=ENGINE, code=EXECUTION_ERROR) from None
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else outputs


def references(source: str) -> set[str]:
    """Everything: a jq program may read any part of its input, and parsing it to find out costs more."""
    return set(REFERENCES)


@hookimpl
def opcode_register_expression_engines(settings: Any) -> list[ExpressionEngineSpec]:
    """Provide the `jq` engine."""
    return [ExpressionEngineSpec(
        name=ENGINE,
        description="jq programs over {steps, inputs, workflow, context, iter}: none outputs null, one its value, "
        "several a list.",
        compile=compile_jq,
        evaluate=evaluate_jq,
        references=references,
    )]

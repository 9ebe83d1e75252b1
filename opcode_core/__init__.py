"""opcode's core: what plugin authors import (`hookimpl`, `ActionSpec`, `ActionError`, ...)."""

from opcode_core.errors import ActionError, ExpressionError, OpcodeError
from opcode_core.hookspecs import hookimpl
from opcode_core.specs import ActionContext, ActionSpec, ExpressionEngineSpec, StepTypeSpec

__version__ = "0.1.0"

__all__ = [
    "ActionContext",
    "ActionError",
    "ActionSpec",
    "ExpressionEngineSpec",
    "ExpressionError",
    "OpcodeError",
    "StepTypeSpec",
    "__version__",
    "hookimpl",
]

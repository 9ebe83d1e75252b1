"""Error codes and the exceptions that carry them, from plugins to the MCP layer."""

from __future__ import annotations

from typing import Any

VALIDATION_ERROR = "VALIDATION_ERROR"
EXECUTION_ERROR = "EXECUTION_ERROR"
TIMEOUT_ERROR = "TIMEOUT_ERROR"
NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
INVALID_TRANSITION = "INVALID_TRANSITION"
CYCLE_DETECTED = "CYCLE_DETECTED"
STEP_FAILED = "STEP_FAILED"
CANCELLED = "CANCELLED"
SIGNAL_FAILED = "SIGNAL_FAILED"
RETRY_EXHAUSTED = "RETRY_EXHAUSTED"
STORE_ERROR = "STORE_ERROR"
INTERPOLATION_ERROR = "INTERPOLATION_ERROR"
CIRCUIT_OPEN = "CIRCUIT_OPEN"
NON_RETRYABLE = "NON_RETRYABLE"
PERMISSION_DENIED = "PERMISSION_DENIED"
ACTION_UNAVAILABLE = "ACTION_UNAVAILABLE"
ASSERTION_FAILED = "ASSERTION_FAILED"
ISOLATION_ERROR = "ISOLATION_ERROR"
PATH_DENIED = "PATH_DENIED"
VAULT_ERROR = "VAULT_ERROR"
NOT_SUPPORTED = "NOT_SUPPORTED"

ALL_CODES = frozenset(
    {
        VALIDATION_ERROR, EXECUTION_ERROR, TIMEOUT_ERROR, NOT_FOUND, CONFLICT, INVALID_TRANSITION,
        CYCLE_DETECTED, STEP_FAILED, CANCELLED, SIGNAL_FAILED, RETRY_EXHAUSTED, STORE_ERROR,
        INTERPOLATION_ERROR, CIRCUIT_OPEN, NON_RETRYABLE, PERMISSION_DENIED, ACTION_UNAVAILABLE,
        ASSERTION_FAILED, ISOLATION_ERROR, PATH_DENIED, VAULT_ERROR, NOT_SUPPORTED,
    }
)

NON_RETRYABLE_CODES = frozenset(
    {
        VALIDATION_ERROR, NOT_FOUND, CONFLICT, INVALID_TRANSITION, CYCLE_DETECTED, NON_RETRYABLE,
        PERMISSION_DENIED, CIRCUIT_OPEN, ASSERTION_FAILED, PATH_DENIED,
    }
)


class OpcodeError(Exception):
    """An error with a code from SPEC §7, meant to be shown to the agent."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Any = None,
        step_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.step_id = step_id

    @property
    def retryable(self) -> bool:
        """Whether a retry policy may run the failed work again."""
        return self.code not in NON_RETRYABLE_CODES

    def to_dict(self) -> dict[str, Any]:
        """The error object `{code, message, details?, step_id?}`."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        if self.step_id is not None:
            out["step_id"] = self.step_id
        return out

    def __str__(self) -> str:
        if self.step_id:
            return f"[{self.code}] step {self.step_id}: {self.message}"
        return f"[{self.code}] {self.message}"


class ActionError(OpcodeError):
    """Raised by an action on purpose; its message is written for the agent."""

    def __init__(
        self,
        message: str,
        *,
        code: str = EXECUTION_ERROR,
        details: Any = None,
        output: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(code, message, details=details)
        # Whatever the failed attempt produced (e.g. a shell's exit code) stays readable by later steps.
        self.output = output


class ValidationError(OpcodeError):
    """A definition or an argument is invalid; `problems` lists each with its path."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(VALIDATION_ERROR, message, details={"problems": problems} if problems else None)
        self.problems = problems or []


def json_path(prefix: str, parts: Any) -> str:
    """A problem's path: `prefix` followed by `.key` and `[index]` parts, e.g. `steps[2].params.url`."""
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def schema_problems(validator: Any, instance: Any, prefix: str) -> list[dict[str, str]]:
    """Every error a jsonschema validator finds in `instance`, as problems with paths under `prefix`, by path."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [{"path": json_path(prefix, err.absolute_path), "message": err.message} for err in errors]


def summarize(problems: list[dict[str, str]]) -> str:
    """Problems as one line: `path: message; path: message`."""
    return "; ".join(f"{p['path']}: {p['message']}" for p in problems)


class ExpressionError(OpcodeError):
    """An expression that does not compile or fails to evaluate; names the expression and where."""

    def __init__(self, message: str, *, expression: str, engine: str, position: int | None = None,
                 code: str = VALIDATION_ERROR) -> None:
        where = f" at position {position}" if position is not None else ""
        super().__init__(code, f"{engine} expression {expression!r}{where}: {message}",
                         details={"expression": expression, "engine": engine, "position": position})
        self.expression = expression
        self.engine = engine
        self.position = position


class ConfigError(Exception):
    """A setting or the plugin configuration is invalid; start-up stops with this message."""


def as_opcode_error(exc: BaseException, *, step_id: str | None = None) -> OpcodeError:
    """Wrap any exception as an OpcodeError, keeping an existing code."""
    if isinstance(exc, OpcodeError):
        if step_id and not exc.step_id:
            exc.step_id = step_id
        return exc
    return OpcodeError(EXECUTION_ERROR, f"{type(exc).__name__}: {exc}", step_id=step_id)

"""shell.exec: run a command in its own process group, capture its output, and never leave it behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
import subprocess
import time
from typing import Any

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.engine.durations import DURATION_PATTERN, parse_duration
from opcode_core.errors import EXECUTION_ERROR, ISOLATION_ERROR, TIMEOUT_ERROR, VALIDATION_ERROR
from opcode_plugins.shell_limits import LIMITS_SCHEMA, Isolation, prepare

JSON = dict[str, Any]

DEFAULT_TIMEOUT = "30s"
# Plugin settings (`plugins.settings.shell`) may change these.
DEFAULT_MAX_OUTPUT_BYTES = 10 * 1024 * 1024
DEFAULT_KILL_GRACE_S = 2.0

_SCALAR = {"type": ["string", "number", "boolean"]}

EXEC_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "minLength": 1,
                    "description": "Program to run (looked up on PATH), or a shell script line when `shell` is true."},
        "args": {"type": "array", "items": _SCALAR, "default": [],
                 "description": "Arguments, passed as-is (numbers and booleans as JSON text); with `shell` they are "
                 "quoted and appended to `command`, so they are never parsed by the shell."},
        "env": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                "default": {}, "description": "Variables set over the inherited environment; null unsets one."},
        "cwd": {"type": "string", "minLength": 1, "description": "Working directory (default: the server's)."},
        "workdir": {"type": "string", "minLength": 1, "description": "Alias of `cwd`."},
        "stdin": {"description": "Standard input: a string as-is, any other JSON value serialized as JSON. "
                  "Without it the command reads an empty input."},
        "timeout": {"type": ["string", "number"], "pattern": DURATION_PATTERN, "exclusiveMinimum": 0,
                    "default": DEFAULT_TIMEOUT,
                    "description": "Go duration (`500ms`, `30s`, `1h30m`) or seconds; the whole process group is "
                    "killed when it expires."},
        "shell": {"type": "boolean", "default": False, "description": "Run `command` through `/bin/sh -c`."},
        "limits": LIMITS_SCHEMA,
    },
    "required": ["command"],
    "additionalProperties": False,
}

OUTPUT_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "stdout": {"description": "Parsed JSON when the whole trimmed stdout is JSON, else the text."},
        "stdout_raw": {"type": "string"},
        "stderr": {"type": "string"},
        "exit_code": {"type": "integer", "description": "Negative: killed by that signal number."},
        "duration_ms": {"type": "integer"},
        "killed": {"type": "boolean", "description": "True when the timeout or a cancellation killed it."},
        "stdout_truncated": {"type": "boolean"},
        "stderr_truncated": {"type": "boolean"},
        "isolation": {"enum": ["cgroup", "rlimit", "none"], "description": "How `limits` were applied."},
        "limits": {"type": "object", "description": "The limits in force (step's and settings', smaller wins)."},
        "limit_exceeded": {"type": ["string", "null"], "description": "memory_mb (cgroup OOM kill) or "
                           "cpu_seconds (SIGXCPU) when a limit ended the command."},
    },
}

# Cleanups that must outlive a cancelled step (asyncio keeps only weak references to tasks).
_cleanups: set[asyncio.Task[None]] = set()


class _Capture(asyncio.Protocol):
    """Collects one pipe up to a cap, draining (and counting) the rest so the writer never blocks."""

    def __init__(self, cap: int, loop: asyncio.AbstractEventLoop) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.total = 0
        self.closed: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += data[:room]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.buf)

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def _arg_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _argv(params: JSON) -> list[str]:
    args = [_arg_text(a) for a in params.get("args") or []]
    if params.get("shell", False):
        line = " ".join([params["command"], *(shlex.quote(a) for a in args)])
        return ["/bin/sh", "-c", line]
    return [params["command"], *args]


def _environment(overrides: JSON) -> dict[str, str] | None:
    if not overrides:
        return None
    env = dict(os.environ)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = _arg_text(value)
    return env


def _cwd(params: JSON) -> str | None:
    cwd, workdir = params.get("cwd"), params.get("workdir")
    if cwd and workdir and cwd != workdir:
        raise ActionError(f"cwd {cwd!r} and workdir {workdir!r} disagree; give one", code=VALIDATION_ERROR)
    path = cwd or workdir
    if path and not os.path.isdir(path):
        raise ActionError(f"working directory {path!r} does not exist", code=EXECUTION_ERROR)
    return path


def _timeout(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise ActionError(str(exc), code=VALIDATION_ERROR) from exc
    if seconds <= 0:
        raise ActionError(f"timeout must be positive, not {value!r}", code=VALIDATION_ERROR)
    return seconds


def _stdin_bytes(params: JSON) -> bytes | None:
    value = params.get("stdin")
    if value is None:
        return None
    return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).encode()


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_text(text: str) -> tuple[bool, Any]:
    """(True, value) when the whole trimmed text is strict JSON, else (False, None)."""
    stripped = text.strip()
    if not stripped:
        return False, None
    try:
        return True, json.loads(stripped, parse_float=_finite_float, parse_constant=_reject_constant)
    except ValueError:
        return False, None


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies don't count (an init that never reaps keeps them)."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:  # no procfs: ask the kernel, which counts zombies too
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _end_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, wait up to `grace` for it to go, then SIGKILL whatever is left."""
    pgid = proc.pid  # start_new_session made the child a group leader
    if proc.returncode is not None and not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline and (proc.returncode is None or _group_alive(pgid)):
        await asyncio.sleep(0.02)
    if proc.returncode is None or _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


async def _end_all(proc: asyncio.subprocess.Process, grace: float, isolation: Isolation) -> None:
    await _end_group(proc, grace)
    await isolation.release()  # also kills what escaped the process group into the cgroup


async def _end_group_surely(proc: asyncio.subprocess.Process, grace: float, isolation: Isolation) -> None:
    """End the group and remove its cgroup so that a second cancellation of the step cannot interrupt it."""
    task = asyncio.get_running_loop().create_task(_end_all(proc, grace, isolation))
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)
    await asyncio.shield(task)


async def _spawn(argv: list[str], env: dict[str, str] | None, cwd: str | None, stdin: bytes | None,
                 isolation: Isolation) -> tuple[asyncio.subprocess.Process, int, int, int | None]:
    # Our own pipes, not asyncio's: on Python 3.11 `Process.wait()` also waits for its pipes to close,
    # which a backgrounded grandchild can hold open long after the command itself exited.
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if stdin is not None else (None, None)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=in_r if in_r is not None else subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=isolation.preexec_fn,  # joins the cgroup and sets rlimits before exec
        )
    except BaseException:
        for fd in (out_r, err_r, in_w):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        for fd in (out_w, err_w, in_r):
            if fd is not None:
                os.close(fd)
    return proc, out_r, err_r, in_w


def _error_for_spawn(exc: OSError, command: str) -> ActionError:
    if isinstance(exc, FileNotFoundError):
        return ActionError(f"command not found: {command}", code=EXECUTION_ERROR)
    if isinstance(exc, PermissionError):
        return ActionError(f"permission denied running {command}", code=EXECUTION_ERROR)
    return ActionError(f"could not start {command}: {exc}", code=EXECUTION_ERROR)


async def execute(params: JSON, ctx: ActionContext) -> JSON:
    """Run the command and return its output; a timeout or a non-zero exit fails with the output attached."""
    settings = ctx.settings or {}
    cap = int(settings.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES))
    grace = float(settings.get("kill_grace_seconds", DEFAULT_KILL_GRACE_S))
    timeout_value = params.get("timeout", DEFAULT_TIMEOUT)
    timeout = _timeout(timeout_value)
    argv, env, cwd, stdin = _argv(params), _environment(params.get("env") or {}), _cwd(params), _stdin_bytes(params)
    isolation = prepare(params.get("limits"), settings, ctx.logger)

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        proc, out_fd, err_fd, in_fd = await _spawn(argv, env, cwd, stdin, isolation)
    except (OSError, subprocess.SubprocessError) as exc:
        await isolation.release()
        if isinstance(exc, OSError):
            raise _error_for_spawn(exc, params["command"]) from exc
        raise ActionError(f"could not apply resource limits ({isolation.mechanism}): {exc}",
                          code=ISOLATION_ERROR) from exc
    out, err = _Capture(cap, loop), _Capture(cap, loop)
    transports: list[asyncio.BaseTransport] = []
    killed = False
    try:
        for fd, capture in ((out_fd, out), (err_fd, err)):
            transport, _ = await loop.connect_read_pipe(lambda c=capture: c, os.fdopen(fd, "rb", buffering=0))
            transports.append(transport)
        if in_fd is not None and stdin is not None:
            writer, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, os.fdopen(in_fd, "wb", buffering=0))
            transports.append(writer)
            writer.write(stdin)
            writer.close()  # after the buffer is flushed; a command that stops reading just drops the rest
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            killed = True
        # Also on a normal exit: background processes the command left behind end with the step.
        await _end_group(proc, grace)
        # The pipes close once every writer is gone; one that escaped the group (setsid) is not waited for.
        await asyncio.wait([out.closed, err.closed], timeout=1.0)
        exceeded = _limit_exceeded(isolation, proc.returncode)
        await isolation.release()
    except BaseException:
        # Cancelled (or broken) mid-run: the process group must not outlive the step.
        await _end_group_surely(proc, grace, isolation)
        raise
    finally:
        for transport in transports:
            if isinstance(transport, asyncio.WriteTransport):
                # Still flushing stdin to a reader that is gone: drop the rest (close() already ran).
                if transport.get_write_buffer_size():
                    transport.abort()
            else:
                transport.close()

    raw = out.text()
    parsed_ok, parsed = (False, None) if out.truncated else parse_json_text(raw)
    exit_code = proc.returncode if proc.returncode is not None else -1
    output: JSON = {
        "stdout": parsed if parsed_ok else raw,
        "stdout_raw": raw,
        "stderr": err.text(),
        "exit_code": exit_code,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "killed": killed,
        "stdout_truncated": out.truncated,
        "stderr_truncated": err.truncated,
        "isolation": isolation.mechanism,
        "limits": isolation.limits,
        "limit_exceeded": exceeded,
    }
    if isolation.unenforced:
        output["limits_unenforced"] = isolation.unenforced
    if killed:
        shown = timeout_value if isinstance(timeout_value, str) else f"{timeout_value}s"
        raise ActionError(f"command timed out after {shown}; its process group was killed",
                          code=TIMEOUT_ERROR, output=output)
    if exit_code != 0:
        message = _exit_message(exit_code, output["stderr"])
        if exceeded:
            message = f"{exceeded} limit ({isolation.limits[exceeded]}) exceeded; {message}"
        raise ActionError(message, code=EXECUTION_ERROR, output=output)
    return output


def _limit_exceeded(isolation: Isolation, returncode: int | None) -> str | None:
    if isolation.oom_killed():
        return "memory_mb"
    if returncode == -signal.SIGXCPU and "cpu_seconds" in isolation.limits:
        return "cpu_seconds"
    return None


def _exit_message(exit_code: int, stderr: str) -> str:
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        message = f"killed by {name} (exit code {exit_code})"
    else:
        message = f"exit code {exit_code}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return f"{message}: {last[:300]}" if last else message


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide shell.exec."""
    return [
        ActionSpec(
            "shell.exec",
            "Run a command (optionally through /bin/sh -c) in its own process group and capture "
            "`{stdout, stdout_raw, stderr, exit_code, duration_ms, killed}`; `stdout` is parsed when it is JSON "
            "(convention: JSON on stdin, JSON on stdout, errors on stderr). A non-zero exit fails the step "
            "(EXECUTION_ERROR) and a timeout kills the whole group (TIMEOUT_ERROR); the output stays readable, "
            "e.g. with `on_error: ignore`. Processes the command leaves in the background end with it. "
            "stdout and stderr are each capped (10 MB by default; `*_truncated` says so). `limits` caps memory, "
            "CPU time and processes (cgroups v2 where available, rlimits otherwise; `isolation` says which).",
            EXEC_SCHEMA,
            execute,
            output_schema=OUTPUT_SCHEMA,
        )
    ]

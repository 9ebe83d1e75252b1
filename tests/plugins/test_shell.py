"""shell.exec with real subprocesses: output, exit codes, timeouts and cancellation that kill the whole group."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from opcode_core.errors import EXECUTION_ERROR, TIMEOUT_ERROR, VALIDATION_ERROR, ActionError
from opcode_plugins import shell

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")

(SPEC,) = shell.opcode_register_actions(settings=None)


def live_members(pgid: int) -> list[str]:
    """Processes of a group that still run, from `ps`; zombies are left out because the init of a
    container may never reap orphans, and a zombie runs nothing."""
    rows = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True)
    found = []
    for line in rows.stdout.splitlines():
        pid, group, stat, *args = line.split(None, 3)
        if int(group) == pgid and not stat.startswith("Z"):
            found.append(f"{pid} {stat} {' '.join(args)}")
    return found


async def wait_gone(pgid: int, within: float = 2.0) -> list[str]:
    """The group's live members once they are gone, or whatever is left after `within` seconds."""
    deadline = time.monotonic() + within
    while (left := live_members(pgid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def test_entry_point_provides_shell_exec(via_entry_point):
    module, specs = via_entry_point("shell")
    assert module is shell
    assert [s.name for s in specs] == ["shell.exec"]


def test_schema_is_complete(well_formed):
    well_formed([SPEC])


@pytest.mark.parametrize(
    "params",
    [
        {"command": "ls"},
        {"command": "ls", "args": ["-l", 3, True], "env": {"A": "1", "B": 2, "C": None}, "cwd": "/tmp"},
        {"command": "cat", "stdin": {"any": ["json"]}, "timeout": "1h30m", "workdir": "/"},
        {"command": "true", "timeout": 1.5, "shell": True},
        {"command": "true", "timeout": "500ms"},
        {"command": "true", "timeout": ".5s"},
    ],
)
def test_valid_params(schema_check, params):
    assert schema_check(SPEC, params) == []


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"command": ""},
        {"command": "ls", "args": "-l"},
        {"command": "ls", "args": [{"a": 1}]},
        {"command": "ls", "env": {"A": [1]}},
        {"command": "ls", "timeout": "30 seconds"},
        {"command": "ls", "timeout": "30"},
        {"command": "ls", "timeout": "-1s"},
        {"command": "ls", "timeout": 0},
        {"command": "ls", "shell": "yes"},
        {"command": "ls", "user": "root"},
    ],
)
def test_invalid_params(schema_check, params):
    assert schema_check(SPEC, params) != []


async def test_text_output(ctx):
    out = await SPEC.execute({"command": "echo", "args": ["hello", "world"]}, ctx)
    assert out["stdout"] == out["stdout_raw"] == "hello world\n"
    assert (out["stderr"], out["exit_code"], out["killed"]) == ("", 0, False)
    assert isinstance(out["duration_ms"], int)
    assert (out["stdout_truncated"], out["stderr_truncated"]) == (False, False)


@pytest.mark.parametrize(
    ("printed", "parsed"),
    [('{"a": [1, 2]}', {"a": [1, 2]}), ("  42\n", 42), ("[]", []), ('"s"', "s"), ("null", None)],
)
async def test_json_stdout_is_parsed(ctx, printed, parsed):
    out = await SPEC.execute({"command": "printf", "args": ["%s", printed]}, ctx)
    assert out["stdout"] == parsed
    assert out["stdout_raw"] == printed


@pytest.mark.parametrize("printed", ["NaN", "{bad json}", '{"a": 1} trailing', "1e999"])
async def test_non_json_stdout_stays_text(ctx, printed):
    out = await SPEC.execute({"command": "printf", "args": ["%s", printed]}, ctx)
    assert out["stdout"] == printed


async def test_stdin_string_and_json(ctx):
    text = await SPEC.execute({"command": "cat", "stdin": "line 1\nline 2"}, ctx)
    assert text["stdout_raw"] == "line 1\nline 2"
    data = await SPEC.execute({"command": "cat", "stdin": {"items": [1, 2]}}, ctx)
    assert data["stdout"] == {"items": [1, 2]}


async def test_without_stdin_the_command_reads_nothing(ctx):
    out = await SPEC.execute({"command": "cat", "timeout": "5s"}, ctx)
    assert out["stdout_raw"] == ""


async def test_large_stdin_and_stdout_do_not_block(ctx):
    payload = "x" * 300_000
    out = await SPEC.execute({"command": "cat", "stdin": payload}, ctx)
    assert len(out["stdout_raw"]) == 300_000


async def test_env_is_merged_over_the_parent(ctx, monkeypatch):
    monkeypatch.setenv("OPCODE_TEST_INHERITED", "yes")
    monkeypatch.setenv("OPCODE_TEST_UNSET", "gone?")
    script = 'echo "$OPCODE_TEST_INHERITED $OPCODE_TEST_NEW $OPCODE_TEST_NUM ${OPCODE_TEST_UNSET:-unset}"'
    out = await SPEC.execute(
        {"command": script, "shell": True,
         "env": {"OPCODE_TEST_NEW": "new", "OPCODE_TEST_NUM": 7, "OPCODE_TEST_UNSET": None}},
        ctx,
    )
    assert out["stdout_raw"] == "yes new 7 unset\n"


@pytest.mark.parametrize("key", ["cwd", "workdir"])
async def test_working_directory(ctx, tmp_path, key):
    out = await SPEC.execute({"command": "pwd", key: str(tmp_path)}, ctx)
    assert os.path.realpath(out["stdout_raw"].strip()) == os.path.realpath(tmp_path)


async def test_cwd_and_workdir_must_agree(ctx, tmp_path):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "pwd", "cwd": str(tmp_path), "workdir": "/"}, ctx)
    assert info.value.code == VALIDATION_ERROR


async def test_missing_working_directory(ctx, tmp_path):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "pwd", "cwd": str(tmp_path / "nope")}, ctx)
    assert info.value.code == EXECUTION_ERROR
    assert "does not exist" in info.value.message


async def test_shell_mode_runs_a_script_and_quotes_args(ctx):
    out = await SPEC.execute({"command": "printf '%s|' a b | tr a-z A-Z", "shell": True}, ctx)
    assert out["stdout_raw"] == "A|B|"
    # Args are data, never shell syntax, even when they come from interpolated input.
    quoted = await SPEC.execute({"command": "printf '%s\\n'", "args": ["$(echo pwned)", "a b"], "shell": True}, ctx)
    assert quoted["stdout_raw"] == "$(echo pwned)\na b\n"


async def test_non_zero_exit_fails_with_the_output_attached(ctx):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "sh", "args": ["-c", "echo partial; echo 'no such file' >&2; exit 3"]}, ctx)
    err = info.value
    assert err.code == EXECUTION_ERROR
    assert err.message == "exit code 3: no such file"
    assert err.output["exit_code"] == 3
    assert err.output["stdout"] == "partial\n"
    assert err.output["stderr"] == "no such file\n"
    assert err.output["killed"] is False


async def test_killed_by_a_signal(ctx):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "sh", "args": ["-c", "kill -9 $$"]}, ctx)
    assert info.value.code == EXECUTION_ERROR
    assert info.value.output["exit_code"] == -9
    assert info.value.message.startswith("killed by SIGKILL")


async def test_command_not_found(ctx):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "opcode-no-such-command-xyz"}, ctx)
    assert info.value.code == EXECUTION_ERROR
    assert "not found" in info.value.message


async def test_timeout_kills_the_whole_group(ctx):
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "sh", "args": ["-c", "echo $$; sleep 30 & sleep 30"], "timeout": "300ms"}, ctx)
    assert time.monotonic() - started < 5
    err = info.value
    assert err.code == TIMEOUT_ERROR
    assert err.output["killed"] is True
    assert err.output["exit_code"] < 0
    pgid = int(err.output["stdout_raw"].split()[0])
    assert await wait_gone(pgid, within=0.5) == []


async def test_timeout_as_seconds_number(ctx):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "sleep", "args": ["30"], "timeout": 0.2}, ctx)
    assert info.value.code == TIMEOUT_ERROR
    assert "0.2s" in info.value.message


async def test_processes_ignoring_sigterm_get_sigkill(make_ctx):
    ctx = make_ctx(settings={"kill_grace_seconds": 0.3})
    script = "trap '' TERM; echo $$; sleep 30 & sleep 30"
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "sh", "args": ["-c", script], "timeout": "200ms"}, ctx)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 5  # the timeout, then the grace period, then SIGKILL
    assert info.value.output["exit_code"] == -9
    assert await wait_gone(int(info.value.output["stdout_raw"].split()[0]), within=0.5) == []


async def test_cancellation_kills_the_whole_group(ctx, tmp_path):
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; sleep 30 & sleep 30"
    task = asyncio.create_task(SPEC.execute({"command": "sh", "args": ["-c", script], "timeout": "60s"}, ctx))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pgid = int(pidfile.read_text())
    await asyncio.sleep(0.1)  # let the background sleep start too
    assert len(live_members(pgid)) >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(pgid, within=0.5) == []


async def test_background_processes_end_with_the_command(ctx):
    started = time.monotonic()
    out = await SPEC.execute({"command": "sh", "args": ["-c", "sleep 30 & echo $$"]}, ctx)
    assert time.monotonic() - started < 5  # not held up by the sleep keeping stdout open
    assert out["exit_code"] == 0
    assert await wait_gone(int(out["stdout_raw"]), within=0.5) == []


async def test_output_is_capped(make_ctx):
    ctx = make_ctx(settings={"max_output_bytes": 1000})
    script = "head -c 200000 /dev/zero | tr '\\0' 'a'; head -c 5000 /dev/zero | tr '\\0' 'e' >&2"
    out = await SPEC.execute({"command": script, "shell": True}, ctx)
    assert out["exit_code"] == 0
    assert out["stdout_raw"] == "a" * 1000
    assert out["stderr"] == "e" * 1000
    assert (out["stdout_truncated"], out["stderr_truncated"]) == (True, True)


async def test_truncated_json_is_not_parsed(make_ctx):
    ctx = make_ctx(settings={"max_output_bytes": 4})
    out = await SPEC.execute({"command": "printf", "args": ["%s", "[1, 2, 3]"]}, ctx)
    assert out["stdout"] == out["stdout_raw"] == "[1, "
    assert out["stdout_truncated"] is True

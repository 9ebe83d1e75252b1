"""shell.exec resource limits with real subprocesses: memory and CPU caps that bite, the admin's ceiling,
the cgroup plumbing (for real where cgroups v2 allows it, against a stand-in directory everywhere)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from opcode_core.errors import EXECUTION_ERROR, ISOLATION_ERROR, ActionError
from opcode_plugins import shell, shell_limits

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="rlimits and cgroups as Linux has them")

(SPEC,) = shell.opcode_register_actions(settings=None)
PY = sys.executable
ALLOCATE = "import sys; block = bytearray(int(sys.argv[1]) * 1024 * 1024); print(len(block))"


def real_cgroup_base() -> str | None:
    """The usable cgroup base on this machine, or None (the reason is in the skip message)."""
    parent = shell_limits.own_cgroup_dir()
    return shell_limits.probe(parent, {"memory", "pids"})[0] if parent else None


CGROUP = real_cgroup_base()
EXPECTED = "cgroup" if CGROUP else "rlimit"


async def outcome(ctx, params):
    """The output, whether the command passed or failed."""
    try:
        return await SPEC.execute(params, ctx)
    except ActionError as err:
        assert err.output is not None, err.message
        return err.output


@pytest.mark.parametrize(
    "limits", [{"memory_mb": 64}, {"cpu_seconds": 2, "max_processes": 10}, {}],
)
def test_valid_limits(schema_check, limits):
    assert schema_check(SPEC, {"command": "true", "limits": limits}) == []


@pytest.mark.parametrize(
    "limits", [{"memory_mb": "64"}, {"memory_mb": 0}, {"cpu_seconds": 1.5}, {"max_processes": -1}, {"disk_mb": 1},
               "64M"],
)
def test_invalid_limits(schema_check, limits):
    assert schema_check(SPEC, {"command": "true", "limits": limits}) != []


def test_settings_are_default_and_ceiling():
    assert shell_limits.effective_limits({"memory_mb": 500}, {"memory_mb": 100}) == {"memory_mb": 100}
    assert shell_limits.effective_limits({"memory_mb": 50}, {"memory_mb": 100}) == {"memory_mb": 50}
    assert shell_limits.effective_limits(None, {"cpu_seconds": 3}) == {"cpu_seconds": 3}
    assert shell_limits.effective_limits({"max_processes": 4}, None) == {"max_processes": 4}
    assert shell_limits.effective_limits(None, None) == {}


async def test_without_limits_nothing_is_applied(ctx):
    out = await SPEC.execute({"command": "true"}, ctx)
    assert (out["isolation"], out["limits"], out["limit_exceeded"]) == ("none", {}, None)


async def test_memory_limit_stops_an_allocation_beyond_it(ctx):
    within = await SPEC.execute({"command": PY, "args": ["-c", ALLOCATE, "20"], "limits": {"memory_mb": 200}}, ctx)
    assert within["stdout"] == 20 * 1024 * 1024
    assert within["isolation"] == EXPECTED
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": PY, "args": ["-c", ALLOCATE, "400"], "limits": {"memory_mb": 200}}, ctx)
    err = info.value
    assert err.code == EXECUTION_ERROR
    assert err.output["exit_code"] != 0 and err.output["stdout"] == ""
    assert err.output["limits"] == {"memory_mb": 200}
    if CGROUP:
        assert err.output["limit_exceeded"] == "memory_mb"
    else:
        assert "MemoryError" in err.output["stderr"]


async def test_cpu_limit_kills_a_busy_loop(ctx):
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": PY, "args": ["-c", "while True: pass"], "limits": {"cpu_seconds": 1},
                            "timeout": "20s"}, ctx)
    elapsed = time.monotonic() - started
    err = info.value
    assert err.code == EXECUTION_ERROR  # the limit, not the timeout, ended it
    assert err.output["exit_code"] in (-signal.SIGXCPU, -signal.SIGKILL)
    assert err.output["limit_exceeded"] == ("cpu_seconds" if err.output["exit_code"] == -signal.SIGXCPU else None)
    assert err.message.startswith("cpu_seconds limit (1) exceeded")
    assert 0.9 <= elapsed < 10


async def test_the_admin_ceiling_wins_over_the_step(make_ctx):
    ctx = make_ctx(settings={"limits": {"memory_mb": 64}, "isolation": "rlimit"})
    out = await SPEC.execute({"command": "sh", "args": ["-c", "ulimit -v"], "limits": {"memory_mb": 4096}}, ctx)
    assert out["limits"] == {"memory_mb": 64}
    assert out["stdout"] == 64 * 1024  # KiB
    assert out["isolation"] == "rlimit"


async def test_cpu_rlimit_is_visible_to_the_command(make_ctx):
    out = await SPEC.execute({"command": "sh", "args": ["-c", "ulimit -t"], "limits": {"cpu_seconds": 7}}, make_ctx())
    assert out["stdout"] == 7


@pytest.mark.skipif(CGROUP is not None or os.getuid() != 0, reason="needs root without usable cgroups v2")
async def test_process_limit_cannot_bind_root_without_cgroups(make_ctx):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "true", "limits": {"max_processes": 5}}, make_ctx())
    assert info.value.code == ISOLATION_ERROR
    assert "RLIMIT_NPROC" in info.value.message
    ctx = make_ctx(settings={"best_effort_limits": True})
    out = await SPEC.execute({"command": "true", "limits": {"max_processes": 5, "cpu_seconds": 5}}, ctx)
    assert out["limits_unenforced"] == ["max_processes"]
    assert out["isolation"] == "rlimit"


@pytest.mark.skipif(CGROUP is not None or os.getuid() == 0, reason="needs a non-root user without cgroups v2")
async def test_process_limit_as_an_rlimit_stops_forks(ctx):
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait"
    out = await outcome(ctx, {"command": "sh", "args": ["-c", script], "limits": {"max_processes": 3}})
    assert out["exit_code"] != 0 or "fork" in out["stderr"].lower()


@pytest.mark.skipif(CGROUP is None, reason="cgroups v2 with memory and pids controllers is not usable here")
async def test_real_cgroup_limits_the_whole_tree(ctx):
    fork_bomb = "for i in $(seq 1 30); do sleep 2 & done; wait"
    out = await outcome(ctx, {"command": "sh", "args": ["-c", fork_bomb], "limits": {"max_processes": 5}})
    assert out["isolation"] == "cgroup"
    assert out["exit_code"] != 0 or "fork" in out["stderr"].lower()
    assert not [d for d in os.listdir(CGROUP) if Path(CGROUP, d).is_dir()]  # its group was removed


@pytest.mark.skipif(CGROUP is not None, reason="cgroups v2 is usable here")
async def test_required_cgroup_isolation_fails_when_unavailable(make_ctx):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "true", "limits": {"memory_mb": 50}}, make_ctx(settings={"isolation": "cgroup"}))
    assert info.value.code == ISOLATION_ERROR
    assert "unavailable" in info.value.message


async def test_bad_isolation_setting(make_ctx):
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "true", "limits": {"memory_mb": 50}}, make_ctx(settings={"isolation": "vm"}))
    assert info.value.code == ISOLATION_ERROR


@pytest.fixture
def fake_cgroup(tmp_path: Path, monkeypatch) -> Path:
    """A directory shaped like a cgroup v2 parent that has the memory and pids controllers."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    make_group = shell_limits._make_group

    def with_control_files(base, limits, keys):
        path = make_group(base, limits, keys)
        Path(path, "cgroup.procs").write_text("")  # the kernel provides it in a real group
        return path

    monkeypatch.setattr(shell_limits, "_make_group", with_control_files)
    return tmp_path


async def test_cgroup_plumbing_against_a_stand_in_directory(make_ctx, fake_cgroup):
    ctx = make_ctx(settings={"isolation": "cgroup", "cgroup_parent": str(fake_cgroup)})
    out = await SPEC.execute({"command": "sh", "args": ["-c", "echo $$"],
                              "limits": {"memory_mb": 50, "max_processes": 20, "cpu_seconds": 9}}, ctx)
    assert out["isolation"] == "cgroup"
    base = fake_cgroup / "opcode-shell"
    assert (fake_cgroup / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids"
    (group,) = [p for p in base.iterdir() if p.is_dir()]
    assert (group / "memory.max").read_text() == str(50 * 1024 * 1024)
    assert (group / "memory.swap.max").read_text() == "0"
    assert (group / "pids.max").read_text() == "20"
    assert (group / "cgroup.procs").read_text() == str(out["stdout"])  # the child joined before exec
    assert (group / "cgroup.kill").read_text() == "1"  # and whatever was left was killed


async def test_a_failing_child_setup_is_an_isolation_error(make_ctx, monkeypatch):
    def broken(self):
        raise OSError("no such cgroup")

    monkeypatch.setattr(shell_limits.Isolation, "preexec", broken)
    with pytest.raises(ActionError) as info:
        await SPEC.execute({"command": "true", "limits": {"cpu_seconds": 5}}, make_ctx())
    assert info.value.code == ISOLATION_ERROR


def test_cgroup2_mount_is_found_in_hybrid_layouts(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    assert shell_limits.cgroup2_mount(str(info)) == "/sys/fs/cgroup/unified"
    info.write_text("35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert shell_limits.cgroup2_mount(str(info)) is None

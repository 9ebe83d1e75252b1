"""Resource limits for shell.exec: a cgroup v2 child group where this process may make one, rlimits otherwise.

Limits come from the step's `limits` param and the shell plugin's `limits` setting; the setting is both the
default and a ceiling (the smaller value wins), so a workflow can tighten but never lift what the admin set.

- `memory_mb`: cgroup `memory.max` (with swap off) for the whole command, children included; under rlimits,
  `RLIMIT_AS` per process, which counts address space, not resident memory (runtimes that reserve large
  virtual ranges, such as the JVM or Go, need headroom).
- `cpu_seconds`: always `RLIMIT_CPU` per process (cgroups v2 can only cap a CPU *rate*): SIGXCPU at the limit,
  SIGKILL one second later.
- `max_processes`: cgroup `pids.max` for the command's tree. Under rlimits, `RLIMIT_NPROC` counts every
  process of the user, so it is set to the user's current count plus the limit; the kernel ignores it for root
  (and anyone with CAP_SYS_RESOURCE), so there it cannot be enforced.

Settings (`plugins.settings.shell`): `limits` (as above); `isolation`: `auto` (default: cgroup when usable,
else rlimit), `cgroup` (memory and process limits must get a cgroup, else ISOLATION_ERROR) or `rlimit`;
`cgroup_parent`: a cgroup v2 directory delegated to us that holds no processes (systemd `Delegate=yes`); by
default our own cgroup, which only works when it is the hierarchy's root (cgroups v2 lets no other group both
hold processes and hand controllers to children); `best_effort_limits`: true runs a command whose limit cannot
be enforced instead of failing with ISOLATION_ERROR, and names the limit in `limits_unenforced`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opcode_core import ActionError
from opcode_core.errors import ISOLATION_ERROR

JSON = dict[str, Any]
MB = 1024 * 1024

LIMITS_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "memory_mb": {"type": "integer", "minimum": 1,
                      "description": "Memory cap in MiB (cgroup memory.max for the whole command, else RLIMIT_AS "
                      "per process)."},
        "cpu_seconds": {"type": "integer", "minimum": 1,
                        "description": "CPU time per process (RLIMIT_CPU): SIGXCPU at the limit, SIGKILL 1s later."},
        "max_processes": {"type": "integer", "minimum": 1,
                          "description": "Processes the command may run at once (cgroup pids.max; as an rlimit it "
                          "cannot bind root)."},
    },
    "additionalProperties": False,
    "description": "Resource limits; the shell plugin's `limits` setting is the default and the ceiling.",
}
LIMIT_KEYS = tuple(LIMITS_SCHEMA["properties"])
_CONTROLLERS = {"memory_mb": "memory", "max_processes": "pids"}

_bases: dict[tuple[str, frozenset[str]], str] = {}  # (cgroup parent, controllers) → the group made for them
_reported: set[str] = set()  # why cgroups were not used, logged once each


def effective_limits(requested: JSON | None, configured: JSON | None) -> JSON:
    """Per limit, the smaller of the step's value and the admin's setting."""
    out: JSON = {}
    for key in LIMIT_KEYS:
        values = [v for v in ((requested or {}).get(key), (configured or {}).get(key)) if v is not None]
        if values:
            out[key] = min(int(v) for v in values)
    return out


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (also in hybrid v1/v2 setups), or None."""
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def own_cgroup_dir() -> str | None:
    """This process's cgroup v2 directory, or None without a cgroup v2 hierarchy."""
    mount = cgroup2_mount()
    if mount is None:
        return None
    try:
        with open("/proc/self/cgroup") as f:
            line = next((ln for ln in f if ln.startswith("0::")), None)
    except OSError:
        return None
    return os.path.normpath(os.path.join(mount, line[3:].strip().lstrip("/"))) if line else mount


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def probe(parent: str, controllers: set[str]) -> tuple[str | None, str]:
    """Make (once) `<parent>/opcode-shell` with the controllers enabled; (its path, "") or (None, why not)."""
    key = (parent, frozenset(controllers))
    if key in _bases and os.path.isdir(_bases[key]):
        return _bases[key], ""
    try:
        available = set(_read(os.path.join(parent, "cgroup.controllers")).split())
        if not controllers <= available:
            missing = " ".join(sorted(controllers - available))
            return None, f"controllers {missing} are not available in {parent}"
        wanted = " ".join(f"+{c}" for c in sorted(controllers))
        if not controllers <= set(_read(os.path.join(parent, "cgroup.subtree_control")).split()):
            # Fails with EBUSY in a non-root group that holds processes ("no internal processes" rule).
            _write(os.path.join(parent, "cgroup.subtree_control"), wanted)
        base = os.path.join(parent, "opcode-shell")
        os.makedirs(base, exist_ok=True)
        _write(os.path.join(base, "cgroup.subtree_control"), wanted)
    except OSError as exc:
        return None, f"cannot set up a child cgroup under {parent}: {exc.strerror or exc}"
    _bases[key] = base
    return base, ""


@dataclass
class Isolation:
    """How one command is limited: the child-side setup, and the cgroup to remove afterwards."""

    mechanism: str
    limits: JSON
    unenforced: list[str] = field(default_factory=list)
    rlimits: list[tuple[int, int, int]] = field(default_factory=list)
    cgroup: str | None = None

    def preexec(self) -> None:
        """Runs in the child between fork and exec: join the cgroup, set the rlimits."""
        # Plain system calls only: another thread of the server may have held a lock (an import, a logger)
        # at fork time, and higher-level code could wait on it forever in the child.
        if self.cgroup is not None:
            fd = os.open(self.cgroup + "/cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, b"%d" % os.getpid())
            finally:
                os.close(fd)
        for which, soft, hard in self.rlimits:
            resource.setrlimit(which, (soft, hard))

    @property
    def preexec_fn(self) -> Callable[[], None] | None:
        """The callable for subprocess, or None when there is nothing to set up."""
        return self.preexec if self.cgroup is not None or self.rlimits else None

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the cgroup for exceeding memory.max."""
        if self.cgroup is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in _read(os.path.join(self.cgroup, "memory.events")).splitlines():
                name, _, count = line.partition(" ")
                if name == "oom_kill":
                    return int(count) > 0
        return False

    async def release(self) -> None:
        """Kill whatever is left in the cgroup and remove it."""
        if self.cgroup is None:
            return
        try:
            _write(os.path.join(self.cgroup, "cgroup.kill"), "1")
        except OSError:  # kernels before 5.14 have no cgroup.kill
            with contextlib.suppress(OSError, ValueError):
                for pid in _read(os.path.join(self.cgroup, "cgroup.procs")).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for _ in range(40):
            try:
                os.rmdir(self.cgroup)
                return
            except FileNotFoundError:
                return
            except OSError:
                await asyncio.sleep(0.025)  # the killed processes leave the group asynchronously
        logging.getLogger(__name__).warning("could not remove cgroup %s", self.cgroup)


def _user_tasks(uid: int) -> int:
    count = 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            status = _read(f"/proc/{pid}/status")
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
    return count


def _rlimits(limits: JSON, keys: list[str]) -> tuple[list[tuple[int, int, int]], list[str]]:
    out: list[tuple[int, int, int]] = []
    unenforced: list[str] = []
    for key in keys:
        value = limits[key]
        if key == "memory_mb":
            which, soft, hard = resource.RLIMIT_AS, value * MB, value * MB
        elif key == "cpu_seconds":
            which, soft, hard = resource.RLIMIT_CPU, value, value + 1
        elif os.getuid() == 0:
            unenforced.append(key)  # the kernel does not apply RLIMIT_NPROC to root
            continue
        else:
            which = resource.RLIMIT_NPROC
            soft = hard = _user_tasks(os.getuid()) + value
        # An unprivileged child cannot raise its hard limit: stay within the one it inherits.
        current_hard = resource.getrlimit(which)[1]
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        out.append((which, min(soft, hard), hard))
    return out, unenforced


def prepare(requested: JSON | None, settings: JSON, logger: logging.LoggerAdapter | logging.Logger) -> Isolation:
    """Choose and set up the mechanism for one command; ISOLATION_ERROR when a limit cannot be enforced."""
    limits = effective_limits(requested, settings.get("limits"))
    if not limits:
        return Isolation("none", {})
    mode = settings.get("isolation", "auto")
    if mode not in ("auto", "cgroup", "rlimit"):
        raise ActionError(f"shell setting isolation must be auto, cgroup or rlimit, not {mode!r}", code=ISOLATION_ERROR)
    cgroup_keys = [k for k in limits if k in _CONTROLLERS]
    rlimit_keys = [k for k in limits if k not in _CONTROLLERS]
    cgroup: str | None = None
    if cgroup_keys and mode != "rlimit":
        parent = settings.get("cgroup_parent") or own_cgroup_dir()
        base, why = probe(parent, {_CONTROLLERS[k] for k in cgroup_keys}) if parent else (None, "no cgroup v2")
        if base is not None:
            try:
                cgroup = _make_group(base, limits, cgroup_keys)
            except ActionError as exc:
                if mode == "cgroup":
                    raise
                why = exc.message
        if cgroup is None and mode == "cgroup":
            raise ActionError(f"cgroup isolation is required but unavailable: {why}", code=ISOLATION_ERROR)
        if cgroup is None and why not in _reported:
            _reported.add(why)
            logger.warning("shell limits fall back to rlimits: %s", why)
    if cgroup is None:
        rlimit_keys = list(limits)
    rlimits, unenforced = _rlimits(limits, rlimit_keys)
    if unenforced and not settings.get("best_effort_limits", False):
        raise ActionError(f"cannot enforce {', '.join(unenforced)} without cgroups v2 (RLIMIT_NPROC does not bind "
                          "root); set the shell plugin's best_effort_limits to run anyway", code=ISOLATION_ERROR)
    return Isolation("cgroup" if cgroup else "rlimit", limits, unenforced, rlimits, cgroup)


def _make_group(base: str, limits: JSON, keys: list[str]) -> str:
    path = os.path.join(base, uuid.uuid4().hex)
    try:
        os.mkdir(path)
        if "memory_mb" in keys:
            _write(os.path.join(path, "memory.max"), str(limits["memory_mb"] * MB))
            with contextlib.suppress(OSError):  # no swap accounting: memory.max alone still binds
                _write(os.path.join(path, "memory.swap.max"), "0")
        if "max_processes" in keys:
            _write(os.path.join(path, "pids.max"), str(limits["max_processes"]))
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        raise ActionError(f"could not set up cgroup {path}: {exc.strerror or exc}", code=ISOLATION_ERROR) from exc
    return path

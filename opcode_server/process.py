"""Process life of `opcode serve`: the pidfile, the listening socket, SIGHUP reloads and a bounded stop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from opcode_core.errors import ConfigError
from opcode_core.logs import set_log_level
from opcode_core.settings import Settings, load_settings

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime

log = logging.getLogger("opcode.process")

PIDFILE = "opcode.pid"
LOGFILE = "opcode.log"
# SPEC §11: SIGTERM/SIGINT stop the server within 10 s. Runs get part of it to reach their end on their own.
STOP_BUDGET_S = 10.0
RUN_GRACE_S = 5.0
# What a SIGHUP applies in place; every other changed setting is reported as needing a restart.
LIVE_SETTINGS = ("log_level", "panel", "base_url", "underscore_tool_names")
IGNORED_SETTINGS = ("home", "vault_key", "plugins")


class ProcessError(Exception):
    """A plain message for the operator (port in use, already running), printed as `error: ...`."""


def pidfile_path(home: Path) -> Path:
    """Where `opcode serve` writes its pid."""
    return home / PIDFILE


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A killed child its parent has not reaped yet still answers kill(0): it is dead all the same.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _read_pidfile(home: Path) -> tuple[int, str | None] | None:
    try:
        lines = pidfile_path(home).read_text().split()
        return int(lines[0]), (lines[1] if len(lines) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


def read_pid(home: Path) -> int | None:
    """The pid of the live server of this home, or None (no pidfile, unreadable, or a dead process)."""
    found = _read_pidfile(home)
    return found[0] if found is not None and pid_alive(found[0]) else None


class PidFile:
    """`$OPCODE_HOME/opcode.pid`: created exclusively, a stale one replaced, removed only by its owner.

    Line 1 is the pid (what `systemd` and `kill $(head -1 ...)` read); line 2 the URL the server answers at,
    as PostgreSQL's postmaster.pid carries its port, so the CLI finds a server whose listen_addr changed since.
    """

    def __init__(self, home: Path, url: str) -> None:
        self.path = pidfile_path(home)
        self.url = url
        self.pid = os.getpid()

    def acquire(self) -> None:
        """Write our pid; ProcessError when a live server of this home holds the file."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = read_pid(self.path.parent)
                if other is not None and other != self.pid:
                    raise ProcessError(
                        f"opcode is already running from {self.path.parent} (pid {other}; pidfile {self.path})"
                    ) from None
                log.info("replacing the stale pidfile %s", self.path)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as out:
                out.write(f"{self.pid}\n{self.url}\n")
            return
        raise ProcessError(f"could not create the pidfile {self.path}")

    def release(self) -> None:
        """Remove the pidfile if it is still ours."""
        found = _read_pidfile(self.path.parent)
        if found is not None and found[0] == self.pid:
            with contextlib.suppress(OSError):
                self.path.unlink()


def bind_socket(settings: Settings) -> socket.socket:
    """Bind and listen on listen_addr before anything else starts; ProcessError with a plain message if busy."""
    host, port = settings.host, settings.port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ProcessError(f"cannot listen on {settings.listen_addr}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        # Listening at once closes the window in which a second server could bind the same port.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ProcessError(f"{settings.listen_addr} is already in use (another opcode serve?)") from None
        raise ProcessError(f"cannot listen on {settings.listen_addr}: {exc.strerror or exc}") from None
    return sock


def server_url(settings: Settings) -> str:
    """The URL this machine reaches the server of these settings at (loopback for every-interface addresses)."""
    host = settings.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def running_server(settings: Settings, wait_s: float = 5.0) -> str | None:
    """The URL of this home's running server (pidfile, confirmed by /health), or None when none runs."""
    import httpx

    found = _read_pidfile(settings.home)
    if found is None or not pid_alive(found[0]):
        return None
    pid, url = found[0], found[1] or server_url(settings)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            answered = httpx.get(f"{url}/health", timeout=2).json().get("pid")
            if answered == pid:
                return url
            problem = f"{url} is answered by pid {answered}"
        except (httpx.HTTPError, ValueError) as exc:
            problem = f"{url}/health does not answer ({type(exc).__name__})"
        if read_pid(settings.home) is None:
            return None  # it stopped meanwhile
        if time.monotonic() > deadline:
            raise ProcessError(f"opcode serve (pid {pid}) runs from {settings.home} but {problem}")
        time.sleep(0.2)


def classify_changes(old: Settings, new: Settings) -> tuple[list[str], list[str]]:
    """The changed settings a SIGHUP applies in place, and those that need a restart."""
    changed = [f.name for f in fields(Settings)
               if f.name not in IGNORED_SETTINGS and getattr(old, f.name) != getattr(new, f.name)]
    applied = [name for name in changed if name in LIVE_SETTINGS]
    restart = [name for name in changed if name not in LIVE_SETTINGS]
    if old.plugins.settings != new.plugins.settings:
        applied.append("plugins.settings")
    restart += [f"plugins.{key}" for key in ("allow", "deny")
                if getattr(old.plugins, key) != getattr(new.plugins, key)]
    return applied, restart


def reload_settings(runtime: Runtime, overrides: dict[str, Any]) -> None:
    """Re-read settings.json: apply what can change live, and report what needs a restart."""
    old = runtime.settings
    try:
        fresh = load_settings(home=old.home)
        if overrides:
            fresh = fresh.with_overrides(**overrides)
    except ConfigError as exc:
        log.error("settings not reloaded, the running ones stay: %s", exc)
        return
    applied, restart = classify_changes(old, fresh)
    # Runs started from now on read plugin settings through runtime.settings; the vault key stays in memory.
    runtime.settings = replace(
        old,
        **{name: getattr(fresh, name) for name in applied if name in LIVE_SETTINGS},
        plugins=replace(old.plugins, settings=fresh.plugins.settings),
    )
    if "log_level" in applied:
        set_log_level(fresh.log_level)
    log.info("settings reloaded", extra={"data": {"applied": applied, "restart_needed": restart}})
    if restart:
        log.warning("changed settings that apply only after a restart: %s", ", ".join(restart))


class OpcodeServer(uvicorn.Server):
    """uvicorn's server, holding the pidfile, reloading on SIGHUP, and stopping within STOP_BUDGET_S."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, pidfile: PidFile,
                 overrides: dict[str, Any]) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.pidfile = pidfile
        self.overrides = overrides

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's SIGINT/SIGTERM handling, plus SIGHUP; the pidfile goes before uvicorn re-raises the signal."""
        with super().capture_signals():
            loop = asyncio.get_running_loop()
            hup = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP")
            if hup:
                loop.add_signal_handler(signal.SIGHUP, reload_settings, self.runtime, self.overrides)
            try:
                yield
            finally:
                if hup:
                    loop.remove_signal_handler(signal.SIGHUP)
                self.pidfile.release()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, give runs a short grace, interrupt the rest (left active: resumable), then uvicorn's."""
        deadline = time.monotonic() + STOP_BUDGET_S
        for server in getattr(self, "servers", []):
            server.close()
        if self.runtime.scheduler is not None:
            await self.runtime.scheduler.stop()
        await interrupt_runs(self.runtime, RUN_GRACE_S)
        # What is left of the budget goes to open connections, keeping a second for the lifespan's shutdown.
        self.config.timeout_graceful_shutdown = max(1, int(deadline - time.monotonic() - 1))
        await super().shutdown(sockets)


async def interrupt_runs(runtime: Runtime, grace_s: float) -> None:
    """Wait up to grace_s for runs still advancing, then cancel every run task (their runs stay active)."""
    advancing = [run.settled.wait() for run in runtime.runs.values() if not run.settled.is_set()]
    if advancing:
        log.info("waiting up to %ss for %d running workflow(s)", grace_s, len(advancing))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*advancing), grace_s)
    tasks = list(runtime.tasks.values())
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=2)
        log.warning("interrupted %d workflow(s); they are recovered at the next start", len(tasks))


def serve(settings: Settings, overrides: dict[str, Any]) -> None:
    """Run `opcode serve` in this process: ProcessError (plainly worded) when it cannot start."""
    from opcode_core.runtime import Runtime
    from opcode_server.app import create_app

    settings.home.mkdir(parents=True, exist_ok=True)
    pidfile = PidFile(settings.home, server_url(settings))
    if (other := read_pid(settings.home)) is not None and other != os.getpid():
        raise ProcessError(f"opcode is already running from {settings.home} (pid {other}; pidfile {pidfile.path})")
    sock = bind_socket(settings)
    try:
        pidfile.acquire()
        runtime = Runtime(settings)
        runtime.load_plugins()
        app = create_app(runtime, settings)
        config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=int(STOP_BUDGET_S))
        OpcodeServer(config, runtime, pidfile, overrides).run(sockets=[sock])
    finally:
        pidfile.release()
        sock.close()

"""The runtime: plugins, registry, store, event writer, and the task group every run executes in."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from opcode_core.decisions import DecisionBook
from opcode_core.engine.breakers import CircuitBreakers
from opcode_core.engine.executor import WorkflowRun
from opcode_core.engine.expressions import ExpressionEvaluator
from opcode_core.errors import ConfigError, OpcodeError
from opcode_core.plugins import PluginReport, build_plugin_manager
from opcode_core.redaction import LOG_REDACTOR, Redactor
from opcode_core.registry import Registry
from opcode_core.run_services import RunServicesImpl
from opcode_core.settings import Settings
from opcode_core.store.store import Store
from opcode_core.store.writer import DbRunner, EventWriter
from opcode_core.timers import TimerService
from opcode_core.vault import Vault, no_vault

if TYPE_CHECKING:
    from opcode_core.scheduler import Scheduler

log = logging.getLogger("opcode.runtime")

ESSENTIAL_STEP_TYPES = ("action",)
Observer = Callable[[dict[str, Any]], None]


def load_registry(settings: Settings, extra: dict[str, Any] | None = None) -> tuple[Any, PluginReport, Registry]:
    """Build the plugin manager and the registry; raise ConfigError when start-up must stop."""
    pm, report = build_plugin_manager(settings, extra)
    registry = Registry.from_plugins(pm, report, settings)
    if report.unknown_names:
        raise ConfigError(
            f"configured plugin(s) not installed: {', '.join(report.unknown_names)} "
            f"(available: {', '.join(sorted(report.plugins))})"
        )
    registry.raise_on_duplicates()
    if settings.plugins.strict and report.failed():
        raise ConfigError("; ".join(f"plugin {p.name} failed: {p.error}" for p in report.failed()))
    for name in ESSENTIAL_STEP_TYPES:
        if name not in registry.step_types:
            off = [p.name for p in report.plugins.values() if p.status != "loaded"]
            raise ConfigError(
                f"the essential step type {name!r} is provided by no loaded plugin; "
                f"it cannot be disabled (not loaded: {', '.join(off) or 'none'})"
            )
    return pm, report, registry


def _open_remote(url: str) -> Store:
    """Open and migrate a PostgreSQL store off the event loop, releasing this thread's connection after."""
    store = Store.open(url)
    store.close()  # the DB runner's own thread opens the connection every later call uses
    return store


class Runtime:
    """Everything a server or a CLI command needs to define and run workflows."""

    def __init__(self, settings: Settings, extra_plugins: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.extra_plugins = extra_plugins
        self.pm: Any = None
        self.report: PluginReport | None = None
        self.registry: Registry | None = None
        self.store: Store | None = None
        self.runner: DbRunner | None = None
        self.writer: EventWriter | None = None
        # The secret vault (None without a key) and the secret values it handed out, hidden wherever runs report.
        self.vault: Vault | None = None
        self.redactor = Redactor(also=(LOG_REDACTOR,))
        self.expressions: ExpressionEvaluator | None = None
        self.decisions = DecisionBook(self)
        self.breakers = CircuitBreakers(settings.breaker_threshold, settings.breaker_reset_s)
        self.pool = asyncio.Semaphore(settings.pool_size)
        # Every deadline of this process: decision timeouts, cron wake-ups.
        self.timers = TimerService()
        self.runs: dict[str, WorkflowRun] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._observers: list[Observer] = []
        # The cron scheduler, while this process is the serving one that runs it.
        self.scheduler: Scheduler | None = None
        self._group: asyncio.TaskGroup | None = None
        # The server installs a notifier that reaches connected MCP sessions; none by default.
        self._notifier: Callable[[str, dict[str, Any]], Any] | None = None

    @property
    def notifier(self) -> Callable[[str, dict[str, Any]], Any] | None:
        """What pushes `workflow.notify` messages to an agent's MCP sessions, with secret values redacted."""
        inner = self._notifier
        if inner is None:
            return None
        return lambda agent_id, payload: inner(agent_id, self.redactor.redact(payload))

    @notifier.setter
    def notifier(self, value: Callable[[str, dict[str, Any]], Any] | None) -> None:
        self._notifier = value

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """Start the runtime, hold the task group runs execute in, stop on exit."""
        await self.start()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                timers = group.create_task(self.timers.run(), name="opcode-timers")
                try:
                    yield self
                finally:
                    self._group = None
                    timers.cancel()
                    for task in self.tasks.values():
                        task.cancel()
        finally:
            await self.stop()

    def load_plugins(self) -> None:
        """Load plugins and build the registry once; ConfigError when start-up must stop."""
        if self.registry is None:
            self.pm, self.report, self.registry = load_registry(self.settings, self.extra_plugins)
            self.expressions = self.registry.evaluator

    async def start(self) -> None:
        """Load plugins, open the store and start the event writer."""
        self.load_plugins()
        url = self.settings.database_url
        self.store = await asyncio.to_thread(_open_remote, url) if url.startswith("postgres") else Store.open(url)
        self.runner = DbRunner.for_store(self.store)
        await self._open_vault()
        # Most installs have no event observer plugin: skip the hook call per event then.
        self._event_hooks = bool(self.pm.hook.opcode_workflow_event.get_hookimpls())
        self.writer = EventWriter(self.runner, observers=[self._dispatch_event])
        await self.writer.start()
        for result in self.pm.hook.opcode_startup(runtime=self):
            if asyncio.iscoroutine(result):
                await result

    async def _open_vault(self) -> None:
        """Derive the vault key once and check it; a wrong key stops start-up (VAULT_ERROR), no key is allowed."""
        passphrase = self.settings.vault_key
        if not passphrase:
            log.info("no vault key configured: ${{secrets.*}} references fail with VAULT_ERROR")
            return
        self.redactor.add(passphrase)
        try:
            self.vault = await self.db(Vault.open, self.store, passphrase, on_reveal=self.redactor.add)
        except BaseException as exc:
            if isinstance(exc, OpcodeError):
                log.error("cannot start: %s: %s", exc.code, exc.message)
            self.runner.close()
            self.store.close()
            raise
        self.store.redact = self.redactor.redact
        # The key stays in memory only: child processes (shell.exec inherits the environment) never see it.
        os.environ.pop("OPCODE_VAULT_KEY", None)
        log.info("vault opened")

    async def stop(self) -> None:
        """Flush events, run shut-down hooks and close the store."""
        if self.pm is not None:
            for result in self.pm.hook.opcode_shutdown(runtime=self):
                if asyncio.iscoroutine(result):
                    await result
        if self.writer is not None:
            await self.writer.close()
        if self.runner is not None:
            self.runner.close()
        if self.store is not None:
            self.store.close()

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a Store method the way this database wants (inline for SQLite, on the DB thread for PG)."""
        assert self.runner is not None
        return await self.runner.call(fn, *args, **kwargs)

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Receive every durable event; returns the function that unsubscribes."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def _dispatch_event(self, event: dict[str, Any]) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("event observer failed")
        if self._event_hooks:
            self.pm.hook.opcode_workflow_event(event=event)

    def services_for(self, workflow_id: str, agent_id: str) -> RunServicesImpl:
        """The RunServices actions of one run get as `ctx.runtime`."""
        return RunServicesImpl(self, workflow_id, agent_id)

    def start_run(self, run: WorkflowRun) -> asyncio.Task[None]:
        """Execute a run in the runtime's task group, never in a caller's task."""
        wid = run.info.workflow_id
        self.runs[wid] = run
        run.use_secrets(self.vault.lookup if self.vault is not None else no_vault, self.redactor)

        async def guarded() -> None:
            try:
                await run.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                run.log.exception("run crashed")
                await run.crash(exc)
            finally:
                self.runs.pop(wid, None)
                self.tasks.pop(wid, None)

        coro = guarded()
        task = self._group.create_task(coro) if self._group is not None else asyncio.create_task(coro)
        self.tasks[wid] = task
        return task

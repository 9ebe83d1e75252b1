"""Discover plugins through the `opcode` entry-point group (stevedore) and register them (pluggy)."""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from typing import Any

import pluggy
from stevedore import NamedExtensionManager

from opcode_core import hookspecs
from opcode_core.settings import Settings

log = logging.getLogger("opcode.plugins")

ENTRY_POINT_GROUP = "opcode"
OWN_DISTRIBUTION = "opcode"


@dataclass
class PluginInfo:
    """One row of `opcode plugins`: an entry point and what became of it."""

    name: str
    value: str
    distribution: str | None
    version: str | None
    builtin: bool
    status: str = "disabled"  # loaded | disabled | failed
    error: str | None = None
    reason: str | None = None
    hooks: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    step_types: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON row `opcode plugins` prints."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "status": self.status,
            "error": self.error,
            "reason": self.reason,
            "hooks": self.hooks,
            "actions": self.actions,
            "step_types": self.step_types,
            "engines": self.engines,
        }


@dataclass
class PluginReport:
    """What discovery found: one PluginInfo per entry-point name, plus names configured but not installed."""

    plugins: dict[str, PluginInfo]
    unknown_names: list[str]

    def failed(self) -> list[PluginInfo]:
        """Plugins that failed to import or to register."""
        return [p for p in self.plugins.values() if p.status == "failed"]

    def mark_failed(self, name: str, error: BaseException | str) -> None:
        """Record that a plugin failed after loading (e.g. its register hook raised)."""
        info = self.plugins[name]
        info.status = "failed"
        info.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        log.error("plugin %s failed: %s", name, info.error)


def discover_entry_points() -> list[importlib.metadata.EntryPoint]:
    """Entry points of our group, de-duplicated (editable installs can list one twice)."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        unique.append(ep)
    return unique


def _selection_reason(info: PluginInfo, settings: Settings) -> str | None:
    """Why a plugin is disabled by configuration, or None when it may load."""
    chosen = settings.plugins
    if info.name in chosen.deny:
        return "denied by plugins.deny"
    if chosen.allow is not None and info.name not in chosen.allow:
        return "not in plugins.allow"
    if not info.builtin and chosen.load_third_party is not None and info.name not in chosen.load_third_party:
        return "not in OPCODE_LOAD_PLUGINS"
    return None


def build_plugin_manager(
    settings: Settings, extra: dict[str, Any] | None = None
) -> tuple[pluggy.PluginManager, PluginReport]:
    """Discover, select, load one by one (a failure is reported, not fatal) and register plugins.

    :param extra: in-process plugin objects by name (tests, benchmarks), registered after the entry points.
    """
    pm = pluggy.PluginManager("opcode")
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    for ep in discover_entry_points():
        if ep.name in infos:
            continue
        dist = ep.dist
        infos[ep.name] = PluginInfo(
            name=ep.name,
            value=ep.value,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
            builtin=bool(dist and dist.name == OWN_DISTRIBUTION),
        )
    enabled = []
    for info in infos.values():
        info.reason = _selection_reason(info, settings)
        if info.reason is None:
            enabled.append(info.name)

    def on_failure(_manager: Any, ep: importlib.metadata.EntryPoint, exc: BaseException) -> None:
        infos[ep.name].status = "failed"
        infos[ep.name].error = f"{type(exc).__name__}: {exc}"
        log.error("plugin %s failed to load: %s", ep.name, infos[ep.name].error)

    # Denied and unselected names are never passed to stevedore, so their code is never imported.
    if enabled:
        manager = NamedExtensionManager(
            namespace=ENTRY_POINT_GROUP,
            names=enabled,
            name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=lambda names: None,
        )
        for ext in manager.extensions:
            if pm.get_plugin(ext.name) is not None:
                continue
            try:
                pm.register(ext.plugin, name=ext.name)
            except Exception as exc:
                on_failure(manager, ext.entry_point, exc)
                continue
            infos[ext.name].status = "loaded"
            infos[ext.name].hooks = sorted(h.name for h in pm.get_hookcallers(ext.plugin) or [])
    for name, plugin in (extra or {}).items():
        pm.register(plugin, name=name)
        infos[name] = PluginInfo(name=name, value=repr(plugin), distribution=None, version=None, builtin=False,
                                 status="loaded", hooks=sorted(h.name for h in pm.get_hookcallers(plugin) or []))
    _drop_unknown_hooks(pm, infos)
    configured = set(settings.plugins.deny) | set(settings.plugins.settings) | set(settings.plugins.allow or [])
    configured |= set(settings.plugins.load_third_party or [])
    report = PluginReport(plugins=infos, unknown_names=sorted(configured - set(infos)))
    loaded = [n for n, i in infos.items() if i.status == "loaded"]
    log.info("plugins configured: %s / loaded: %s", sorted(enabled), loaded)
    return pm, report


def _drop_unknown_hooks(pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """Fail and unregister each plugin that implements a hook opcode does not define."""
    # pluggy's check_pending, per plugin: a typo in one plugin's hook name must not stop every other plugin.
    known = sorted(name for name in vars(pm.hook) if not name.startswith("_") and getattr(pm.hook, name).has_spec())
    for name in list(vars(pm.hook)):
        caller = getattr(pm.hook, name)
        if name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook or pm.get_name(impl.plugin) is None:
                continue
            plugin_name = pm.get_name(impl.plugin)
            info = infos[plugin_name]
            info.status, info.hooks = "failed", []
            info.error = f"unknown hook {name!r}; opcode's hooks are: {', '.join(known)}"
            log.error("plugin %s failed to load: %s", plugin_name, info.error)
            pm.unregister(impl.plugin)

"""One loader for every setting of SPEC §11: `settings.json` under the home, each overridden by its env var."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from opcode_core.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
RECOVERY_MODES = ("suspend", "auto")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SECRET_WORDS = ("secret", "key", "password", "token")


@dataclass(frozen=True)
class PluginSelection:
    """The admin's choice of plugins: allow-list (None: all), deny-list, per-plugin settings."""

    allow: list[str] | None = None
    deny: list[str] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # OPCODE_LOAD_PLUGINS: which third-party plugins load (None: not set, [] : none).
    load_third_party: list[str] | None = None
    strict: bool = False


@dataclass(frozen=True)
class Settings:
    """The settings in force; build it with `load_settings`."""

    home: Path = field(default_factory=lambda: Path("~/.opcode").expanduser())
    listen_addr: str = "127.0.0.1:4100"
    base_url: str | None = None
    allowed_hosts: list[str] | None = None
    allowed_origins: list[str] | None = None
    db_path: Path | None = None
    db_url: str | None = None
    log_level: str = "info"
    pool_size: int = 10
    panel: bool | None = None
    recovery: str = "suspend"
    max_recovery_attempts: int = 3
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0
    # Also list the six tools as opcode_define, opcode_run, ... for MCP clients that refuse dots in names.
    underscore_tool_names: bool = False
    plugins: PluginSelection = field(default_factory=PluginSelection)
    vault_key: str | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """The interface to listen on ('' in `:4100` means every interface)."""
        return split_listen_addr(self.listen_addr)[0]

    @property
    def port(self) -> int:
        """The port to listen on."""
        return split_listen_addr(self.listen_addr)[1]

    @property
    def on_loopback(self) -> bool:
        """Whether the server listens on a loopback address only."""
        return self.host in LOOPBACK_HOSTS

    @property
    def database_url(self) -> str:
        """`postgresql://...` when db_url says so, else `sqlite:///<path>`."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.db_path or self.home / 'opcode.db'}"

    @property
    def public_base_url(self) -> str:
        """The URL links and logs show."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = self.host or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def panel_enabled(self) -> bool:
        """The panel is on by default when listening on loopback."""
        return self.on_loopback if self.panel is None else self.panel

    @property
    def hosts_allowed(self) -> list[str]:
        """Host header patterns accepted by the MCP transports."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return [f"{h}:*" for h in ("127.0.0.1", "localhost", "[::1]")] + ["127.0.0.1", "localhost", "[::1]"]

    @property
    def origins_allowed(self) -> list[str]:
        """Origin header values accepted by the MCP transports."""
        if self.allowed_origins is not None:
            return self.allowed_origins
        return [f"http://{h}:*" for h in ("127.0.0.1", "localhost", "[::1]")]

    def plugin_config(self, name: str) -> dict[str, Any]:
        """A plugin's own settings block, with `{"$env": "VAR"}` values read from the environment."""
        if name not in self.plugins.settings:
            return {}
        return _resolve_env_refs(self.plugins.settings[name])

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with some settings replaced (used by CLI flags), validated like the file."""
        return replace(self, **values)

    def redacted_plugin_settings(self) -> dict[str, Any]:
        """Per-plugin settings with values under secret-looking keys hidden, for introspection."""
        return {name: _redact(block) for name, block in self.plugins.settings.items()}


def split_listen_addr(addr: str) -> tuple[str, int]:
    """Split `host:port`, `:port` or `[v6]:port`."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen_addr: {addr!r} is not host:port (e.g. 127.0.0.1:4100)")
    return host.strip("[]"), int(port)


def load_settings(env: Mapping[str, str] | None = None, home: str | Path | None = None) -> Settings:
    """Read `$OPCODE_HOME/settings.json` and apply env overrides; an invalid setting raises ConfigError."""
    env = os.environ if env is None else env
    home_path = Path(home or env.get("OPCODE_HOME") or "~/.opcode").expanduser()
    raw = read_settings_file(home_path / "settings.json")
    sources: dict[str, str] = {}
    raw.pop("home", None)
    for name, var in ENV_VARS.items():
        if var in env:
            raw[name] = env[var]
            sources[name] = var
    plugins = raw.pop("plugins", {})
    unknown = sorted(set(raw) - {f.name for f in fields(Settings)} - {"vault_key"})
    if unknown:
        raise ConfigError(f"settings.json: unknown setting(s) {', '.join(unknown)}")
    raw.pop("vault_key", None)  # the vault key is never read from a file
    values: dict[str, Any] = {"home": home_path}
    for name, value in raw.items():
        label = f"{name} (from {sources[name]})" if name in sources else name
        values[name] = _PARSERS[name](label, value)
    values["plugins"] = _parse_plugins(plugins, env)
    if env.get("OPCODE_VAULT_KEY"):
        values["vault_key"] = env["OPCODE_VAULT_KEY"]
    return Settings(**values)


def read_settings_file(path: Path) -> dict[str, Any]:
    """The JSON object in settings.json, or {} when there is none."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object")
    return data


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def _int(name: str, value: Any, minimum: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if isinstance(value, bool) or number < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _choice(options: tuple[str, ...]):
    def parse(name: str, value: Any) -> str:
        text = str(value).lower()
        if text not in options:
            raise ConfigError(f"{name}: expected one of {', '.join(options)}, got {value!r}")
        return text

    return parse


def _list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(f"{name}: expected a list of strings or a comma-separated string, got {value!r}")


def _duration(name: str, value: Any) -> float:
    from opcode_core.engine.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _listen(name: str, value: Any) -> str:
    text = _str(name, value)
    split_listen_addr(text)
    return text


def _db_url(name: str, value: Any) -> str:
    text = _str(name, value)
    if not text.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError(f"{name}: expected a postgresql:// or sqlite:/// URL, got {value!r}")
    return text


_PARSERS = {
    "listen_addr": _listen,
    "base_url": _str,
    "allowed_hosts": _list,
    "allowed_origins": _list,
    "db_path": lambda n, v: Path(_str(n, v)).expanduser(),
    "db_url": _db_url,
    "log_level": _choice(LOG_LEVELS),
    "pool_size": _int,
    "panel": _bool,
    "recovery": _choice(RECOVERY_MODES),
    "max_recovery_attempts": _int,
    "breaker_threshold": _int,
    "breaker_reset_s": lambda n, v: float(_duration(n, v)),
    "underscore_tool_names": _bool,
}

ENV_VARS = {
    "listen_addr": "OPCODE_LISTEN_ADDR",
    "base_url": "OPCODE_BASE_URL",
    "allowed_hosts": "OPCODE_ALLOWED_HOSTS",
    "allowed_origins": "OPCODE_ALLOWED_ORIGINS",
    "db_path": "OPCODE_DB_PATH",
    "db_url": "OPCODE_DB_URL",
    "log_level": "OPCODE_LOG_LEVEL",
    "pool_size": "OPCODE_POOL_SIZE",
    "panel": "OPCODE_PANEL",
    "recovery": "OPCODE_RECOVERY",
    "max_recovery_attempts": "OPCODE_MAX_RECOVERY_ATTEMPTS",
    "breaker_threshold": "OPCODE_BREAKER_THRESHOLD",
    "breaker_reset_s": "OPCODE_BREAKER_RESET",
    "underscore_tool_names": "OPCODE_UNDERSCORE_TOOLS",
}


def _parse_plugins(raw: Any, env: Mapping[str, str]) -> PluginSelection:
    if not isinstance(raw, dict):
        raise ConfigError(f"plugins: expected an object, got {raw!r}")
    unknown = sorted(set(raw) - {"allow", "deny", "settings"})
    if unknown:
        raise ConfigError(f"plugins: unknown key(s) {', '.join(unknown)}")
    allow = raw.get("allow")
    if allow is not None:
        allow = _list("plugins.allow", allow)
    deny = _list("plugins.deny", raw.get("deny", []))
    settings = raw.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ConfigError("plugins.settings: expected an object of objects, one per plugin name")
    load = env.get("OPCODE_LOAD_PLUGINS")
    strict = _bool("OPCODE_STRICT_PLUGINS", env.get("OPCODE_STRICT_PLUGINS", "0"))
    return PluginSelection(
        allow=allow,
        deny=deny,
        settings=settings,
        load_third_party=None if load is None else _list("OPCODE_LOAD_PLUGINS", load),
        strict=strict,
    )


def _resolve_env_refs(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            return os.environ.get(value["$env"])
        return {k: _resolve_env_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env_refs(v) for v in value]
    return value


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if any(word in key.lower() for word in SECRET_WORDS):
        return "***"
    return value

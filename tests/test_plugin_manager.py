"""Plugin discovery through real entry points: built-ins, deny/allow, broken and duplicate plugins."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import OPCODE, opcode_env, write_settings

BUILTINS = {"step_action", "workflow", "crypto", "shell", "http"}

GOOD = """
from opcode_core import ActionSpec, hookimpl

async def echo(params, ctx):
    return {"echo": params["text"], "plugin_settings": ctx.settings}

@hookimpl
def opcode_register_actions(settings):
    return [ActionSpec("acme.echo", "Echo text back.", {"type": "object", "properties": {"text": {"type": "string"}},
                       "required": ["text"], "additionalProperties": False}, echo)]
"""

TWIN = """
from opcode_core import ActionSpec, hookimpl

async def echo(params, ctx):
    return {}

@hookimpl
def opcode_register_actions():
    return [ActionSpec("acme.echo", "Same name, other plugin.", {"type": "object"}, echo)]
"""

TYPO = """
from opcode_core import ActionSpec, hookimpl

@hookimpl
def opcode_register_action(settings):
    return []
"""

BROKEN = "raise ImportError('acme_broken needs a library that is not installed')\n"


def make_dist(site: Path, name: str, source: str) -> None:
    """A real installed distribution: a module plus a dist-info with an `opcode` entry point."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[opcode]\n{name} = {name}\n")


def run_opcode(home: Path, site: Path | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real `opcode` command with extra distributions on its path."""
    full_env = opcode_env(home, XDG_CACHE_HOME=str(home / "cache"), **env)
    full_env.pop("OPCODE_LOAD_PLUGINS")
    full_env.update(env)
    if site is not None:
        full_env["PYTHONPATH"] = str(site)
    return subprocess.run([OPCODE, *args], env=full_env, capture_output=True, text=True, timeout=60)


def plugins_json(home: Path, site: Path | None = None, **env: str) -> dict:
    """`opcode plugins` output, which must exit 0 even when some plugins failed."""
    proc = run_opcode(home, site, "plugins", **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def rows(out: dict) -> dict[str, dict]:
    """Plugin rows by name."""
    return {row["name"]: row for row in out["plugins"]}


def test_builtins_arrive_through_entry_points(tmp_path: Path) -> None:
    out = rows(plugins_json(tmp_path))
    assert set(out) >= BUILTINS
    for name in BUILTINS:
        assert out[name]["builtin"] is True and out[name]["distribution"] == "opcode"
        assert out[name]["status"] == "loaded", out[name]
    assert "shell.exec" in out["shell"]["actions"]
    assert out["step_action"]["step_types"] == ["action"]
    assert "opcode_register_actions" in out["crypto"]["hooks"]


def test_core_never_names_a_builtin_plugin() -> None:
    root = Path(__file__).parent.parent
    for package in ("opcode_core", "opcode_server"):
        for path in (root / package).rglob("*.py"):
            assert "opcode_plugins" not in path.read_text(), f"{path} imports a built-in plugin by name"


def test_third_party_plugin_loads_and_its_settings_reach_it(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "acme_good", GOOD)
    out = rows(plugins_json(tmp_path, site))
    assert out["acme_good"]["status"] == "loaded" and out["acme_good"]["builtin"] is False
    assert out["acme_good"]["actions"] == ["acme.echo"]
    assert out["acme_good"]["distribution"] == "acme-good" and out["acme_good"]["version"] == "0.1"


def test_denied_plugin_is_never_imported(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "acme_broken", BROKEN)  # importing it would fail: disabled proves it was not imported
    write_settings(tmp_path, {"plugins": {"deny": ["acme_broken", "shell"]}})
    out = rows(plugins_json(tmp_path, site))
    assert out["acme_broken"]["status"] == "disabled" and out["acme_broken"]["error"] is None
    assert out["shell"]["status"] == "disabled" and out["shell"]["actions"] == []
    assert out["crypto"]["status"] == "loaded"


def test_opcode_load_plugins_selects_third_party_only(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "acme_good", GOOD)
    out = rows(plugins_json(tmp_path, site, OPCODE_LOAD_PLUGINS=""))
    assert out["acme_good"]["status"] == "disabled" and out["acme_good"]["reason"] == "not in OPCODE_LOAD_PLUGINS"
    assert all(out[name]["status"] == "loaded" for name in BUILTINS)
    assert rows(plugins_json(tmp_path, site, OPCODE_LOAD_PLUGINS="acme_good"))["acme_good"]["status"] == "loaded"


def test_broken_plugin_is_reported_and_the_rest_load(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "acme_broken", BROKEN)
    make_dist(site, "acme_good", GOOD)
    out = rows(plugins_json(tmp_path, site))
    assert out["acme_broken"]["status"] == "failed"
    assert "ImportError" in out["acme_broken"]["error"] and "not installed" in out["acme_broken"]["error"]
    assert out["acme_good"]["status"] == "loaded"
    assert all(out[name]["status"] == "loaded" for name in BUILTINS)


def test_a_misspelt_hook_fails_only_its_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "acme_typo", TYPO)
    make_dist(site, "acme_good", GOOD)
    out = rows(plugins_json(tmp_path, site))
    assert out["acme_typo"]["status"] == "failed"
    assert out["acme_typo"]["error"].startswith("unknown hook 'opcode_register_action'; opcode's hooks are: ")
    assert "opcode_register_actions" in out["acme_typo"]["error"]
    assert out["acme_good"]["status"] == "loaded"
    hello = Path(__file__).parent.parent / "examples" / "hello.json"
    ran = run_opcode(tmp_path, site, "run", str(hello), "-q", "-p", "who=x")
    assert ran.returncode == 0, ran.stderr


def test_duplicate_action_is_reported_and_serve_refuses(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "acme_good", GOOD)
    make_dist(site, "acme_twin", TWIN)
    out = plugins_json(tmp_path, site)
    assert out["duplicates"] == ["action 'acme.echo' is registered by both plugin 'acme_good' and plugin 'acme_twin'"]
    proc = run_opcode(tmp_path, site, "serve", OPCODE_LISTEN_ADDR="127.0.0.1:1")
    assert proc.returncode != 0
    assert "acme_good" in proc.stderr and "acme_twin" in proc.stderr and "acme.echo" in proc.stderr


def test_denied_plugin_actions_disappear_from_a_run(tmp_path: Path) -> None:
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps({"steps": [{"id": "s", "action": "shell.exec", "params": {"command": "true"}}]}))
    ok = run_opcode(tmp_path, None, "run", str(workflow), "-q")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "completed"
    write_settings(tmp_path, {"plugins": {"deny": ["shell"]}})
    denied = run_opcode(tmp_path, None, "run", str(workflow), "-q")
    assert denied.returncode != 0
    assert "[VALIDATION_ERROR]" in denied.stderr and "unknown action 'shell.exec'" in denied.stderr


def test_essential_step_type_cannot_be_disabled(tmp_path: Path) -> None:
    write_settings(tmp_path, {"plugins": {"deny": ["step_action"]}})
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps({"steps": [{"id": "s", "action": "workflow.log", "params": {"message": "x"}}]}))
    proc = run_opcode(tmp_path, None, "run", str(workflow))
    assert proc.returncode != 0 and "essential step type 'action'" in proc.stderr


def test_configured_name_that_is_not_installed_stops_start_up(tmp_path: Path) -> None:
    write_settings(tmp_path, {"plugins": {"allow": ["crypto", "step_action", "no_such_plugin"]}})
    proc = run_opcode(tmp_path, None, "serve", OPCODE_LISTEN_ADDR="127.0.0.1:1")
    assert proc.returncode != 0 and "no_such_plugin" in proc.stderr and "available:" in proc.stderr


@pytest.mark.parametrize("bad", ['{"pool_size": 0}', '{"listen_addr": "nowhere"}', '{"recovery": "maybe"}', "{oops"])
def test_invalid_setting_is_an_error_naming_it(tmp_path: Path, bad: str) -> None:
    (tmp_path / "settings.json").write_text(bad)
    proc = run_opcode(tmp_path, None, "plugins")
    assert proc.returncode != 0
    named = bad.split('"')[1] if '"' in bad else "settings.json"
    assert named in proc.stderr


def test_server_starts_without_a_broken_plugin_and_health_reports_it(tmp_path: Path) -> None:
    import httpx

    from tests.conftest import start_server, stop_server

    site = tmp_path / "site"
    make_dist(site, "acme_broken", BROKEN)
    proc = start_server(tmp_path / "home", PYTHONPATH=str(site), OPCODE_LOAD_PLUGINS="acme_broken",
                        XDG_CACHE_HOME=str(tmp_path / "cache"))
    try:
        health = httpx.get(f"{proc.base_url}/health").json()
    finally:
        stop_server(proc.process)
    assert health["status"] == "ok"
    failed = {p["name"]: p["error"] for p in health["plugins"]["failed"]}
    assert "not installed" in failed["acme_broken"]

"""The plugin template: render it, install the result next to opcode in a fresh venv, run its tests, serve it.

This is the one integration test that installs a real third-party distribution (STYLE.md convention 12):
the rest of the suite runs with third-party plugins off.

Why a venv without system site-packages, with opcode installed from a copy of this checkout: it proves
that the generated package's declared dependencies are enough, that opcode's wheel ships what a plugin
imports (`opcode_core.testing` and its `pytest11` entry point included), and that discovery goes through
installed entry points only. Measured here: 50-75 s for the venv and both installs (pip's wheel cache
warm), 8 s for the generated tests, 10 s for the two servers; rendering alone takes well under a second,
so only the tests that use the venv are marked slow. Resolving opcode's dependencies from
our own `.venv` instead (a `.pth` file) would save most of the install but let this venv see our editable
opcode's metadata, which is exactly what the test must not rely on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from packaging.requirements import Requirement

import opcode_core
from tests.conftest import free_port, opcode_env, stop_server, write_settings
from tests.mcp_client import call, call_error, streamable_session

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cookiecutter-action"
ANSWERS = {
    "plugin_name": "Acme Echo",
    "description": "Echo text back, for \"testing\" the template.",
    "action_namespace": "acme",
    "author_name": "Ada Lovelace",
    "author_email": "ada@example.com",
    "github_username": "acme-dev",
}
PLUGIN = "acme_echo"
DISTRIBUTION = "opcode-acme-echo"
ECHO = "acme.echo"
GENERATED_FILES = {
    ".github/workflows/publish.yml",
    ".github/workflows/test.yml",
    ".gitignore",
    "LICENSE",
    "README.md",
    "examples/echo.json",
    "opcode_acme_echo/__init__.py",
    "pyproject.toml",
    "tests/test_acme_echo.py",
}
# What a fresh install needs from this checkout (tests, docs and the venv stay behind).
SOURCE_PARTS = ("pyproject.toml", "README.md", "opcode_core", "opcode_server", "plugins")
INSTALL_TIMEOUT_S = 600


def render(output_dir: Path, **answers: str) -> Path:
    """Render the template without prompts; the generated project's directory."""
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output_dir),
                             extra_context={**ANSWERS, **answers}))


def clean_env(cache: Path, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: no OPCODE_* leaking in, stevedore's entry-point cache in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPCODE_", "PYTEST_", "VIRTUAL_ENV"))}
    env["XDG_CACHE_HOME"] = str(cache)
    env.update(extra)
    return env


def test_template_renders_a_complete_plugin_package(tmp_path: Path) -> None:
    project = render(tmp_path)
    assert project.name == DISTRIBUTION
    files = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert files == GENERATED_FILES

    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    meta = pyproject["project"]
    assert meta["name"] == DISTRIBUTION
    assert meta["description"] == ANSWERS["description"]
    assert meta["entry-points"]["opcode"] == {PLUGIN: "opcode_acme_echo"}
    assert meta["optional-dependencies"]["test"] == ["pytest", "pytest-asyncio"]
    assert meta["authors"] == [{"name": "Ada Lovelace", "email": "ada@example.com"}]
    assert meta["urls"]["Homepage"] == "https://github.com/acme-dev/opcode-acme-echo"
    assert "classifiers" not in meta  # PyPI refuses unknown trove classifiers, and there is none for opcode
    (requirement,) = (Requirement(r) for r in meta["dependencies"])
    assert requirement.name == "opcode"
    assert requirement.specifier.contains(opcode_core.__version__), "the template's opcode range excludes us"

    module = (project / "opcode_acme_echo" / "__init__.py").read_text()
    assert f'"{ECHO}"' in module and "def opcode_register_actions(settings" in module
    workflow = (project / ".github" / "workflows" / "test.yml").read_text()
    assert "${{ matrix.python-version }}" in workflow  # GitHub expressions survive rendering
    example = json.loads((project / "examples" / "echo.json").read_text())
    assert example["definition"]["steps"][0]["params"]["text"] == "hello ${{inputs.who}}"


def test_template_without_optional_answers(tmp_path: Path) -> None:
    project = render(tmp_path, plugin_name="tiny", action_namespace="tiny", description="", author_name="",
                     author_email="", github_username="")
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "opcode-tiny" and meta["entry-points"]["opcode"] == {"tiny": "opcode_tiny"}
    assert "authors" not in meta and "urls" not in meta


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"action_namespace": "acme.tools"}, "without dots"),
        ({"action_namespace": "Acme"}, "lowercase identifier"),
        ({"action_namespace": "http"}, "built-in family"),
        ({"plugin_name": "opcode slack"}, "leave out 'opcode'"),
        ({"plugin_name": "9 lives"}, "lowercase identifier"),
    ],
)
def test_template_refuses_bad_names(tmp_path: Path, answers: dict[str, str], message: str,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FailedHookException):
        render(tmp_path, **answers)
    assert message in capfd.readouterr().err
    assert not any(tmp_path.iterdir()), "a refused answer must leave nothing behind"


@dataclass
class PluginVenv:
    """A throwaway venv holding opcode (from this checkout) and the generated plugin, editable."""

    root: Path
    project: Path
    cache: Path

    def bin(self, name: str) -> str:
        """A console script or the interpreter of this venv."""
        return str(self.root / "bin" / name)


def run(args: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> PluginVenv:
    """Render the template, make a venv, install opcode and the generated package with its test extra."""
    base = tmp_path_factory.mktemp("cookiecutter-action")
    project = render(base / "out")
    # pip builds a local project in place; a copy keeps build/ and *.egg-info out of the checkout.
    source = base / "opcode-src"
    for part in SOURCE_PARTS:
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / part, source / part)
    venv = PluginVenv(base / "venv", project, base / "cache")
    env = clean_env(venv.cache)
    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv.root)], timeout=120, env=env)
    # One resolver run: the generated package's `opcode` requirement is met by the local copy, not an index.
    run([venv.bin("python"), "-m", "pip", "install", str(source), "-e", f"{project}[test]"],
        timeout=INSTALL_TIMEOUT_S, env=env)
    print(f"venv and installs took {time.monotonic() - started:.0f}s")
    return venv


@pytest.mark.slow
def test_generated_package_passes_its_own_tests(plugin_venv: PluginVenv) -> None:
    proc = run([plugin_venv.bin("python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
               timeout=300, cwd=plugin_venv.project, env=clean_env(plugin_venv.cache))
    summary = proc.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 2, proc.stdout
    assert "failed" not in summary and "error" not in summary, proc.stdout


@pytest.mark.slow
def test_opcode_plugins_lists_the_installed_plugin(plugin_venv: PluginVenv, tmp_path: Path) -> None:
    def rows(home: Path) -> dict[str, dict[str, Any]]:
        env = clean_env(plugin_venv.cache, OPCODE_HOME=str(home))
        out = json.loads(run([plugin_venv.bin("opcode"), "plugins"], timeout=60, env=env).stdout)
        return {row["name"]: row for row in out["plugins"]}

    row = rows(tmp_path / "home")[PLUGIN]
    assert (row["status"], row["builtin"], row["distribution"]) == ("loaded", False, DISTRIBUTION)
    assert row["actions"] == [ECHO] and row["hooks"] == ["opcode_register_actions"]
    write_settings(tmp_path / "denied", {"plugins": {"deny": [PLUGIN]}})
    row = rows(tmp_path / "denied")[PLUGIN]
    assert (row["status"], row["reason"], row["actions"]) == ("disabled", "denied by plugins.deny", [])


@contextmanager
def serve(venv: PluginVenv, home: Path) -> Iterator[str]:
    """Run `opcode serve` from the plugin venv with every installed plugin allowed; its base URL."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    env = opcode_env(home, OPCODE_LISTEN_ADDR=f"127.0.0.1:{port}", XDG_CACHE_HOME=str(venv.cache))
    # Unset, OPCODE_LOAD_PLUGINS lets every installed third-party plugin load: what an admin gets by default.
    env.pop("OPCODE_LOAD_PLUGINS")
    with log_path.open("wb") as log:
        process = subprocess.Popen([venv.bin("opcode"), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"opcode serve exited {process.returncode}: {log_path.read_text()}"
            assert time.monotonic() < deadline, f"opcode serve did not become healthy: {log_path.read_text()}"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield base
    finally:
        stop_server(process)


WORKFLOW = {
    "steps": [
        {"id": "shout", "action": ECHO, "params": {"text": "${{inputs.word}}", "uppercase": True, "times": 2}},
        {"id": "log", "action": "workflow.log", "depends_on": ["shout"],
         "params": {"message": "said ${{steps.shout.output.text}}"}},
    ]
}


@pytest.mark.slow
async def test_an_agent_finds_and_runs_the_action_until_the_admin_denies_it(plugin_venv: PluginVenv,
                                                                            tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_settings(home, {"plugins": {"settings": {PLUGIN: {"prefix": "> "}}}})
    with serve(plugin_venv, home) as base:
        async with streamable_session(f"{base}/mcp") as session:
            listed = (await call(session, "opcode.query", {"resource": "actions", "filter": {"plugin": PLUGIN}}))
            assert [a["name"] for a in listed["actions"]] == [ECHO]
            assert listed["actions"][0]["params_schema"]["required"] == ["text"]
            everything = await call(session, "opcode.query", {"resource": "actions"})
            assert ECHO in {a["name"] for a in everything["actions"]}

            defined = await call(session, "opcode.define", {"name": "shout", "definition": WORKFLOW, "agent_id": "t"})
            assert defined == {"name": "shout", "version": "v1"}
            result = await call(session, "opcode.run",
                                {"template_name": "shout", "agent_id": "t", "params": {"word": "hey"}})
            assert result["status"] == "completed", result
            assert result["steps"]["shout"]["output"] == {"text": "> HEY HEY", "length": 9}
            assert result["output"]["message"] == "said > HEY HEY"

    # The admin denies the plugin and restarts: same home, same stored template.
    write_settings(home, {"plugins": {"deny": [PLUGIN]}})
    with serve(plugin_venv, home) as base:
        async with streamable_session(f"{base}/mcp") as session:
            everything = await call(session, "opcode.query", {"resource": "actions"})
            names = {a["name"] for a in everything["actions"]}
            assert ECHO not in names and "workflow.log" in names
            text = await call_error(session, "opcode.run", {"template_name": "shout", "agent_id": "t",
                                                            "params": {"word": "hey"}})
            assert text.startswith("[VALIDATION_ERROR]") and f"unknown action {ECHO!r}" in text, text
            text = await call_error(session, "opcode.define", {"name": "again", "definition": WORKFLOW,
                                                               "agent_id": "t"})
            assert text.startswith("[VALIDATION_ERROR]") and f"unknown action {ECHO!r}" in text, text

"""docs/plugins.md stays true: every fenced block is run or checked, and a block this file cannot check fails.

- python: a `# <path>` first line says what the block is. Plugin modules are imported and registered with the
  real plugin manager; every action, step type and engine they register must be used by a json workflow of
  the page that completes, and any other hook they implement needs a check below (LIFECYCLE_CHECKS). A
  `# tests/...` block is run by pytest against the page's plugin, installed with a real entry point.
- json: opcode.query arguments (validated, then queried), workflow definitions (run for real; a json block
  with `status` right after one is the expected answer), or settings (loaded and the plugins built).
- toml: parsed; its entry points must name the page's plugin modules and agree with the template's pyproject.
- text: the file tree the template generates, compared with a real rendering.
- sh: run in a sandbox in page order (cookiecutter, cd, opcode, pytest), except `pip install`, which would
  change this environment: it is checked (the package exists here; the project has that extra) and the
  project is installed into the sandbox with a real dist-info instead. tests/test_cookiecutter_action.py
  runs the real `pip install` in a throwaway venv.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cookiecutter.main import cookiecutter
from jsonschema import Draft202012Validator
from packaging.requirements import Requirement

import opcode_core
from opcode_core import hookspecs, service
from opcode_core.settings import ENV_VARS, load_settings
from opcode_core.testing import load_plugins, make_settings, run_in, run_workflow_once, start_runtime
from opcode_server.tool_schemas import TOOLS
from tests.conftest import OPCODE

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
TEMPLATE = ROOT / "cookiecutter-action"
LANGUAGES = ("python", "json", "toml", "sh", "text")
# The answers the tutorial gives the template.
TUTORIAL = {"plugin_name": "acme text", "action_namespace": "acme", "description": "Text actions for workflows.",
            "github_username": "acme-dev"}
REGISTER_HOOKS = {"opcode_register_actions", "opcode_register_step_types", "opcode_register_expression_engines"}
KNOWN_ENV = {*ENV_VARS.values(), "OPCODE_HOME", "OPCODE_LOAD_PLUGINS", "OPCODE_STRICT_PLUGINS", "OPCODE_VAULT_KEY"}


@dataclass
class Block:
    """One fenced block of the page."""

    lang: str
    text: str
    line: int

    @property
    def where(self) -> str:
        """Where the block starts, for failure messages."""
        return f"docs/plugins.md:{self.line}"

    @property
    def path(self) -> str:
        """A python block's `# <path>` first line."""
        first = self.text.splitlines()[0]
        assert first.startswith("# "), f"{self.where}: a python block starts with `# <path>`"
        return first[2:].strip()


def page_blocks() -> list[Block]:
    """Every fenced block, in page order."""
    text = DOC.read_text()
    return [Block(m.group(1), m.group(2), text[: m.start()].count("\n") + 1)
            for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def of(lang: str) -> list[Block]:
    """The page's blocks in one language."""
    return [b for b in page_blocks() if b.lang == lang]


def plugin_blocks() -> dict[str, Block]:
    """Python blocks that are plugin modules, by plugin name (`opcode_acme_text/...` is `acme_text`)."""
    out = {}
    for block in of("python"):
        if not block.path.startswith("tests/"):
            module = block.path.split("/")[0].removesuffix(".py")
            out[module.removeprefix("opcode_")] = block
    return out


def import_block(name: str, block: Block) -> types.ModuleType:
    """The block executed as module `opcode_<name>`."""
    module = types.ModuleType(f"opcode_{name}")
    exec(compile(block.text, block.where, "exec"), module.__dict__)
    return module


def doc_plugins() -> dict[str, types.ModuleType]:
    """Every plugin module of the page, freshly imported."""
    return {name: import_block(name, block) for name, block in plugin_blocks().items()}


def test_every_block_is_in_a_language_this_test_checks() -> None:
    blocks = page_blocks()
    assert blocks
    for block in blocks:
        assert block.lang in LANGUAGES, f"{block.where}: no check for ```{block.lang} blocks; add one here"


@pytest.mark.parametrize("name", [n for n, f in vars(hookspecs).items() if n.startswith("opcode_") and callable(f)])
def test_every_hook_has_a_reference_entry(name: str) -> None:
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"### {name}({params})" in DOC.read_text()


# --- python and json: the page's plugins, run in real runs --------------------------------------------------


def is_subset(expected: Any, actual: Any) -> bool:
    """Whether every key and value the page shows is in the real answer."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and is_subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(is_subset, expected, actual))
    return expected == actual


def used_names(value: Any, engines: set[str]) -> set[str]:
    """Actions, step types and expression engines a definition names, however deeply nested."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("action", "type") and isinstance(item, str):
                found.add(item)
            found |= used_names(item, engines)
    elif isinstance(value, list):
        for item in value:
            found |= used_names(item, engines)
    elif isinstance(value, str):
        prefix = re.match(r"\s*([A-Za-z][A-Za-z0-9_-]*):", value)
        if prefix and prefix.group(1) in engines:
            found.add(prefix.group(1))
    return found


async def check_audit(module: types.ModuleType, tmp_path: Path) -> None:
    """The audit plugin writes each event of a run while the runtime runs, and `opcode audit` reads them back."""
    home, path = tmp_path / "audit-home", tmp_path / "audit.jsonl"
    settings = make_settings(home, plugins=[], plugin_settings={"audit": {"path": str(path)}})
    definition = {"steps": [{"id": "hi", "action": "workflow.log", "params": {"message": "hi"}}]}
    result = await run_workflow_once(settings, definition, extra_plugins={"audit": module})
    assert result["status"] == "completed"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [line["event_type"] for line in lines if line["workflow_id"] == result["workflow_id"]]
    assert mine[0] == "workflow_started" and "workflow_completed" in mine and "step_completed" in mine
    assert module._open == {}, "opcode_shutdown closes the file"

    group = click.Group("opcode")
    load_plugins(settings, extra_plugins={"audit": module}).pm.hook.opcode_register_commands(cli=group)
    out = CliRunner().invoke(group, ["audit", "--lines", "1"], env={"OPCODE_HOME": str(home)})
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["workflow_id"] == result["workflow_id"]


# Plugins that implement hooks beyond the register_* ones, and the check that exercises them.
LIFECYCLE_CHECKS: dict[str, Callable[[types.ModuleType, Path], Awaitable[None]]] = {"audit": check_audit}


async def test_python_and_json_blocks_run(tmp_path: Path) -> None:
    plugins = doc_plugins()
    settings = make_settings(tmp_path / "home", plugins=[])
    loaded = load_plugins(settings, extra_plugins=plugins)
    registered: set[str] = set()
    for name, module in plugins.items():
        hooks = {h.name for h in loaded.pm.get_hookcallers(module) or []}
        assert hooks, f"{plugin_blocks()[name].where}: plugin {name!r} implements no hook"
        row = loaded.row(name)
        assert row["status"] == "loaded", row
        registered |= {*row["actions"], *row["step_types"], *row["engines"]}
        if hooks - REGISTER_HOOKS:
            assert name in LIFECYCLE_CHECKS, f"no check for hooks {sorted(hooks - REGISTER_HOOKS)} of plugin {name!r}"
            await LIFECYCLE_CHECKS[name](import_block(name, plugin_blocks()[name]), tmp_path)
    assert registered, "the page's plugins register nothing"

    engines = set(loaded.registry.engines)
    used: set[str] = set()
    kinds: list[str] = []
    previous: dict[str, Any] | None = None
    async with start_runtime(settings, plugins) as rt:
        for block in of("json"):
            doc = json.loads(block.text)
            assert isinstance(doc, dict), f"{block.where}: a json block is an object"
            if "resource" in doc:
                kinds.append("query")
                Draft202012Validator(TOOLS["opcode.query"]["input_schema"]).validate(doc)
                answer = await service.query(rt, resource=doc["resource"], filter=doc.get("filter"))
                assert answer[doc["resource"]], f"{block.where}: the query finds nothing"
            elif "status" in doc:
                kinds.append("result")
                assert previous is not None, f"{block.where}: an answer must follow the workflow it answers"
                assert is_subset(doc, previous), f"{block.where}: the page says {doc}, the run answered {previous}"
                previous = None
            elif "steps" in doc:
                kinds.append("workflow")
                previous = await run_in(rt, doc)
                assert previous["status"] == "completed", f"{block.where}: {previous}"
                used |= used_names(doc, engines)
            elif set(doc) <= {*ENV_VARS, "plugins"} and "plugins" in doc:
                kinds.append("settings")
                home = tmp_path / f"settings-{block.line}"
                home.mkdir()
                (home / "settings.json").write_text(block.text)
                # The real loader, then the plugins built with these settings: unknown names stop start-up.
                configured = load_settings({"OPCODE_HOME": str(home), "OPCODE_LOAD_PLUGINS": ""})
                load_plugins(configured, extra_plugins=doc_plugins())
            else:
                pytest.fail(f"{block.where}: a json block this test does not know how to check: {sorted(doc)}")
    assert {"query", "workflow", "result", "settings"} <= set(kinds)
    unused = registered - used
    assert not unused, f"no workflow on the page uses {sorted(unused)}"


# --- toml and text: the template's output, as the page shows it ---------------------------------------------


@pytest.fixture(scope="module")
def tutorial_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template rendered with the tutorial's answers."""
    out = tmp_path_factory.mktemp("tutorial")
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(out), extra_context=TUTORIAL))


def test_toml_blocks_declare_the_page_plugins_as_the_template_does(tutorial_project: Path) -> None:
    blocks = of("toml")
    assert blocks
    rendered = tomllib.loads((tutorial_project / "pyproject.toml").read_text())
    modules = {f"opcode_{name}" for name in plugin_blocks()}
    for block in blocks:
        doc = tomllib.loads(block.text)
        entry_points = doc["project"]["entry-points"]["opcode"]
        for name, value in entry_points.items():
            assert value in modules and value == f"opcode_{name}", f"{block.where}: {name} = {value!r}"
        for requirement in map(Requirement, doc["project"].get("dependencies", [])):
            if requirement.name == "opcode":
                assert requirement.specifier.contains(opcode_core.__version__)
        assert is_subset(doc, rendered), f"{block.where}: the template's pyproject.toml says otherwise"


def test_text_block_is_the_tree_the_template_generates(tutorial_project: Path) -> None:
    (block,) = of("text")
    shown = {line.split("#")[0].strip() for line in block.text.splitlines() if line.strip()}
    generated = {p.relative_to(tutorial_project.parent).as_posix()
                 for p in tutorial_project.rglob("*") if p.is_file()}
    assert shown == generated


# --- python test modules: run by pytest against the page's plugin -------------------------------------------


def install_into(site: Path, name: str, source: str | None = None) -> None:
    """Make plugin `name` an installed distribution on `site`: its module (unless already on the path)
    and a dist-info with its `opcode` entry point, as pip would leave them."""
    site.mkdir(parents=True, exist_ok=True)
    if source is not None:
        package = site / f"opcode_{name}"
        package.mkdir()
        (package / "__init__.py").write_text(source)
    info = site / f"opcode_{name}-0.1.dist-info"
    info.mkdir()
    dist = f"opcode-{name.replace('_', '-')}"
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[opcode]\n{name} = opcode_{name}\n")


def sandbox_env(tmp: Path, pythonpath: list[Path], **extra: str) -> dict[str, str]:
    """An environment for opcode and pytest subprocesses: no OPCODE_* of ours, caches in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPCODE_", "PYTEST_"))}
    env.update({"OPCODE_HOME": str(tmp / "opcode-home"), "XDG_CACHE_HOME": str(tmp / "cache"),
                "PYTHONPATH": ":".join(map(str, pythonpath))})
    # A checkout installed before opcode had its pytest11 entry point: name the fixtures' module instead.
    if not importlib.metadata.entry_points(group="pytest11", name="opcode"):
        env["PYTEST_PLUGINS"] = "opcode_core.testing"
    env.update(extra)
    return env


def pytest_passed(proc: subprocess.CompletedProcess[str]) -> int:
    """How many tests a pytest run passed; the run must have passed as a whole."""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    found = re.search(r"(\d+) passed", proc.stdout.strip().splitlines()[-1])
    assert found, proc.stdout
    return int(found.group(1))


def test_python_test_modules_pass_against_the_page_plugin(tmp_path: Path) -> None:
    tests = [b for b in of("python") if b.path.startswith("tests/")]
    assert tests
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text(of("toml")[0].text)
    for name, block in plugin_blocks().items():
        install_into(tmp_path / "site", name, source=block.text)
    for block in tests:
        (project / block.path).write_text(block.text)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                          env=sandbox_env(tmp_path, [tmp_path / "site"]), capture_output=True, text=True,
                          timeout=300)
    expected = sum(len(re.findall(r"^(?:async )?def test_", b.text, re.M)) for b in tests)
    assert pytest_passed(proc) == expected


# --- sh: the page's commands, in a sandbox -----------------------------------------------------------------


@dataclass
class Sandbox:
    """Where the page's shell commands run: a cwd, a site dir standing in for the environment, a home."""

    root: Path
    cwd: Path
    pythonpath: list[Path] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for one command."""
        return sandbox_env(self.root, [self.root / "site", *self.pythonpath], **extra)

    def run(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Run a command in the sandbox; it must succeed."""
        proc = subprocess.run(args, cwd=self.cwd, env=self.env(**env), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{args}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        return proc


def sh_pip(box: Sandbox, args: list[str], env: dict[str, str]) -> None:
    """`pip install NAME` must name a package present here; `pip install -e '.[extra]'` a real project."""
    assert args[:1] == ["install"], args
    for arg in args[1:]:
        if arg == "-e":
            continue
        spec = re.fullmatch(r"(\.|[\w./-]+)(?:\[([\w,]+)\])?", arg)
        assert spec, arg
        target = box.cwd / spec.group(1)
        if spec.group(1) == "." or target.is_dir():
            pyproject = tomllib.loads((target / "pyproject.toml").read_text())["project"]
            for extra in (spec.group(2) or "").split(","):
                assert not extra or extra in pyproject["optional-dependencies"], f"no extra {extra!r}"
            (name,) = pyproject["entry-points"]["opcode"]
            install_into(box.root / "site", name)
            box.pythonpath.append(target)
            box.installed.append(name)
        else:
            importlib.metadata.version(spec.group(1))  # installed here, so the index has it


def sh_cookiecutter(box: Sandbox, args: list[str], env: dict[str, str]) -> None:
    """Render the template the page names with the tutorial's answers."""
    (template,) = args
    assert (ROOT / template / "cookiecutter.json").exists(), template
    cookiecutter(str(ROOT / template), no_input=True, output_dir=str(box.cwd), extra_context=TUTORIAL)


def sh_cd(box: Sandbox, args: list[str], env: dict[str, str]) -> None:
    """Change into a directory an earlier command made."""
    (target,) = args
    assert (box.cwd / target).is_dir(), target
    box.cwd = box.cwd / target


def sh_opcode(box: Sandbox, args: list[str], env: dict[str, str]) -> None:
    """`opcode plugins` runs for real (an installed plugin must load unless the env turns it off); other
    commands must exist (`--help`), since they start servers or need a running one."""
    if args[:1] == ["plugins"]:
        rows = {row["name"]: row for row in json.loads(box.run([OPCODE, *args], env).stdout)["plugins"]}
        off = env.get("OPCODE_LOAD_PLUGINS") == ""
        for name in box.installed:
            assert rows[name]["status"] == ("disabled" if off else "loaded"), rows[name]
    else:
        box.run([OPCODE, *args[:1], "--help"], env)


def sh_pytest(box: Sandbox, args: list[str], env: dict[str, str]) -> None:
    """Run the project's tests for real."""
    assert pytest_passed(box.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], env)) >= 2


SH_COMMANDS: dict[str, Callable[[Sandbox, list[str], dict[str, str]], None]] = {
    "pip": sh_pip, "cookiecutter": sh_cookiecutter, "cd": sh_cd, "opcode": sh_opcode, "pytest": sh_pytest,
}


def test_sh_blocks_run_in_page_order(tmp_path: Path) -> None:
    box = Sandbox(tmp_path, tmp_path / "work")
    box.cwd.mkdir()
    ran = 0
    for block in of("sh"):
        for line in block.text.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            env = {}
            while "=" in words[0] and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                key, _, value = words.pop(0).partition("=")
                assert key in KNOWN_ENV, f"{block.where}: unknown variable {key}"
                env[key] = value
            handler = SH_COMMANDS.get(words[0])
            assert handler is not None, f"{block.where}: no check for the command {words[0]!r}; add one here"
            handler(box, words[1:], env)
            ran += 1
    assert ran and box.installed == ["acme_text"]

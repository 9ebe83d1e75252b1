"""The docs stay honest: every hook documented with its signature, every example valid."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from opcode_core import hookspecs
from opcode_server.tool_schemas import TOOLS
from tests.conftest import OPCODE, opcode_env

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def hook_names() -> list[str]:
    return [name for name, fn in vars(hookspecs).items() if name.startswith("opcode_") and callable(fn)]


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_documented_with_its_signature(name: str) -> None:
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"## {name}({params})" in (DOCS / "hooks.md").read_text()


def json_blocks(path: Path) -> list[object]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", path.read_text(), re.S)]


def test_mcp_doc_examples_match_the_tool_schemas() -> None:
    blocks = json_blocks(DOCS / "mcp.md")
    by_tool = {"actions": "opcode.query", "definition": "opcode.define", "template_name": "opcode.run"}
    checked = 0
    for block in blocks:
        tool = next((t for key, t in by_tool.items() if key in json.dumps(block)), None)
        if tool is None or not isinstance(block, dict) or ("resource" not in block and tool == "opcode.query"):
            continue
        Draft202012Validator(TOOLS[tool]["input_schema"]).validate(block)
        checked += 1
    assert checked == 3


def run_file(home: Path, path: Path, *params: str) -> dict:
    proc = subprocess.run([OPCODE, "run", str(path), "-q", *params], env=opcode_env(home),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def test_readme_example_runs(tmp_path: Path) -> None:
    result = run_file(tmp_path, ROOT / "examples" / "hello.json", "--param", "who=world")
    assert result["status"] == "completed"
    import hashlib

    digest = hashlib.sha256(b"hello world").hexdigest()
    assert result["steps"]["digest"]["output"]["hash"] == digest
    assert digest in result["output"]["message"]


def test_mcp_doc_definition_runs(tmp_path: Path) -> None:
    define = next(b for b in json_blocks(DOCS / "mcp.md") if isinstance(b, dict) and "definition" in b)
    path = tmp_path / "greet.json"
    path.write_text(json.dumps({"name": define["name"], "definition": define["definition"]}))
    result = run_file(tmp_path, path, "--param", "who=ada")
    assert result["status"] == "completed"
    assert result["output"]["message"].startswith("hash of ada is ")

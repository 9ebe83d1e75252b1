"""Diagrams: golden ascii and mermaid of every step type, PNG sanity, the upstream corpus, MCP and the CLI."""

from __future__ import annotations

import base64
import difflib
import io
import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from opcode_core import service
from opcode_core.diagrams import build_diagram, layout_diagram, layout_workflow, render, render_ascii, render_mermaid
from opcode_core.diagrams.styles import STATUS_STYLES
from opcode_core.errors import OpcodeError
from tests.conftest import OPCODE, opcode_env

GOLDEN = Path(__file__).parent / "golden" / "diagrams"
EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "upstream-examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []

ALL_TYPES: dict[str, Any] = {
    "steps": [
        {"id": "start", "action": "workflow.log", "params": {"message": "go"}},
        {
            "id": "route",
            "type": "condition",
            "depends_on": ["start"],
            "config": {
                "expression": "inputs.mode",
                "branches": {
                    "fast": [{"id": "quick", "action": "workflow.log", "params": {"message": "fast"}}],
                    "slow": [
                        {"id": "a", "action": "workflow.log", "params": {"message": "a"}},
                        {"id": "b", "action": "workflow.log", "depends_on": ["a"], "params": {"message": "b"}},
                    ],
                },
                "default": [{"id": "fallback", "action": "workflow.log", "params": {"message": "default"}}],
            },
        },
        {
            "id": "each",
            "type": "loop",
            "depends_on": ["start"],
            "config": {
                "mode": "for_each",
                "over": "[1, 2]",
                "body": [{"id": "item", "action": "workflow.log", "params": {"message": "item ${{loop.item}}"}}],
            },
        },
        {
            "id": "fan",
            "type": "parallel",
            "depends_on": ["route", "each"],
            "config": {
                "branches": [
                    [{"id": "left", "action": "crypto.uuid"}],
                    [{"id": "right", "action": "crypto.hash", "params": {"data": "x"}}],
                ]
            },
        },
        {"id": "pause", "type": "wait", "depends_on": ["fan"], "config": {"duration": "10ms"}},
        {
            "id": "guarded",
            "action": "workflow.log",
            "depends_on": ["start"],
            "condition": "false",
            "params": {"message": "never"},
        },
        {
            "id": "approve",
            "type": "reasoning",
            "depends_on": ["pause", "guarded"],
            "config": {"prompt_context": "Ship it?", "options": [{"id": "yes"}, {"id": "no"}]},
        },
        {"id": "finish", "action": "workflow.log", "depends_on": ["approve"], "params": {"message": "done"}},
    ]
}
SUFFIX = {"ascii": "txt", "mermaid": "mmd"}


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/diagrams/<name>; OPCODE_UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("OPCODE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run the tests once with OPCODE_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "golden", "now"))
    assert text == expected, f"{name} differs from its golden file:\n{diff}"


async def define_all_types(rt: Any) -> None:
    await service.define_template(rt, name="all-types", definition=ALL_TYPES, agent_id="tester")


async def suspended_run(rt: Any) -> dict[str, Any]:
    """Run all-types until its reasoning step suspends it; return `opcode.status`."""
    await define_all_types(rt)
    run = await service.run_workflow(rt, template_name="all-types", agent_id="tester", params={"mode": "slow"})
    assert run["status"] == "suspended", run
    return await service.workflow_status(rt, workflow_id=run["workflow_id"])


def png_of(result: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(result["diagram"])))
    image.load()
    return image


# --- golden output ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ascii", "mermaid"])
async def test_structure_of_every_step_type_matches_golden(runtime: Any, fmt: str) -> None:
    await define_all_types(runtime)
    result = await service.render_diagram(runtime, template_name="all-types", format=fmt)
    assert result["format"] == fmt
    check_golden(f"all_types.structure.{SUFFIX[fmt]}", result["diagram"])


@pytest.mark.parametrize("fmt", ["ascii", "mermaid"])
async def test_statuses_of_a_real_run_match_golden(runtime: Any, fmt: str) -> None:
    status = await suspended_run(runtime)
    # Durations change from run to run and would change box widths: the golden keeps statuses only.
    states = {sid: {"status": s["status"]} for sid, s in status["steps"].items()}
    diagram = build_diagram(ALL_TYPES, runtime.registry.step_types, states=states,
                            title="all-types v1 · run <id> · suspended", status="suspended")
    text = render_ascii(layout_diagram(diagram)) if fmt == "ascii" else render_mermaid(diagram)
    check_golden(f"all_types.run.{SUFFIX[fmt]}", text)


# --- statuses ------------------------------------------------------------------------------------------------


async def test_a_run_is_drawn_with_its_statuses_and_iteration_ids(runtime: Any) -> None:
    status = await suspended_run(runtime)
    wid = status["workflow_id"]
    ascii_out = (await service.render_diagram(runtime, workflow_id=wid, format="ascii"))["diagram"]
    assert ascii_out.startswith(f"all-types v1 · run {wid} · suspended\n")
    for tag in ("[OK]", "[WAIT]", "[PEND]", "[SKIP]"):
        assert tag in ascii_out
    assert "iter_0" in ascii_out and "iter_1" in ascii_out
    assert "fast (not run)" in ascii_out and "slow (not run)" not in ascii_out
    layout = layout_workflow(ALL_TYPES, runtime.registry.step_types,
                             states={sid: s for sid, s in status["steps"].items()})
    ids = {n["id"]: n for n in layout["nodes"]}
    assert {"each.iter_0.item", "each.iter_1.item", "route.slow.b", "fan.branch_1.right"} <= set(ids)
    assert "each.body.item" not in ids
    assert ids["approve"]["tag"] == "WAIT" and ids["guarded"]["tag"] == "SKIP" and ids["finish"]["tag"] == "PEND"
    mermaid = (await service.render_diagram(runtime, workflow_id=wid, format="mermaid"))["diagram"]
    assert "classDef suspended fill:#ffe0b2" in mermaid
    assert "    class approve suspended\n" in mermaid


async def test_include_status_false_draws_the_structure_of_a_run(runtime: Any) -> None:
    status = await suspended_run(runtime)
    out = await service.render_diagram(runtime, workflow_id=status["workflow_id"], format="ascii",
                                       include_status=False)
    assert "[OK]" not in out["diagram"] and "[PEND]" not in out["diagram"]
    assert "iter_0" not in out["diagram"] and "╎ iter " in out["diagram"]


def test_every_step_status_has_its_tag_and_class(runtime_registry: Any) -> None:
    steps = [{"id": name, "action": "workflow.log", "params": {"message": "x"}}
             for name in ("a", "b", "c", "d", "e", "f", "g", "h", "i")]
    states = {"a": "completed", "b": "failed", "c": "running", "d": "suspended", "e": "pending", "f": "scheduled",
              "g": "skipped", "h": "retrying"}
    diagram = build_diagram({"steps": steps}, runtime_registry.step_types,
                            states={k: {"status": v} for k, v in states.items()})
    nodes = {n["id"]: n for n in layout_diagram(diagram)["nodes"]}
    assert {k: nodes[k]["tag"] for k in nodes} == {
        "a": "OK", "b": "FAIL", "c": "RUN", "d": "WAIT", "e": "PEND", "f": "PEND", "g": "SKIP", "h": "RETRY",
        "i": "PEND",  # no state at all: not started
    }
    text = render_ascii(layout_diagram(diagram))
    for tag in ("[OK]", "[FAIL]", "[RUN]", "[WAIT]", "[PEND]", "[SKIP]", "[RETRY]"):
        assert tag in text
    mermaid = render_mermaid(diagram)
    for style in STATUS_STYLES.values():
        assert f"classDef {style.css} fill:{style.fill}" in mermaid
    assert "    class e,f,i pending\n" in mermaid


def test_many_iterations_show_the_first_and_the_last(runtime_registry: Any) -> None:
    loop = {"id": "each", "type": "loop", "config": {"over": "[]", "body": [{"id": "x", "action": "crypto.uuid"}]}}
    states = {"each": {"status": "completed"}} | {f"each.iter_{i}.x": {"status": "completed"} for i in range(20)}
    layout = layout_workflow({"steps": [loop]}, runtime_registry.step_types, states=states)
    assert [g["label"] for g in layout["groups"]] == ["iter_0", "iter_1", "iter_2", "iter_3", "… 15 more", "iter_19"]
    assert [n["id"] for n in layout["nodes"]][-1] == "each.iter_19.x"


# --- layout data -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The built-in registry, without a store: diagrams need only the step types."""
    from opcode_core.runtime import load_registry
    from opcode_core.settings import load_settings

    home = tmp_path_factory.mktemp("registry-home")
    return load_registry(load_settings({"OPCODE_HOME": str(home), "OPCODE_LOAD_PLUGINS": ""}))[2]


def inside(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
    return (outer["x"] <= inner["x"] and inner["x"] + inner["w"] <= outer["x"] + outer["w"]
            and outer["y"] <= inner["y"] and inner["y"] + inner["h"] <= outer["y"] + outer["h"])


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def test_layout_is_plain_deterministic_data_with_boxes_groups_and_orthogonal_edges(runtime_registry: Any) -> None:
    layout = layout_workflow(ALL_TYPES, runtime_registry.step_types, title="t")
    assert json.loads(json.dumps(layout)) == layout
    assert layout == layout_workflow(ALL_TYPES, runtime_registry.step_types, title="t")
    nodes = {n["id"]: n for n in layout["nodes"]}
    groups = {g["id"]: g for g in layout["groups"]}
    assert {n["shape"] for n in nodes.values()} == {"box", "diamond", "stadium", "parallelogram", "round", "double"}
    assert set(groups) == {"route.fast", "route.slow", "route.default", "each.body", "fan.branch_0", "fan.branch_1"}
    assert groups["each.body"]["label"] == "iter"
    for a in nodes.values():
        assert a["x"] >= 0 and a["x"] + a["w"] <= layout["width"] and a["y"] + a["h"] <= layout["height"]
        for b in nodes.values():
            assert a is b or not overlap(a, b), (a["id"], b["id"])
        if a["group"]:
            assert inside(a, groups[a["group"]]), a["id"]
    for g in groups.values():
        parent = nodes[g["parent"]]
        assert g["y"] > parent["y"] + parent["h"] - 1
    # Ranks run top to bottom.
    assert nodes["start"]["y"] < nodes["route"]["y"] < nodes["fan"]["y"] < nodes["pause"]["y"] < nodes["approve"]["y"]
    for edge in layout["edges"]:
        points = edge["points"]
        assert len(points) >= 2
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            assert x0 == x1 or y0 == y1, edge
        if edge["kind"] == "depends":
            source, target = nodes[edge["source"]], nodes[edge["target"]]
            assert target["x"] < points[-1][0] < target["x"] + target["w"] and points[-1][1] == target["y"]
            assert source["x"] < points[0][0] < source["x"] + source["w"] and points[0][1] >= source["y"] + source["h"]
    depends = {(e["source"], e["target"]) for e in layout["edges"] if e["kind"] == "depends"}
    assert ("route.slow.a", "route.slow.b") in depends and ("guarded", "approve") in depends


# --- PNG ---------------------------------------------------------------------------------------------------


async def test_png_of_a_run_is_a_real_image_with_status_colours(runtime: Any) -> None:
    status = await suspended_run(runtime)
    result = await service.render_diagram(runtime, workflow_id=status["workflow_id"], format="image")
    image = png_of(result)
    assert image.format == "PNG" and image.size == (result["width"], result["height"])
    assert 200 <= image.width <= 4000 and 200 <= image.height <= 4000
    colours = {rgb for _, rgb in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert len(colours) > 10
    for status_name in ("completed", "suspended", "pending"):
        fill = STATUS_STYLES[status_name].fill
        assert tuple(int(fill[i:i + 2], 16) for i in (1, 3, 5)) in colours, status_name


def test_png_is_deterministic(runtime_registry: Any) -> None:
    diagram = build_diagram(ALL_TYPES, runtime_registry.step_types, title="all-types v1")
    assert render(diagram, "image") == render(diagram, "image")
    assert render(diagram, "ascii") == render(diagram, "ascii")


# --- the upstream corpus -----------------------------------------------------------------------------------


@pytest.mark.skipif(not EXAMPLE_FILES, reason=f"{EXAMPLES} is absent: the example corpus lives outside the repo")
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_upstream_example_renders_in_every_format(runtime_registry: Any, path: Path) -> None:
    definition = json.loads(path.read_text())["definition"]
    diagram = build_diagram(definition, runtime_registry.step_types, title=path.stem)
    text = render(diagram, "ascii")["diagram"]
    for step in definition["steps"]:
        assert step["id"] in text, step["id"]
    assert ("┌" in text and "▼" in text) or len(definition["steps"]) == 1
    mermaid = render(diagram, "mermaid")["diagram"]
    assert "flowchart TD\n" in mermaid
    image = png_of(render(diagram, "image"))
    assert 200 <= image.width <= 4000 and 200 <= image.height <= 4000


@pytest.mark.skipif(not (EXAMPLES / "deploy-gate.json").exists(), reason=f"{EXAMPLES} is absent")
async def test_deploy_gate_through_the_service(runtime: Any) -> None:
    doc = json.loads((EXAMPLES / "deploy-gate.json").read_text())
    await service.define_template(runtime, name="deploy-gate", definition=doc["definition"], agent_id="tester")
    text = (await service.render_diagram(runtime, template_name="deploy-gate", format="ascii"))["diagram"]
    assert text.startswith("deploy-gate v1\n")
    assert "◆ check-tests" in text and "⚑ approve-deploy" in text and "╎ false" in text
    assert text.index("run-tests") < text.index("check-tests") < text.index("approve-deploy") < text.index("▸ deploy")


# --- service arguments ---------------------------------------------------------------------------------------


async def test_arguments_are_checked(runtime: Any) -> None:
    await define_all_types(runtime)
    bad = [
        ({"format": "ascii"}, "VALIDATION_ERROR"),
        ({"format": "ascii", "template_name": "all-types", "workflow_id": "w"}, "VALIDATION_ERROR"),
        ({"format": "ascii", "workflow_id": "w", "version": "v1"}, "VALIDATION_ERROR"),
        ({"format": "svg", "template_name": "all-types"}, "VALIDATION_ERROR"),
        ({"format": "ascii", "template_name": "nope"}, "NOT_FOUND"),
        ({"format": "ascii", "template_name": "all-types", "version": "v9"}, "NOT_FOUND"),
        ({"format": "ascii", "workflow_id": "nope"}, "NOT_FOUND"),
    ]
    for arguments, code in bad:
        with pytest.raises(OpcodeError) as info:
            await service.render_diagram(runtime, **arguments)
        assert info.value.code == code, arguments
    ok = await service.render_diagram(runtime, template_name="all-types", version="v1", format="mermaid")
    assert ok["diagram"].startswith('---\ntitle: "all-types v1"\n---\nflowchart TD\n')


# --- MCP and CLI ---------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_mcp_tool_returns_json_text_and_image_content(server: Any) -> None:
    from tests.test_mcp_e2e import call, call_error, connect

    async with connect(server, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "diagram-e2e", "definition": ALL_TYPES, "agent_id": "e2e"})
        result = await session.call_tool("opcode.diagram", {"template_name": "diagram-e2e", "format": "image"})
        assert not result.is_error
        text, image = result.content
        assert text.type == "text" and json.loads(text.text)["format"] == "image"
        assert image.type == "image" and image.mime_type == "image/png"
        assert image.data == result.structured_content["diagram"]
        assert Image.open(io.BytesIO(base64.b64decode(image.data))).format == "PNG"
        ascii_out = await call(session, "opcode.diagram", {"template_name": "diagram-e2e", "format": "ascii"})
        plain = await session.call_tool("opcode.diagram", {"template_name": "diagram-e2e", "format": "mermaid"})
        assert "▸ start" in ascii_out["diagram"] and [c.type for c in plain.content] == ["text"]
        both = await call_error(session, "opcode.diagram",
                                {"template_name": "diagram-e2e", "workflow_id": "x", "format": "ascii"})
        assert both.startswith("[VALIDATION_ERROR]")
        assert (await call_error(session, "opcode.diagram", {"workflow_id": "nope", "format": "ascii"})).startswith(
            "[NOT_FOUND]")


@pytest.mark.slow
def test_cli_draws_templates_and_runs_from_the_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps({"steps": [
        {"id": "hello", "action": "workflow.log", "params": {"message": "hi"}},
        {"id": "bye", "action": "workflow.log", "depends_on": ["hello"], "params": {"message": "bye"}},
    ]}))
    env = opcode_env(home)

    def opcode(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([OPCODE, *args], env=env, capture_output=True, text=True, timeout=60)

    assert opcode("define", str(flow), "--name", "flow").returncode == 0
    drawn = opcode("diagram", "--template", "flow", "--format", "ascii")
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("flow v1\n")
    assert "▸ hello" in drawn.stdout and "▸ bye" in drawn.stdout and "▼" in drawn.stdout and "┌" in drawn.stdout
    ran = opcode("run", str(flow), "-q")
    assert ran.returncode == 0, ran.stderr
    workflow_id = json.loads(ran.stdout)["workflow_id"]
    status = opcode("diagram", "--workflow", workflow_id)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("[OK]") == 3  # two steps and the legend's count
    png = tmp_path / "flow.png"
    assert opcode("diagram", "--workflow", workflow_id, "--format", "image", "--output", str(png)).returncode == 0
    assert Image.open(png).format == "PNG"
    missing = opcode("diagram", "--template", "nope")
    assert missing.returncode == 1 and "[NOT_FOUND]" in missing.stderr
    assert opcode("diagram").returncode == 2

"""Run-level behaviour: idempotent starts, child runs, params checked after interpolation, output rules."""

from __future__ import annotations

import pytest

from opcode_core import service
from opcode_core.errors import OpcodeError
from tests.conftest import log, run_definition


async def test_idempotency_key_returns_the_first_run(runtime) -> None:
    await service.define_template(runtime, name="once", definition={"steps": [{"id": "u", "action": "crypto.uuid"}]},
                                  agent_id="a")
    first = await service.run_workflow(runtime, template_name="once", agent_id="a", idempotency_key="k-1")
    again = await service.run_workflow(runtime, template_name="once", agent_id="a", idempotency_key="k-1")
    assert again["workflow_id"] == first["workflow_id"] and again["status"] == "completed"
    assert again["steps"]["u"]["output"] == first["steps"]["u"]["output"]
    other = await service.run_workflow(runtime, template_name="once", agent_id="a", idempotency_key="k-2")
    assert other["workflow_id"] != first["workflow_id"]
    runs = await service.query(runtime, resource="workflows", filter={"agent_id": "a"})
    assert len(runs["workflows"]) == 2


async def test_workflow_run_links_parent_and_child(runtime) -> None:
    await service.define_template(runtime, name="child", agent_id="a", definition={
        "steps": [log("greet", "hello ${{inputs.who}}")], "output": {"said": "${{steps.greet.output.message}}"}})
    parent = await run_definition(runtime, {"steps": [
        {"id": "call", "action": "workflow.run", "params": {"template_name": "child", "params": {"who": "kid"}}}]})
    assert parent["status"] == "completed", parent
    assert parent["steps"]["call"]["output"]["said"] == "hello kid"
    runs = (await service.query(runtime, resource="workflows", filter={"limit": 10}))["workflows"]
    child = next(r for r in runs if r["template_name"] == "child")
    assert child["parent_workflow_id"] == parent["workflow_id"]
    status = await service.workflow_status(runtime, workflow_id=child["workflow_id"])
    assert status["workflow"]["parent_workflow_id"] == parent["workflow_id"]


async def test_a_template_that_runs_itself_is_stopped(runtime) -> None:
    await service.define_template(runtime, name="forever", agent_id="a", definition={
        "steps": [{"id": "again", "action": "workflow.run", "params": {"template_name": "forever"}}]})
    result = await service.run_workflow(runtime, template_name="forever", agent_id="a")
    assert result["status"] == "failed"
    assert "nests deeper" in str(result["error"])


async def test_params_are_checked_after_interpolation(runtime) -> None:
    definition = {"steps": [
        {"id": "n", "action": "shell.exec", "params": {"command": "echo", "args": ["5"]}},
        {"id": "bad", "action": "crypto.uuid", "depends_on": ["n"], "params": {"version": "${{inputs.v}}"}},
    ]}
    result = await run_definition(runtime, definition, {"v": "four"})
    assert result["status"] == "failed"
    assert result["error"]["code"] == "VALIDATION_ERROR" and result["error"]["step_id"] == "bad"
    assert "params.version" in result["error"]["message"]


async def test_input_and_output_schemas(runtime) -> None:
    await service.define_template(
        runtime, name="typed", agent_id="a",
        definition={"steps": [log("s", "${{inputs.name}}")], "output": {"n": "${{inputs.count}}"}},
        input_schema={"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        output_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    with pytest.raises(OpcodeError) as info:
        await service.run_workflow(runtime, template_name="typed", agent_id="a", params={"name": 3})
    assert info.value.code == "VALIDATION_ERROR" and "params.name" in info.value.message
    ok = await service.run_workflow(runtime, template_name="typed", agent_id="a", params={"name": "x", "count": 2})
    assert ok["status"] == "completed" and ok["output"] == {"n": 2}
    bad = await service.run_workflow(runtime, template_name="typed", agent_id="a", params={"name": "x", "count": "2"})
    assert bad["status"] == "failed" and "output_schema" in bad["error"]["message"]


async def test_output_of_several_terminal_steps(runtime) -> None:
    result = await run_definition(runtime, {"steps": [log("a", "A"), log("b", "B")]})
    assert result["output"] == {"a": {"logged": True, "level": "info", "message": "A"},
                                "b": {"logged": True, "level": "info", "message": "B"}}

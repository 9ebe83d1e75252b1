"""The condition step type, through real runs."""

from __future__ import annotations

import pytest

from opcode_core import service
from tests.conftest import log, run_definition


def routed(expression: str, default: bool = True) -> dict:
    config = {
        "expression": expression,
        "branches": {
            "prod": [
                log("deploy", "to prod"),
                log("notify", "${{steps.deploy.output.message}}!", depends_on=["deploy"]),
            ],
            "true": [log("yes", "it was true")],
            "false": [log("no", "it was false")],
            "3": [log("three", "number three")],
        },
    }
    if default:
        config["default"] = [log("fallback", "default branch for ${{inputs.env}}")]
    return {
        "steps": [
            {"id": "route", "type": "condition", "config": config},
            log("after", "branch ${{steps.route.output.branch}}", depends_on=["route"]),
        ]
    }


async def test_string_valued_expression_picks_its_branch_and_nested_ids(runtime) -> None:
    result = await run_definition(runtime, routed("inputs.env"), {"env": "prod"})
    assert result["status"] == "completed", result
    assert result["steps"]["route"]["output"] == {
        "branch": "prod",
        "output": {"logged": True, "level": "info", "message": "to prod!"},
    }
    assert result["steps"]["route.prod.deploy"]["status"] == "completed"
    assert result["steps"]["route.prod.notify"]["output"]["message"] == "to prod!"
    assert result["steps"]["after"]["output"]["message"] == "branch prod"
    events = await service.query(
        runtime, resource="events", filter={"workflow_id": result["workflow_id"], "event_type": "condition_evaluated"}
    )
    assert events["events"][0]["payload"] == {"expression": "inputs.env", "result": "prod"}


@pytest.mark.parametrize(
    "expression,branch,step",
    [
        ("inputs.n > 2", "true", "yes"),
        ("inputs.n > 5", "false", "no"),
        ("inputs.n", "3", "three"),
    ],
)
async def test_boolean_and_number_values_become_branch_keys(runtime, expression: str, branch: str, step: str) -> None:
    result = await run_definition(runtime, routed(expression), {"n": 3, "env": "x"})
    assert result["steps"]["route"]["output"]["branch"] == branch
    assert result["steps"][f"route.{branch}.{step}"]["status"] == "completed"


async def test_default_branch_and_no_match(runtime) -> None:
    result = await run_definition(runtime, routed("inputs.env"), {"env": "staging"})
    assert result["steps"]["route"]["output"]["branch"] == "default"
    assert result["steps"]["route.default.fallback"]["output"]["message"] == "default branch for staging"
    bare = await run_definition(runtime, routed("inputs.env", default=False), {"env": "staging"})
    assert bare["status"] == "completed"
    assert bare["steps"]["route"]["output"] == {"branch": "staging", "skipped": True}


async def test_step_guard_false_skips_and_dependants_still_run(runtime) -> None:
    definition = {
        "steps": [
            log("maybe", "ran", condition="inputs.go == true"),
            log("next", "${{steps.maybe.status}}", depends_on=["maybe"]),
        ]
    }
    result = await run_definition(runtime, definition, {"go": False})
    assert result["steps"]["maybe"]["status"] == "skipped"
    assert result["steps"]["next"]["output"]["message"] == "skipped"
    ran = await run_definition(runtime, definition, {"go": True})
    assert ran["steps"]["maybe"]["status"] == "completed"


async def test_reading_a_skipped_steps_output_is_an_interpolation_error(runtime) -> None:
    definition = {
        "steps": [
            log("maybe", "ran", condition="false"),
            log("reader", "${{steps.maybe.output.message}}", depends_on=["maybe"]),
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "failed"
    assert result["error"]["code"] == "INTERPOLATION_ERROR" and "skipped" in result["error"]["message"]


async def test_a_failing_branch_step_fails_the_condition_and_the_run(runtime) -> None:
    definition = {
        "steps": [
            {
                "id": "route",
                "type": "condition",
                "config": {
                    "expression": "true",
                    "branches": {"true": [{"id": "boom", "action": "workflow.fail", "params": {"reason": "no"}}]},
                },
            }
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "failed"
    assert result["error"]["step_id"] == "route.true.boom"
    assert result["steps"]["route"]["status"] == "failed"


async def test_expression_error_names_step_and_expression(runtime) -> None:
    definition = {
        "steps": [
            {"id": "route", "type": "condition", "config": {"expression": "inputs.missing.deeper == 1", "branches": {}}}
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "failed"
    assert result["error"]["step_id"] == "route"
    assert "inputs.missing.deeper == 1" in result["error"]["message"]

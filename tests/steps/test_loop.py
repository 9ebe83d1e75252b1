"""The loop step type: for_each over a literal, jq, a step's output; while/until; max_iter."""

from __future__ import annotations

from tests.conftest import log, run_definition


def loop(config: dict, *after: dict) -> dict:
    return {"steps": [{"id": "each", "type": "loop", "config": config}, *after]}


BODY = [
    {"id": "h", "action": "crypto.hash", "params": {"data": "${{loop.item}}"}},
    log("say", "#${{loop.index}} ${{loop.item}} ${{steps.h.output.hash}}", depends_on=["h"]),
]


async def test_for_each_over_a_json_literal_runs_each_iteration_with_local_ids(runtime) -> None:
    result = await run_definition(runtime, loop({"mode": "for_each", "over": '["a", "b", "c"]', "body": BODY}))
    assert result["status"] == "completed", result
    out = result["steps"]["each"]["output"]
    assert out["iterations"] == 3
    import hashlib

    digest_b = hashlib.sha256(b"b").hexdigest()
    assert out["results"][1]["message"] == f"#1 b {digest_b}"  # the body's last step, its own iteration's hash
    assert result["steps"]["each.iter_2.h"]["output"]["hash"] == hashlib.sha256(b"c").hexdigest()


async def test_for_each_over_a_steps_output_and_over_jq(runtime) -> None:
    definition = {
        "steps": [
            {
                "id": "list",
                "action": "shell.exec",
                "params": {"command": "echo", "args": ['{"entries": [1, 2, 3, 4]}']},
            },
            {
                "id": "cel",
                "type": "loop",
                "depends_on": ["list"],
                "config": {
                    "over": "steps['list'].stdout.entries.filter(x, x % 2 == 0)",
                    "body": [log("e", "n=${{loop.item}}")],
                },
            },
            {
                "id": "jq",
                "type": "loop",
                "depends_on": ["list"],
                "config": {
                    "over": "jq: .steps.list.stdout.entries | map(. * 10)",
                    "body": [log("e", "n=${{loop.item}}")],
                },
            },
        ]
    }
    result = await run_definition(runtime, definition)
    assert result["status"] == "completed", result
    assert [r["message"] for r in result["steps"]["cel"]["output"]["results"]] == ["n=2", "n=4"]
    assert [r["message"] for r in result["steps"]["jq"]["output"]["results"]] == ["n=10", "n=20", "n=30", "n=40"]


async def test_max_iter_bounds_for_each(runtime) -> None:
    result = await run_definition(runtime, loop({"over": [1, 2, 3, 4, 5], "max_iter": 2, "body": [log("e")]}))
    assert result["steps"]["each"]["output"]["iterations"] == 2
    assert "each.iter_2.e" not in result["steps"]


async def test_while_stops_by_condition(runtime) -> None:
    result = await run_definition(runtime, loop({"mode": "while", "condition": "iter.index < 3", "body": [log("e")]}))
    assert result["steps"]["each"]["output"]["iterations"] == 3


async def test_until_checks_after_the_body_and_sees_its_outputs(runtime) -> None:
    body = [{"id": "n", "action": "shell.exec", "params": {"command": "echo", "args": ["${{loop.index}}"]}}]
    config = {"mode": "until", "condition": "steps['n'].stdout >= 2", "body": body}
    result = await run_definition(runtime, loop(config))
    assert result["status"] == "completed", result
    assert result["steps"]["each"]["output"]["iterations"] == 3


async def test_while_stops_by_max_iter(runtime) -> None:
    result = await run_definition(
        runtime, loop({"mode": "while", "condition": "true", "max_iter": 4, "body": [log("e")]})
    )
    assert result["steps"]["each"]["output"]["iterations"] == 4


async def test_over_that_is_not_a_list_fails_clearly(runtime) -> None:
    result = await run_definition(runtime, loop({"over": "inputs.n", "body": [log("e")]}), {"n": 5})
    assert result["status"] == "failed"
    assert "not a list" in result["error"]["message"] and result["error"]["step_id"] == "each"


async def test_loop_events(runtime) -> None:
    from opcode_core import service

    result = await run_definition(runtime, loop({"over": ["x", "y"], "body": [log("e")]}))
    events = await service.query(runtime, resource="events", filter={"workflow_id": result["workflow_id"]})
    kinds = [e["event_type"] for e in events["events"] if e["step_id"] == "each"]
    assert kinds.count("loop_iter_started") == 2 and kinds.count("loop_iter_completed") == 2
    assert "loop_completed" in kinds

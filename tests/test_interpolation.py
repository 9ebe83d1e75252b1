"""`${{...}}` interpolation: namespaces, deep paths, types kept, errors naming the reference."""

from __future__ import annotations

import pytest

from opcode_core.engine.fsm import StepFSM, WorkflowFSM
from opcode_core.engine.interpolation import Scope, StepResult, interpolate
from opcode_core.errors import INTERPOLATION_ERROR, INVALID_TRANSITION, VAULT_ERROR, OpcodeError


@pytest.fixture
def scope() -> Scope:
    return Scope(
        inputs={"n": 3, "user": {"tags": ["a", "b"]}},
        workflow={"run_id": "r-1", "agent_id": "bot"},
        context={"intent": "test"},
        steps={
            "fetch": StepResult("completed", {"body": {"items": [{"id": 7}, {"id": 8}]}, "ok": True}),
            "fetch.page": StepResult("completed", {"n": 2}),
            "gone": StepResult("skipped"),
        },
    )


def test_whole_reference_keeps_its_type(scope: Scope) -> None:
    assert interpolate("${{inputs.n}}", scope) == 3
    assert interpolate("${{inputs.user}}", scope) == {"tags": ["a", "b"]}
    assert interpolate("${{steps.fetch.output.ok}}", scope) is True


def test_embedded_reference_is_rendered_into_text(scope: Scope) -> None:
    assert interpolate("id=${{steps.fetch.output.body.items[1].id}} run ${{workflow.run_id}}", scope) == "id=8 run r-1"
    assert interpolate("tags: ${{inputs.user.tags}}", scope) == 'tags: ["a","b"]'


def test_nested_structures_and_longest_step_id(scope: Scope) -> None:
    out = interpolate({"a": ["${{context.intent}}", {"b": "${{steps.fetch.page.output.n}}"}], "c": 1}, scope)
    assert out == {"a": ["test", {"b": 2}], "c": 1}
    assert interpolate("${{steps.fetch.status}}", scope) == "completed"


@pytest.mark.parametrize("ref,fragment", [
    ("${{steps.nope.output}}", "unknown step 'nope'"),
    ("${{inputs.missing}}", "no field 'missing'"),
    ("${{steps.fetch.output.body.items[5]}}", "no element [5]"),
    ("${{steps.gone.output.x}}", "was skipped"),
    ("${{loop.item}}", "only inside a loop"),
    ("${{weird.x}}", "unknown namespace"),
])
def test_unknown_reference_is_an_interpolation_error_naming_it(scope: Scope, ref: str, fragment: str) -> None:
    with pytest.raises(OpcodeError) as info:
        interpolate({"p": ref}, scope)
    assert info.value.code == INTERPOLATION_ERROR
    assert ref in info.value.message and fragment in info.value.message


def test_secrets_without_a_vault_are_a_vault_error(scope: Scope) -> None:
    with pytest.raises(OpcodeError) as info:
        interpolate("${{secrets.TOKEN}}", scope)
    assert info.value.code == VAULT_ERROR


def test_secrets_resolve_in_a_second_pass(scope: Scope) -> None:
    scope.secret_lookup = {"TOKEN": "s3cret"}.__getitem__
    scope.inputs = {"auth": "Bearer ${{secrets.TOKEN}}"}
    assert interpolate("${{inputs.auth}}", scope) == "Bearer s3cret"


def test_state_machines_refuse_invalid_transitions() -> None:
    step = StepFSM("s")
    step.to("scheduled")
    step.to("running")
    step.to("completed")
    with pytest.raises(OpcodeError) as info:
        step.to("running")
    assert info.value.code == INVALID_TRANSITION
    run = WorkflowFSM("w")
    with pytest.raises(OpcodeError):
        run.to("completed")
    run.to("active")
    run.to("suspended")
    run.to("active")
    run.to("failed")
    run.to("active")  # a retry signal may revive a failed run


def test_cel_style_step_index_reads_the_output(scope: Scope) -> None:
    scope.steps["review-gate"] = StepResult("completed", {"choice": "reject"})
    assert interpolate("Decision: ${{steps['review-gate'].choice}}", scope) == "Decision: reject"
    assert interpolate('${{steps["fetch"].body.items[1].id}}', scope) == 8
    with pytest.raises(OpcodeError) as info:
        interpolate("${{steps['nope'].x}}", scope)
    assert info.value.code == INTERPOLATION_ERROR and "nope" in info.value.message

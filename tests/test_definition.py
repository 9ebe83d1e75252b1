"""Definition validation: every problem at once, each with its path; cycles; durations; the DAG helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opcode_core.engine.dag import find_cycle, levels
from opcode_core.engine.definition import load_definition, validate_definition
from opcode_core.engine.durations import parse_duration
from opcode_core.errors import CYCLE_DETECTED, VALIDATION_ERROR, OpcodeError, ValidationError
from opcode_core.plugins import build_plugin_manager
from opcode_core.registry import Registry
from opcode_core.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "upstream-examples"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    settings = load_settings({"OPCODE_HOME": str(tmp_path_factory.mktemp("home")), "OPCODE_LOAD_PLUGINS": ""})
    pm, report = build_plugin_manager(settings)
    return Registry.from_plugins(pm, report, settings)


def log_step(step_id: str, **extra: object) -> dict:
    return {"id": step_id, "action": "workflow.log", "params": {"message": step_id}, **extra}


def test_valid_definition_loads(registry: Registry) -> None:
    model = load_definition({"timeout": "1m30s", "steps": [log_step("a"), log_step("b", depends_on=["a"])]}, registry)
    assert [s.id for s in model.steps] == ["a", "b"]
    assert model.timeout == 90.0 and model.terminal_steps() == ["b"]


def test_all_problems_reported_at_once_with_paths(registry: Registry) -> None:
    definition = {
        "steps": [
            log_step("a"),
            log_step("a"),
            {"id": "c", "action": "no.such", "depends_on": ["ghost"], "timeout": "soon"},
            {"id": "d", "type": "teleport"},
            {"id": "e", "action": "workflow.log", "retry": {"max": 2, "backoff": "sometimes"}},
        ],
        "on_timeout": "explode",
    }
    with pytest.raises(ValidationError) as info:
        load_definition(definition, registry)
    assert info.value.code == VALIDATION_ERROR
    assert "'explode' is not one of" in str(info.value)
    definition.pop("on_timeout")
    problems = {(p["path"], p["message"]) for p in validate_definition(definition, registry)}
    paths = {p for p, _ in problems}
    assert "definition.steps[1].id" in paths  # duplicate
    assert ("definition.steps[2].action", "unknown action 'no.such'") in problems
    assert ("definition.steps[2].depends_on[0]", "unknown step 'ghost' in depends_on of 'c'") in problems
    assert "definition.steps[2].timeout" in paths
    assert "definition.steps[3].type" in paths
    assert "definition.steps[4].retry.backoff" in paths


def test_cycle_is_cycle_detected(registry: Registry) -> None:
    steps = [log_step("a", depends_on=["c"]), log_step("b", depends_on=["a"]), log_step("c", depends_on=["b"])]
    with pytest.raises(OpcodeError) as info:
        load_definition({"steps": steps}, registry)
    assert info.value.code == CYCLE_DETECTED
    assert "a -> c -> b -> a" in info.value.message


def test_not_an_object_and_empty_steps(registry: Registry) -> None:
    assert validate_definition([], registry)[0]["path"] == "definition"
    assert validate_definition({"steps": []}, registry)[0]["path"] == "definition.steps"
    assert "'steps' is a required property" in validate_definition({}, registry)[0]["message"]


def test_dag_helpers() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert find_cycle(deps) is None
    assert levels(deps) == [["a"], ["b", "c"], ["d"]]
    assert find_cycle({"x": ["y"], "y": ["x"]}) == ["x", "y", "x"]


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("30s", 30), ("1h30m", 5400), ("1.5s", 1.5), (2, 2.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "1x", "-1s", "s"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_upstream_examples_with_action_steps_validate(registry: Registry) -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} is absent: the upstream example corpus lives outside the repo")
    checked = 0
    for path in sorted(EXAMPLES.glob("*.json")):
        doc = json.loads(path.read_text())
        steps = doc["definition"]["steps"]
        # Step types other than `action` and actions of later families arrive with their own issues.
        if any(
            s.get("type", "action") != "action"
            or s.get("action", "").split(".")[0] not in {"workflow", "crypto", "shell", "http"}
            or s.get("condition")
            for s in steps
        ):
            continue
        assert validate_definition(doc["definition"], registry) == [], path.name
        checked += 1
    assert checked >= 3


def test_step_type_config_and_expressions_are_checked(registry: Registry) -> None:
    definition = {
        "steps": [
            {"id": "c", "type": "condition", "config": {"branches": {}}},
            {"id": "l", "type": "loop", "config": {"mode": "while", "body": [log_step("b")]}},
            {"id": "w", "type": "wait", "config": {"duration": "soonish"}},
            {"id": "g", "action": "workflow.log", "params": {"message": "x"}, "condition": "inputs.x ==== 1"},
            {
                "id": "p",
                "type": "parallel",
                "config": {
                    "branches": [[{"id": "dup", "action": "workflow.log"}, {"id": "dup", "action": "workflow.log"}]]
                },
            },
            {"id": "e", "type": "condition", "config": {"expression": "1 +", "branches": {}}},
        ]
    }
    problems = {(p["path"], p["message"]) for p in validate_definition(definition, registry)}
    paths = {p for p, _ in problems}
    assert "definition.steps[0].config" in paths  # expression is required
    assert "definition.steps[1].config" in paths  # while needs a condition
    assert "definition.steps[2].config.duration" in paths
    assert "definition.steps[3].condition" in paths
    assert "definition.steps[4].config.branch_0[1].id" in paths
    assert "definition.steps[5].config.expression" in paths


def test_references_to_unknown_steps_are_refused(registry: Registry) -> None:
    definition = {
        "steps": [
            log_step("a"),
            {"id": "b", "action": "workflow.log", "params": {"message": "${{steps.ghost.output.x}}"}},
            {
                "id": "l",
                "type": "loop",
                "config": {
                    "over": "[1]",
                    "body": [
                        {"id": "inner", "action": "workflow.log", "params": {"message": "x"}},
                        {
                            "id": "uses",
                            "action": "workflow.log",
                            "params": {"message": "${{steps.inner.output.message}}"},
                        },
                    ],
                },
            },
            {
                "id": "z",
                "action": "workflow.log",
                "params": {"message": "${{steps.l.iter_0.inner.output}} ${{steps.a.status}}"},
            },
        ]
    }
    problems = validate_definition(definition, registry)
    assert [(p["path"], "ghost" in p["message"]) for p in problems] == [("definition.steps[1].params.message", True)]

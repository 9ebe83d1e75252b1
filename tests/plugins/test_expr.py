"""expr.eval and the `expr` engine, end to end against a run's real scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pluggy
import pytest

from opcode_core import hookspecs
from opcode_core.errors import EXECUTION_ERROR, VALIDATION_ERROR, ActionError, ExpressionError
from opcode_plugins import expr

SPECS = {spec.name: spec for spec in expr.opcode_register_actions(settings=None)}
EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "upstream-examples"


class ScopedRun:
    """A RunServices for one run holding real data: step outputs, inputs, workflow facts and context."""

    def __init__(self, steps: dict[str, Any], inputs: dict[str, Any], context: dict[str, Any]) -> None:
        self.steps, self.inputs, self.context = steps, inputs, context
        self.workflow = {"run_id": "wf-7", "name": "review", "template_name": "review", "template_version": "v1",
                         "agent_id": "agent-1"}
        self.events: list[tuple[str, Any]] = []
        self.scope_reads = 0

    async def emit(self, event_type: str, payload: Any) -> None:
        """Keep the event."""
        self.events.append((event_type, payload))

    async def get_context(self) -> dict[str, Any]:
        """The run's context."""
        return dict(self.context)

    async def update_context(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge values into the context."""
        self.context = {**self.context, **values}
        return dict(self.context)

    async def notify(self, message: str, data: Any = None) -> bool:
        """No agent is connected in these tests."""
        return False

    async def run_child(self, template_name: str, *, version: str | None, params: dict[str, Any]) -> dict[str, Any]:
        """expr.eval never starts children."""
        raise AssertionError("expr.eval must not start a child run")

    async def scope(self) -> dict[str, Any]:
        """What expressions read: step outputs by id, inputs, workflow facts and context."""
        self.scope_reads += 1
        return {"steps": self.steps, "inputs": self.inputs, "workflow": self.workflow, "context": self.context}


@pytest.fixture
def run_services() -> ScopedRun:
    """A run whose fetch step returned three scored items and whose inputs set a threshold."""
    return ScopedRun(
        steps={
            "fetch-data": {"status_code": 200, "body": {"items": [
                {"id": "a", "score": 9, "level": "ERROR"},
                {"id": "b", "score": 2, "level": "INFO"},
                {"id": "c", "score": 5, "level": "ERROR"},
            ]}},
            "shell": {"exit_code": 0, "stdout": {"version": "1.4.2"}},
        },
        inputs={"threshold": 5, "names": ["Ada", "Grace"]},
        context={"intent": "triage", "attempts": 2},
    )


@pytest.fixture
def scoped_ctx(make_ctx, run_services):
    """An ActionContext whose runtime offers scope()."""
    return make_ctx(runtime=run_services)


async def run_eval(params: dict[str, Any], ctx: Any) -> Any:
    return await SPECS["expr.eval"].execute(params, ctx)


def test_entry_point_provides_the_action_and_the_engine(via_entry_point):
    module, specs = via_entry_point("expr")
    assert module is expr
    assert [s.name for s in specs] == ["expr.eval"]
    pm = pluggy.PluginManager("opcode")
    pm.add_hookspecs(hookspecs)
    pm.register(module, name="expr")
    engines = [e for group in pm.hook.opcode_register_expression_engines(settings=None) for e in group]
    assert [e.name for e in engines] == ["expr"]
    assert engines[0].evaluate(engines[0].compile("inputs.n * 2"), {"inputs": {"n": 21}}) == 42


def test_schema_is_complete(well_formed):
    well_formed(list(SPECS.values()))


@pytest.mark.parametrize(
    "params",
    [
        {"expression": "1 + 1"},
        {"expression": "len(data)", "data": [1, 2]},
        {"expression": "data.a", "data": {"a": None}},
        {"expression": "data", "data": None},
        {"expression": "data", "data": "text"},
    ],
)
def test_valid_params(schema_check, params):
    assert schema_check(SPECS["expr.eval"], params) == []


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"data": [1]},
        {"expression": ""},
        {"expression": 5},
        {"expression": ["1 + 1"]},
        {"expression": None},
        {"expression": "1", "extra": True},
    ],
)
def test_invalid_params(schema_check, params):
    assert schema_check(SPECS["expr.eval"], params) != []


async def test_the_upstream_example_filters_a_steps_output_by_an_input(scoped_ctx, run_services):
    out = await run_eval({"expression": "filter(steps['fetch-data'].body.items, {.score >= inputs.threshold})"},
                         scoped_ctx)
    assert out == {"result": [run_services.steps["fetch-data"]["body"]["items"][0],
                              run_services.steps["fetch-data"]["body"]["items"][2]]}
    assert run_services.scope_reads == 1


@pytest.mark.parametrize(
    ("expression", "data", "result"),
    [
        ("len(filter(data, {.level == 'ERROR'}))", [{"level": "ERROR"}, {"level": "INFO"}], 1),
        ("sum(data, {#})", [1, 2, 3], 6),
        ("data?.user?.name ?? 'anonymous'", {"user": None}, "anonymous"),
        ("data ?? 'no data'", None, "no data"),
        ("data | map(upper(#)) | join('+')", ["a", "b"], "A+B"),
        ("steps.shell.exit_code == 0 && steps.shell.stdout.version startsWith '1.'", None, True),
        ("workflow.run_id + ':' + context.intent", None, "wf-7:triage"),
        ("let top = sortBy(steps['fetch-data'].body.items, .score, 'desc')[0]; top.id", None, "a"),
        ("map(inputs.names, {#index + 1 + '. ' + #})", None, None),
        ("map(inputs.names, {string(#index + 1) + '. ' + #})", None, ["1. Ada", "2. Grace"]),
        ("context.attempts > 1 ? 'retrying' : 'first'", None, "retrying"),
        ("count(steps['fetch-data'].body.items, .score > data)", 3, 2),
        ("groupBy(steps['fetch-data'].body.items, .score > 4) | keys()", None, [True, False]),
        ("groupBy(data, #)", [1, 1, 2], {"1": [1, 1], "2": [2]}),
    ],
)
async def test_expressions_read_the_scope_and_data(scoped_ctx, expression, data, result):
    params = {"expression": expression} if data is None else {"expression": expression, "data": data}
    if result is None:
        with pytest.raises(ActionError) as caught:
            await run_eval(params, scoped_ctx)
        assert caught.value.code == EXECUTION_ERROR
        assert "invalid operation: int + string" in caught.value.message
        return
    out = await run_eval(params, scoped_ctx)
    assert out == {"result": result}
    assert json.loads(json.dumps(out)) == out


async def test_a_syntax_error_is_a_validation_error_with_its_position(scoped_ctx):
    with pytest.raises(ActionError) as caught:
        await run_eval({"expression": "filter(data, {.score > })"}, scoped_ctx)
    error = caught.value
    assert error.code == VALIDATION_ERROR
    assert error.details == {"expression": "filter(data, {.score > })", "engine": "expr", "position": 23}
    assert "at position 23: unexpected token '}'" in error.message


async def test_a_runtime_error_is_an_execution_error_naming_the_expression(scoped_ctx):
    with pytest.raises(ActionError) as caught:
        await run_eval({"expression": "steps.missing.output"}, scoped_ctx)
    error = caught.value
    assert error.code == EXECUTION_ERROR
    assert error.details["position"] == 13
    assert "'steps.missing.output'" in error.message and "cannot fetch output from nil" in error.message


async def test_an_unknown_name_is_an_error_not_nil(scoped_ctx):
    with pytest.raises(ActionError, match="unknown name items"):
        await run_eval({"expression": "sum(items, {#})", "data": [1, 2, 3]}, scoped_ctx)


async def test_a_result_that_is_not_json_is_refused(scoped_ctx):
    with pytest.raises(ActionError) as caught:
        await run_eval({"expression": "float('inf')"}, scoped_ctx)
    assert caught.value.code == EXECUTION_ERROR and "not a JSON number" in caught.value.message


async def test_without_scope_the_run_context_is_still_readable(ctx, services):
    # The conftest RunServices has no scope(): expressions still see the run's context.
    out = await run_eval({"expression": "context.intent + '/' + string(len(steps))"}, ctx)
    assert out == {"result": "test/0"}
    assert ("get_context",) in services.calls


def test_engine_compiles_once_and_reports_references():
    (engine,) = expr.opcode_register_expression_engines(settings=None)
    program = engine.compile("steps['fetch'].status_code == 200 && inputs.ok")
    assert engine.compile("steps['fetch'].status_code == 200 && inputs.ok") is program
    assert engine.evaluate(program, {"steps": {"fetch": {"status_code": 200}}, "inputs": {"ok": True}}) is True
    assert engine.references is not None
    assert engine.references("let s = steps.a; s.x + inputs.y") == {"steps", "inputs"}
    with pytest.raises(ExpressionError) as caught:
        engine.compile("steps[")
    assert caught.value.code == VALIDATION_ERROR and caught.value.position == 6


def test_engine_results_are_json_values():
    (engine,) = expr.opcode_register_expression_engines(settings=None)
    assert engine.evaluate(engine.compile("groupBy([1, 2, 3], # % 2 == 0)"), {}) == {"false": [1, 3], "true": [2]}
    with pytest.raises(ExpressionError) as caught:
        engine.evaluate(engine.compile("float('nan')"), {})
    assert caught.value.code == EXECUTION_ERROR


def _expr_eval_expressions() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(node: Any, name: str) -> None:
        if isinstance(node, dict):
            if node.get("action") == "expr.eval":
                found.append((name, node["params"]["expression"]))
            for value in node.values():
                walk(value, name)
        elif isinstance(node, list):
            for value in node:
                walk(value, name)

    for path in sorted(EXAMPLES.glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared/upstream-examples is not beside the repo")
def test_every_upstream_expr_eval_expression_compiles():
    expressions = _expr_eval_expressions()
    assert expressions, "the upstream examples use expr.eval at least once"
    (engine,) = expr.opcode_register_expression_engines(settings=None)
    for name, source in expressions:
        assert engine.compile(source).source == source, name

"""CEL (both implementations) and jq engines, the evaluator's cache, and the helpers steps use."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opcode_core.engine.expressions import (
    ExpressionEvaluator,
    branch_key,
    is_json_array_literal,
    split_engine,
)
from opcode_core.errors import EXECUTION_ERROR, VALIDATION_ERROR, ExpressionError
from opcode_core.plugins import build_plugin_manager
from opcode_core.registry import Registry
from opcode_core.settings import load_settings
from opcode_core.specs import ExpressionEngineSpec
from opcode_plugins.expressions import cel, jq

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "upstream-examples"
SCOPE = {"steps", "inputs", "workflow", "context", "iter"}


@pytest.fixture(params=cel.IMPLEMENTATIONS)
def cel_engine(request: pytest.FixtureRequest) -> ExpressionEngineSpec:
    return cel.make_engine(request.param)


def run_cel(engine: ExpressionEngineSpec, source: str, activation: dict[str, Any]) -> Any:
    return engine.evaluate(engine.compile(source), activation)


# --- CEL semantics, the same for both implementations. ---

STEPS = {
    "run-tests": {"exit_code": 0, "stdout": "ok"},
    # JSON gives 200.0 when a server writes it so; it must still equal 200.
    "fetch": {"status_code": 200.0, "score": 3, "body": {"items": [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}]}},
}
INPUTS = {"env": "prod", "envs": ["dev", "prod"], "flags": {"beta": True}, "nums": [1.0, 2.0], "n": 4,
          "name": "report-2024.csv", "severity": "high", "empty": ""}
ACTIVATION = {"steps": STEPS, "inputs": INPUTS, "workflow": {"run_id": "r1", "name": "wf"},
              "context": {"intent": "deploy"}, "iter": {"item": "feature/x", "index": 2}}

CEL_CASES = [
    ("steps['run-tests'].exit_code == 0", True),
    ('steps["fetch"].status_code == 200', True),
    ("steps.fetch.status_code == 200", True),
    ("steps.fetch.status_code", 200),
    ("3.0 == 3", True),
    ("steps.fetch.score > 2.5", True),
    ("steps.fetch.score <= 3.0", True),
    ('inputs.env == "prod"', True),
    ("inputs.env == 1", False),
    ("'prod' in inputs.envs", True),
    ("'beta' in inputs.flags", True),
    ("'alpha' in inputs.flags", False),
    ("2 in inputs.nums", True),
    ("size(inputs.envs) == 2 && inputs.envs.size() == 2", True),
    ("size(inputs.name)", 15),
    ("has(steps.fetch)", True),
    ("has(steps.missing)", False),
    ("has(inputs.flags.beta)", True),
    ("inputs.name.contains('2024') && inputs.name.startsWith('report') && inputs.name.endsWith('.csv')", True),
    (r"inputs.name.matches('^report-\\d{4}\\.csv$')", True),
    ("steps.fetch.body.items.exists(i, i.id == 2)", True),
    ("steps.fetch.body.items.all(i, i.id > 0)", True),
    ("steps.fetch.body.items.exists_one(i, size(i.tags) > 0)", True),
    ("steps.fetch.body.items.map(i, i.id * 10)", [10, 20]),
    ("steps.fetch.body.items.filter(i, size(i.tags) == 0).map(i, i.id)", [2]),
    ("inputs.n > 3 ? 'many' : 'few'", "many"),
    ("inputs.severity", "high"),
    ("inputs.n + 1", 5),
    ("double(inputs.n) / 2.0 > 1.0", True),
    ("1.5 * 2.0", 3.0),
    ("inputs.envs + ['qa']", ["dev", "prod", "qa"]),
    ("{'env': inputs.env, 'n': inputs.n}", {"env": "prod", "n": 4}),
    ("{1: 'one'}", {"1": "one"}),
    ("null", None),
    ("iter.item", "feature/x"),
    ("iter.index + 1", 3),
    ("!(iter.item in ['main', 'develop', 'master'])", True),
    ("workflow.run_id == 'r1' && context.intent == 'deploy'", True),
    ("inputs.empty != ''", False),
    ("timestamp('2024-01-02T03:04:05Z')", "2024-01-02T03:04:05Z"),
    ("duration('90s')", "90s"),
    ("duration('1.5s')", "1.5s"),
    ("b'hi'", "hi"),
    ("2u", 2),
    ("type(1)", "int"),
    ("string(42) + '!'", "42!"),
    ("int('7') + 1", 8),
    ("'''it's''' + r'\\d'", "it's\\d"),
]


@pytest.mark.parametrize(("source", "expected"), CEL_CASES, ids=[c[0] for c in CEL_CASES])
def test_cel_evaluates(cel_engine: ExpressionEngineSpec, source: str, expected: Any) -> None:
    result = run_cel(cel_engine, source, ACTIVATION)
    assert result == expected
    assert same_kind(result, expected)


def same_kind(result: Any, expected: Any) -> bool:
    """Same JSON type: bool is an int in Python, so a True where 1 is expected must not pass."""
    if isinstance(result, bool) or isinstance(expected, bool):
        return type(result) is type(expected)
    number = (int, float)
    return isinstance(result, number) == isinstance(expected, number) and (
        isinstance(result, number) or type(result) is type(expected))


def test_integral_floats_become_ints_for_cel_python_only() -> None:
    # cel-python gets 200.0 as int 200 so that it can meet int literals; the Rust one keeps the double.
    activation = {"steps": {"fetch": {"status_code": 200.0}}}
    assert type(run_cel(cel.make_engine("cel-python"), "steps.fetch.status_code", activation)) is int
    assert type(run_cel(cel.make_engine("common-expression-language"), "steps.fetch.status_code", activation)) is float


def test_cel_missing_scope_names_are_empty_maps(cel_engine: ExpressionEngineSpec) -> None:
    assert run_cel(cel_engine, "has(iter.item)", {}) is False
    assert run_cel(cel_engine, "size(steps)", {"steps": None}) == 0


def test_cel_only_reads_what_it_references(cel_engine: ExpressionEngineSpec) -> None:
    # Values the expression never names are not converted: an unconvertible one does no harm.
    assert run_cel(cel_engine, "inputs.n == 4", {"inputs": {"n": 4}, "context": {"x": object()}}) is True


CEL_ERRORS = [
    ("1 +", VALIDATION_ERROR, "", True),
    ("steps['a'", VALIDATION_ERROR, "", True),
    ("foo(1)", VALIDATION_ERROR, "unknown function 'foo'", True),
    ("inputs.name.shout()", VALIDATION_ERROR, "unknown function 'shout'", True),
    ("inptus.env == 'prod'", VALIDATION_ERROR, "undeclared reference to 'inptus'", True),
    ("'a' + 1", EXECUTION_ERROR, "", False),
    ("inputs.n + 2.5", EXECUTION_ERROR, "", False),
    ("inputs.missing == 1", EXECUTION_ERROR, "missing", False),
    ("steps['nope'].status_code == 200", EXECUTION_ERROR, "nope", False),
    ("inputs.n / 0", EXECUTION_ERROR, "", False),
    ("inputs.envs[5]", EXECUTION_ERROR, "", False),
]


@pytest.mark.parametrize(("source", "code", "fragment", "at_compile"), CEL_ERRORS, ids=[c[0] for c in CEL_ERRORS])
def test_cel_errors(cel_engine: ExpressionEngineSpec, source: str, code: str, fragment: str, at_compile: bool) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiled = cel_engine.compile(source)
        assert not at_compile, "should have failed to compile"
        cel_engine.evaluate(compiled, ACTIVATION)
    err = caught.value
    assert (err.code, err.engine, err.expression) == (code, "cel", source)
    assert fragment in err.message and repr(source) in err.message
    assert err.to_dict()["details"]["expression"] == source
    if code == VALIDATION_ERROR:
        assert err.position is not None and 0 <= err.position <= len(source)
    # The message is for an agent: no Python class reprs, no dump of the activation.
    assert "<class" not in err.message and "Activation(" not in err.message and len(err.message) < 400


def test_cel_syntax_error_position_points_at_the_problem(cel_engine: ExpressionEngineSpec) -> None:
    with pytest.raises(ExpressionError) as caught:
        cel_engine.compile("inputs.n == 1 && bogus(2)")
    assert caught.value.position == len("inputs.n == 1 && ")


# --- references(): what the executor builds for an expression. ---

REFERENCES = [
    ("steps['run-tests'].exit_code == 0", {"steps", "steps:run-tests"}),
    ('steps["a"].x && steps.b.y', {"steps", "steps:a", "steps:b"}),
    ("has(steps.x)", {"steps", "steps:x"}),
    ("steps['check-drift.true.triage-drift'].choice == 'sync'", {"steps", "steps:check-drift.true.triage-drift"}),
    ("size(steps) > 0", {"steps", "steps:*"}),
    ("steps.size() > 0", {"steps", "steps:*"}),
    ("'a' in steps", {"steps", "steps:*"}),
    ("steps[inputs.id].ok", {"steps", "steps:*", "inputs"}),
    ("steps['a' + 'b'].ok", {"steps", "steps:*"}),
    ("'steps.x' == inputs.name", {"inputs"}),
    ("inputs.steps.x == 1", {"inputs"}),
    ("iter.item in ['main']", {"iter"}),
    ("inputs.items.exists(kw, inputs.message.contains(kw))", {"inputs"}),
    ("context.x == workflow.run_id", {"context", "workflow"}),
    (r"'it\'s steps[\'x\']' + steps['y'].z", {"steps", "steps:y"}),
    ("r'\\' + steps.a.b", {"steps", "steps:a"}),
    ("'''steps['x']''' == steps.y.z", {"steps", "steps:y"}),
    ("steps.a.b // steps['c']\n && true", {"steps", "steps:a"}),
    ("steps[?'a'].orValue(1)", {"steps", "steps:a"}),
    (".steps.a == 1", {"steps", "steps:a"}),
    ("[1, 2].map(x, x * 2)", set()),
]


@pytest.mark.parametrize(("source", "expected"), REFERENCES, ids=[r[0] for r in REFERENCES])
def test_cel_references(source: str, expected: set[str]) -> None:
    assert cel.references(source) == expected


def rust_variables(source: str) -> set[str]:
    """Top-level scope names according to the Rust parser (its variables() also lists macro variables)."""
    return set(cel._load_rust_module().compile(source).variables()) & SCOPE


# `steps[?'a']` is optional syntax the Rust parser refuses, and it names `.steps` with its leading dot.
PARSEABLE = [r[0] for r in REFERENCES if "[?" not in r[0] and not r[0].startswith(".")]


@pytest.mark.parametrize("source", [c[0] for c in CEL_CASES] + PARSEABLE)
def test_references_agree_with_the_rust_parser(source: str) -> None:
    names = {ref for ref in cel.references(source) if ":" not in ref}
    assert names == rust_variables(source)


# --- jq. ---

JQ_ACTIVATION = {
    "steps": {"list": {"entries": [{"name": "a", "size": 1}, {"name": "b", "size": 5}]}},
    "inputs": {"items": [{"id": 1}, {"id": 2}], "one": [{"id": 9}], "n": 2},
}

JQ_CASES = [
    ('.steps["list"].entries | map(.name)', ["a", "b"]),
    (".inputs.items | map(.id)", [1, 2]),
    (".inputs.items[] | .id", [1, 2]),  # several outputs: a list
    (".inputs.one[] | .id", 9),  # one output: the value itself
    ("[.inputs.one[] | .id]", [9]),
    ("empty", None),
    ('.steps["list"].entries | map(select(.size > 2)) | length', 1),
    (".inputs.n + 1", 3),
    ("env", {}),
    ("$ENV", {}),
    ("def double: . * 2; .inputs.n | double", 4),
    (".inputs.n # a trailing comment", 2),
]


@pytest.mark.parametrize(("source", "expected"), JQ_CASES, ids=[c[0] for c in JQ_CASES])
def test_jq_evaluates(source: str, expected: Any) -> None:
    assert jq.evaluate_jq(jq.compile_jq(source), JQ_ACTIVATION) == expected


JQ_ERRORS = [
    (".a[", VALIDATION_ERROR, "syntax error"),
    ("foo(1)", VALIDATION_ERROR, "foo/1 is not defined"),
    ('import "x" as y; .', VALIDATION_ERROR, "not available"),
    (".inputs.n.x", EXECUTION_ERROR, "Cannot index number"),
    ('error("boom")', EXECUTION_ERROR, "boom"),
]


@pytest.mark.parametrize(("source", "code", "fragment"), JQ_ERRORS, ids=[c[0] for c in JQ_ERRORS])
def test_jq_errors(source: str, code: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        jq.evaluate_jq(jq.compile_jq(source), JQ_ACTIVATION)
    err = caught.value
    assert (err.code, err.engine, err.expression) == (code, "jq", source)
    assert fragment in err.message
    if code == VALIDATION_ERROR and "syntax" in fragment:
        assert err.position is not None and err.position <= len(source)


def test_jq_error_position_is_in_the_users_source() -> None:
    with pytest.raises(ExpressionError) as caught:
        jq.compile_jq(".a | foo")
    assert caught.value.position == len(".a | ")


def test_jq_references_are_the_whole_scope() -> None:
    assert jq.references(".inputs.x") == {"steps:*", "inputs", "workflow", "context", "iter"}


# --- The evaluator: engine choice, cache, lazy activation. ---


class CountingCel:
    """A `cel` spec that counts compile calls."""

    def __init__(self) -> None:
        self.real = cel.make_engine()
        self.compiles = 0

    def compile(self, source: str) -> Any:
        self.compiles += 1
        return self.real.compile(source)

    def spec(self) -> ExpressionEngineSpec:
        return ExpressionEngineSpec("cel", "counting", self.compile, self.real.evaluate, self.real.references)


def test_compile_is_cached_per_engine_and_source() -> None:
    counting = CountingCel()
    evaluator = ExpressionEvaluator({"cel": counting.spec()})
    for n in range(5):
        assert evaluator.evaluate("cel", "inputs.n > 2", {"inputs": {"n": n}}) is (n > 2)
    assert counting.compiles == 1
    evaluator.evaluate("cel", "inputs.n > 3", {"inputs": {"n": 1}})
    assert counting.compiles == 2


def test_compile_cache_is_bounded() -> None:
    counting = CountingCel()
    evaluator = ExpressionEvaluator({"cel": counting.spec()}, cache_size=2)
    for source in ["1 == 1", "2 == 2", "3 == 3", "1 == 1"]:
        evaluator.compile("cel", source)
    assert counting.compiles == 4  # "1 == 1" was evicted by the third, so compiled again
    evaluator.compile("cel", "3 == 3")
    assert counting.compiles == 4


def test_compile_errors_are_not_cached() -> None:
    counting = CountingCel()
    evaluator = ExpressionEvaluator({"cel": counting.spec()})
    for _ in range(2):
        with pytest.raises(ExpressionError):
            evaluator.compile("cel", "1 +")
    assert counting.compiles == 2


def test_activation_callable_gets_the_references() -> None:
    evaluator = ExpressionEvaluator({"cel": cel.make_engine()})
    seen: list[set[str]] = []

    def build(refs: set[str]) -> dict[str, Any]:
        seen.append(refs)
        return {"steps": {"fetch": {"status_code": 200}}}

    assert evaluator.evaluate("cel", "steps['fetch'].status_code == 200", build) is True
    assert seen == [{"steps", "steps:fetch"}]


def test_unknown_engine_names_the_known_ones() -> None:
    evaluator = ExpressionEvaluator({"cel": cel.make_engine(), "jq": jq.opcode_register_expression_engines(None)[0]})
    with pytest.raises(ExpressionError) as caught:
        evaluator.compile("expr", "1 + 1")
    assert caught.value.code == VALIDATION_ERROR
    assert "'expr'" in caught.value.message and "cel, jq" in caught.value.message


def test_empty_expression_is_a_validation_error() -> None:
    evaluator = ExpressionEvaluator({"cel": cel.make_engine()})
    with pytest.raises(ExpressionError) as caught:
        evaluator.compile("cel", "  ")
    assert caught.value.code == VALIDATION_ERROR


def test_other_exceptions_from_an_engine_become_expression_errors() -> None:
    def explode(compiled: Any, activation: dict[str, Any]) -> Any:
        raise RuntimeError("engine bug")

    spec = ExpressionEngineSpec("odd", "raises", lambda source: source, explode)
    evaluator = ExpressionEvaluator({"odd": spec})
    with pytest.raises(ExpressionError) as caught:
        evaluator.evaluate("odd", "x", {})
    assert (caught.value.code, caught.value.engine, caught.value.expression) == (EXECUTION_ERROR, "odd", "x")
    assert "engine bug" in caught.value.message
    # An engine without references() is handed the whole scope.
    assert evaluator.references("odd", "x") == {"steps:*", "inputs", "workflow", "context", "iter"}


# --- Helpers. ---


@pytest.mark.parametrize(("source", "expected"), [
    ("jq: .x", ("jq", ".x")),
    ("jq:.steps['a']", ("jq", ".steps['a']")),
    ("cel: a == 1", ("cel", "a == 1")),
    ("inputs.x", ("cel", "inputs.x")),
    ("inputs.x ? 'a' : 'b'", ("cel", "inputs.x ? 'a' : 'b'")),
    ("{'a': 1}", ("cel", "{'a': 1}")),
    ("steps['a:b'].x", ("cel", "steps['a:b'].x")),
])
def test_split_engine(source: str, expected: tuple[str, str]) -> None:
    assert split_engine(source) == expected


def test_split_engine_default() -> None:
    assert split_engine(".x", "jq") == ("jq", ".x")


@pytest.mark.parametrize(("source", "expected"), [
    ('["api", "db", "cache"]', ["api", "db", "cache"]),
    (" [1, 2] ", [1, 2]),
    ("[]", []),
    ("['a']", None),  # a CEL list literal, not JSON
    ("steps['x'].entries", None),
    ('{"a": 1}', None),
    ("[1,", None),
])
def test_is_json_array_literal(source: str, expected: list[Any] | None) -> None:
    assert is_json_array_literal(source) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (True, "true"), (False, "false"), ("high", "high"), (3, "3"), (2.5, "2.5"), (200.0, "200"),
    (1e6, "1e+06"), (123456.0, "123456"), (1e-5, "1e-05"), (0.0001, "0.0001"), (-1.5e10, "-1.5e+10"),
    (float("inf"), "+Inf"), (None, "null"), ([1, "a"], '[1,"a"]'), ({"b": 1, "a": 2}, '{"a":2,"b":1}'),
])
def test_branch_key(value: Any, expected: str) -> None:
    assert branch_key(value) == expected


# --- Through the real plugin manager. ---


def registry_for(tmp_path: Path, settings_file: dict[str, Any] | None = None) -> tuple[Registry, Any]:
    if settings_file is not None:
        (tmp_path / "settings.json").write_text(json.dumps(settings_file))
    settings = load_settings({"OPCODE_HOME": str(tmp_path), "OPCODE_LOAD_PLUGINS": ""})
    pm, report = build_plugin_manager(settings)
    return Registry.from_plugins(pm, report, settings), report


def test_engines_arrive_through_the_plugin_manager(tmp_path: Path) -> None:
    registry, report = registry_for(tmp_path)
    assert {"cel", "jq"} <= set(registry.engines)
    assert registry.engines["cel"].plugin == "cel" and registry.engines["jq"].plugin == "jq"
    assert report.plugins["cel"].engines == ["cel"]
    assert cel.DEFAULT_IMPLEMENTATION in registry.engines["cel"].description
    evaluator = registry.evaluator
    assert evaluator.evaluate("cel", "steps['fetch'].status_code == 200", {"steps": STEPS}) is True
    assert evaluator.evaluate("jq", ".inputs.items | map(.id)", JQ_ACTIVATION) == [1, 2]


def test_implementation_is_chosen_in_plugin_settings(tmp_path: Path) -> None:
    registry, _ = registry_for(tmp_path, {"plugins": {"settings": {"cel": {"implementation": "cel-python"}}}})
    assert "cel-python" in registry.engines["cel"].description
    compiled = registry.evaluator.compile("cel", "inputs.n == 4.0")
    assert type(compiled.program).__module__.startswith("celpy")
    assert registry.evaluator.evaluate("cel", "inputs.n == 4.0", {"inputs": {"n": 4}}) is True


def test_unknown_implementation_fails_the_plugin(tmp_path: Path) -> None:
    registry, report = registry_for(tmp_path, {"plugins": {"settings": {"cel": {"implementation": "cel-go"}}}})
    assert "cel" not in registry.engines and "jq" in registry.engines
    assert report.plugins["cel"].status == "failed"
    assert "cel-python" in (report.plugins["cel"].error or "")


LIGHT_IMPORTS = """
import sys
import opcode_plugins.expressions.cel as cel_plugin, opcode_plugins.expressions.jq
heavy = {"cel", "cel.cel", "celpy", "jq"} & set(sys.modules)
assert not heavy, f"imported at load time: {heavy}"
engine = cel_plugin.make_engine()
assert engine.evaluate(engine.compile("inputs.n == 1"), {"inputs": {"n": 1}}) is True
assert "cel.cli" not in sys.modules, "the Rust engine pulled in the cel CLI (typer, rich, prompt_toolkit)"
import cel  # the library's own import still works afterwards, on the same extension module
assert cel.compile("1 + 1").execute({}) == 2
"""


def test_plugins_import_their_libraries_lazily() -> None:
    result = subprocess.run([sys.executable, "-c", LIGHT_IMPORTS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- Every CEL expression in the original's examples. ---

# (example file, step id, where) -> (activation, expected result); a plausible run of each example.
ENTRIES = [{"name": "a.txt", "path": "/data/a.txt"}, {"name": "b.txt", "path": "/data/b.txt"}]
UPSTREAM: dict[tuple[str, str, str], tuple[dict[str, Any], Any]] = {
    ("alert-pipeline.json", "route-severity", "expression"): ({"inputs": {"severity": "critical"}}, "critical"),
    ("auto-responder.json", "check-faq", "expression"): (
        {"inputs": {"faq_keywords": ["refund", "shipping"], "message": "Where is my shipping label?"}}, True),
    ("backup-verification.json", "verify-exists", "expression"): (
        {"steps": {"check-backup": {"stdout": {"exists": True, "age_hours": 5.5}}}}, True),
    ("backup-verification.json", "check-freshness", "expression"): (
        {"steps": {"check-backup": {"stdout": {"exists": True, "age_hours": 5.5}}}, "inputs": {"max_age_hours": 24}},
        True),
    ("batch-file-processor.json", "process-each", "over"): ({"steps": {"list-files": {"entries": ENTRIES}}}, ENTRIES),
    ("data-anonymizer.json", "hash-fields", "over"): ({"inputs": {"pii_fields": ["email", "phone"]}},
                                                      ["email", "phone"]),
    ("dependency-audit.json", "check-vulns", "expression"): (
        {"steps": {"scan": {"stdout": {"vulnerabilities_found": False}}}}, False),
    ("deploy-gate.json", "check-tests", "expression"): ({"steps": {"run-tests": {"exit_code": 0}}}, True),
    ("digest-builder.json", "fetch-sources", "over"): ({"inputs": {"sources": ["https://a.test"]}}, ["https://a.test"]),
    ("error-aggregator.json", "check-new-errors", "expression"): (
        {"steps": {"fetch-logs": {"status_code": 200}}}, True),
    ("error-aggregator.json", "create-ticket", "guard"): (
        {"steps": {"check-new-errors.true.triage-decision": {"choice": "investigate"}}}, True),
    ("escalation-ladder.json", "check-health", "expression"): ({"steps": {"auto-check": {"status_code": 503}}}, True),
    ("etl-with-validation.json", "check-status", "expression"): ({"steps": {"extract": {"status_code": 200.0}}}, True),
    ("form-processor.json", "route", "expression"): ({"inputs": {"form_data": {"type": "support"}}}, True),
    ("git-branch-cleanup.json", "cleanup-loop", "over"): (
        {"steps": {"parse-branches": {"stdout": ["main", "feature/x"]}}}, ["main", "feature/x"]),
    ("git-branch-cleanup.json", "check-protected", "expression"): ({"iter": {"item": "main", "index": 0}}, False),
    ("git-changelog.json", "check-breaking", "expression"): (
        {"steps": {"parse-commits": {"stdout": {"has_breaking_changes": True}}}}, True),
    ("knowledge-base-updater.json", "check-changed", "expression"): (
        {"steps": {"hash-content": {"hash": "abc"}}, "inputs": {"last_hash": "def"}}, True),
    ("multi-agent-review.json", "publish", "guard"): ({"steps": {"review-gate": {"choice": "approve"}}}, True),
    ("notification-router.json", "route-severity", "expression"): ({"inputs": {"severity": "warning"}}, "warning"),
    ("onboarding-checklist.json", "verify-items", "over"): ({"inputs": {"checklist_items": ["laptop"]}}, ["laptop"]),
    ("openclaw-version-checker.json", "route-update", "expression"): (
        {"steps": {"check-version": {"stdout": {"update_available": True}}}}, True),
    ("openclaw-version-checker.json", "notify-update", "guard"): ({"inputs": {"notification_url": ""}}, False),
    ("order-processing.json", "stock-decision", "expression"): (
        {"steps": {"check-stock": {"body": {"available": True}}}}, True),
    ("price-monitor.json", "check-prices", "over"): ({"inputs": {"products": [{"sku": "p1"}]}}, [{"sku": "p1"}]),
    ("repo-health-check.json", "evaluate-results", "expression"): (
        {"steps": {"check-clean": {"exit_code": 0}, "run-tests": {"exit_code": 0}, "run-vet": {"exit_code": 1}}},
        False),
    ("sync-drift-detection.json", "check-drift", "expression"): (
        {"steps": {"hash-a": {"hash": "1"}, "hash-b": {"hash": "2"}}}, True),
    ("sync-drift-detection.json", "sync-data", "guard"): (
        {"steps": {"check-drift.true.triage-drift": {"choice": "sync"}}}, True),
    ("task-triage.json", "triage-loop", "over"): ({"steps": {"fetch-tickets": {"body": [{"id": 1}]}}}, [{"id": 1}]),
    ("two-way-sync.json", "check-drift", "expression"): ({"steps": {"hash-a": {"hash": "1"}, "hash-b": {"hash": "1"}}},
                                                         False),
    ("uptime-monitor.json", "check-endpoints", "over"): ({"inputs": {"endpoints": ["https://x.test"]}},
                                                          ["https://x.test"]),
}


def upstream_expressions() -> Iterator[tuple[str, str, str, str]]:
    """(file, step id, where, source) for every CEL expression in the examples; JSON array `over`s aside."""
    def walk(steps: list[dict[str, Any]], name: str) -> Iterator[tuple[str, str, str, str]]:
        for step in steps or []:
            config = step.get("config") or {}
            kind = step.get("type", "action")
            if step.get("condition"):
                yield name, step["id"], "guard", step["condition"]
            if kind == "condition":
                yield name, step["id"], "expression", config["expression"]
                for branch in (config.get("branches") or {}).values():
                    yield from walk(branch, name)
                yield from walk(config.get("default") or [], name)
            elif kind == "loop":
                if config.get("over") and is_json_array_literal(config["over"]) is None:
                    yield name, step["id"], "over", config["over"]
                if config.get("condition"):
                    yield name, step["id"], "condition", config["condition"]
                yield from walk(config.get("body") or [], name)
            elif kind == "parallel":
                for branch in config.get("branches") or []:
                    yield from walk(branch, name)

    for path in sorted(EXAMPLES.glob("*.json")):
        yield from walk(json.loads(path.read_text())["definition"]["steps"], path.name)


@pytest.fixture(scope="module")
def upstream() -> list[tuple[str, str, str, str]]:
    if not EXAMPLES.is_dir():
        pytest.skip(f"the original's examples are not at {EXAMPLES} (they live outside the repo)")
    return list(upstream_expressions())


def test_every_upstream_expression_has_a_plausible_run(upstream: list[tuple[str, str, str, str]]) -> None:
    assert {(name, sid, where) for name, sid, where, _ in upstream} == set(UPSTREAM)


def scoped(full: dict[str, Any], refs: set[str]) -> dict[str, Any]:
    """What an executor builds from the references: named steps only, unless `steps:*`."""
    out = {name: value for name, value in full.items() if name in refs and name != "steps"}
    if "steps" in refs:
        steps = full.get("steps", {})
        wanted = {ref[len("steps:"):] for ref in refs if ref.startswith("steps:")}
        out["steps"] = dict(steps) if "*" in wanted else {k: v for k, v in steps.items() if k in wanted}
    return out


@pytest.mark.parametrize("implementation", cel.IMPLEMENTATIONS)
def test_upstream_expressions_evaluate(upstream: list[tuple[str, str, str, str]], implementation: str) -> None:
    evaluator = ExpressionEvaluator({"cel": cel.make_engine(implementation)})
    for name, sid, where, source in upstream:
        activation, expected = UPSTREAM[(name, sid, where)]
        got = evaluator.evaluate("cel", source, lambda refs, a=activation: scoped(a, refs))
        assert got == expected, f"{name} {sid} {where}: {source!r}"
        assert same_kind(got, expected)


def test_upstream_json_array_over_needs_no_engine() -> None:
    path = EXAMPLES / "health-check-sweep.json"
    if not path.exists():
        pytest.skip(f"{path} is absent (the original's examples live outside the repo)")
    steps = json.loads(path.read_text())["definition"]["steps"]
    overs = [step["config"]["over"] for step in steps if step.get("type") == "loop"]
    assert [is_json_array_literal(over) for over in overs] == [["api", "db", "cache"]]


def test_rust_cel_refuses_quadratic_list_building_over_a_large_list() -> None:
    from opcode_plugins.expressions.cel import make_engine as build

    engine = build("common-expression-language", cap=100)
    compiled = engine.compile("inputs.xs.filter(x, x > 1)")
    assert engine.evaluate(compiled, {"inputs": {"xs": list(range(100))}}) == list(range(2, 100))
    with pytest.raises(ExpressionError) as info:
        engine.evaluate(compiled, {"inputs": {"xs": list(range(101))}})
    assert info.value.code == "EXECUTION_ERROR" and "jq" in info.value.message and "101 items" in info.value.message
    # exists() does not build a list: no cap
    assert engine.evaluate(engine.compile("inputs.xs.exists(x, x == 100)"), {"inputs": {"xs": list(range(101))}})


# --- Flattened programs: the same answers as the expression as written. ---


def test_flatten_reads_each_scope_path_into_a_variable() -> None:
    source = "steps['s7'].status_code == 200 && inputs.env == 'prod' && steps.s7.status_code < 300"
    flat, paths = cel.flatten(source) or ("", [])
    assert flat == "opcode__p0 == 200 && opcode__p1 == 'prod' && opcode__p0 < 300"
    assert paths == [("opcode__p0", "steps", ("s7", "status_code")), ("opcode__p1", "inputs", ("env",))]
    # Method calls, optional selections and non-string indexes end a path; the rest stays as written.
    assert cel.flatten("steps['l'].items.size() > 0 && steps.l.items[0] == 1") == (
        "opcode__p0.size() > 0 && opcode__p0[0] == 1", [("opcode__p0", "steps", ("l", "items"))])
    assert cel.flatten("steps.a.?b == 1")[0] == "opcode__p0.?b == 1"  # type: ignore[index]


@pytest.mark.parametrize("source", [
    "has(steps.a.b)",  # has() needs the selection itself
    "[1, 2].exists(inputs, inputs > 1) && steps.a.b == 1",  # a macro variable shadows a scope name
    "size(steps) > 0",  # nothing selected: nothing to flatten
    "opcode__p0 == 1 || inputs.x == 1",  # the prefix is taken
])
def test_flatten_leaves_alone_what_it_cannot_rewrite_safely(source: str) -> None:
    assert cel.flatten(source) is None


FLAT_CASES = [
    ("steps['s7'].status_code == 200 && inputs.env == 'prod'",
     {"steps": {"s7": {"status_code": 200}}, "inputs": {"env": "prod"}}),
    ("steps['s7'].status_code == 200", {"steps": {"s7": {"status_code": 200.0}}}),
    ("steps['s7'].status_code == 200", {"steps": {"s7": {"status_code": "200"}}}),
    ("steps.s7.body.items.size() == 3", {"steps": {"s7": {"body": {"items": [1, 2, 3]}}}}),
    ("false && steps['missing'].x == 1", {"steps": {}}),
    ("steps['missing'].x == 1 || true", {"steps": {}}),
    ("steps['missing'].x == 1", {"steps": {}}),
    ("steps['s7'].body.ok", {"steps": {"s7": {"body": {"ok": 1}}}}),
    ("!(inputs.n > 3) || inputs.name < 'b'", {"inputs": {"n": 2, "name": "a"}}),
    ("inputs.n > 3", {"inputs": {"n": None}}),
    ("inputs.big > 1", {"inputs": {"big": 2**70}}),
    ("inputs.env == null", {"inputs": {"env": None}}),
    ("inputs.nested.a == {'b': 1}", {"inputs": {"nested": {"a": {"b": 1}}}}),
]


@pytest.mark.parametrize(("source", "activation"), FLAT_CASES)
def test_flattened_evaluation_answers_as_the_expression_as_written(
    cel_engine: ExpressionEngineSpec, source: str, activation: dict[str, Any]
) -> None:
    import dataclasses

    compiled = cel_engine.compile(source)
    assert compiled.flat is not None
    as_written = dataclasses.replace(compiled, flat=None)

    def outcome(program: Any) -> Any:
        try:
            return ("value", cel_engine.evaluate(program, activation))
        except ExpressionError as exc:
            return ("error", exc.code, exc.message)

    assert outcome(compiled) == outcome(as_written)


def test_list_building_expressions_keep_the_program_as_written() -> None:
    engine = cel.make_engine("common-expression-language", cap=100)
    assert engine.compile("inputs.xs.filter(x, x > 1)").flat is None
    assert engine.compile("inputs.xs.exists(x, x > 1)").flat is not None

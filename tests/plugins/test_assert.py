"""assert.* actions: JSON equality, containment, regular expressions and JSON Schema, passing and failing."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from opcode_core.errors import ASSERTION_FAILED, VALIDATION_ERROR, ActionError
from opcode_plugins import assert_

SPECS = {spec.name: spec for spec in assert_.opcode_register_actions(settings=None)}
EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "upstream-examples"


async def run(ctx, name, **params):
    return await SPECS[name].execute(params, ctx)


async def fails(ctx, name, code=ASSERTION_FAILED, **params) -> ActionError:
    with pytest.raises(ActionError) as info:
        await run(ctx, name, **params)
    assert info.value.code == code, info.value.message
    return info.value


def test_entry_point_provides_the_actions(via_entry_point):
    module, specs = via_entry_point("assert")
    assert module is assert_
    assert sorted(s.name for s in specs) == ["assert.contains", "assert.equals", "assert.matches", "assert.schema"]


def test_schemas_are_complete(well_formed):
    well_formed(list(SPECS.values()))


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="../shared/upstream-examples is absent")
def test_upstream_examples_params_are_accepted(schema_check):
    found = []
    for path in sorted(glob.glob(str(EXAMPLES / "*.json"))):
        text = Path(path).read_text()
        for step in json.loads(text)["definition"]["steps"]:
            if str(step.get("action", "")).startswith("assert."):
                found.append((step["action"], step.get("params", {})))
    assert found, "the corpus has assert steps"
    for name, params in found:
        assert schema_check(SPECS[name], params) == [], (name, params)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("assert.equals", {"expected": None, "actual": None}),
        ("assert.equals", {"expected": [1], "actual": [1.0], "message": "m", "strict": True}),
        ("assert.contains", {"haystack": "abc", "needle": "b"}),
        ("assert.contains", {"haystack": {"a": 1}, "needle": {"a": 1}, "strict": False}),
        ("assert.matches", {"value": 200, "pattern": "^2"}),
        ("assert.schema", {"data": [1], "schema": True}),
        ("assert.schema", {"data": {}, "schema": {"type": "object"}, "message": "m"}),
    ],
)
def test_valid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) == []


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("assert.equals", {"expected": 1}),
        ("assert.equals", {"expected": 1, "actual": 1, "message": 5}),
        ("assert.equals", {"expected": 1, "actual": 1, "strict": "yes"}),
        ("assert.contains", {"haystack": 5, "needle": 5}),
        ("assert.contains", {"needle": "x"}),
        ("assert.matches", {"value": "x", "pattern": 1}),
        ("assert.matches", {"value": "x"}),
        ("assert.schema", {"data": 1, "schema": "object"}),
        ("assert.schema", {"data": 1, "schema": {}, "extra": 1}),
    ],
)
def test_invalid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) != []


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (1, 1.0),
        ({"a": [1, 2.0, {"b": None}]}, {"a": [1.0, 2, {"b": None}]}),
        ("200", 200),  # the original compared interpolated strings
        ([True, "false", None], ["true", False, "null"]),
        ("1.5e2", 150),
        ({"b": 1, "a": 2}, {"a": 2, "b": 1}),
    ],
)
async def test_equals_passes(ctx, expected, actual):
    assert await run(ctx, "assert.equals", expected=expected, actual=actual) == {"pass": True}


@pytest.mark.parametrize(
    ("expected", "actual", "path"),
    [
        (1, 2, "$"),
        (True, 1, "$"),
        (0, False, "$"),
        (None, 0, "$"),
        ("200", "200.0", "$"),
        ("abc", ["abc"], "$"),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}, "$.a.b[1]"),
        ({"a": 1}, {"a": 1, "z": 2}, "$.z"),
        ([1, 2], [1], "$[1]"),
        ({"odd key": 1}, {"odd key": 2}, '$["odd key"]'),
    ],
)
async def test_equals_fails_at_the_first_difference(ctx, expected, actual, path):
    err = await fails(ctx, "assert.equals", expected=expected, actual=actual)
    assert err.details == {"expected": expected, "actual": actual, "path": path}
    assert "values differ" in err.message


async def test_equals_message_names_the_differing_parts(ctx):
    err = await fails(ctx, "assert.equals", expected={"items": [{"id": 3}]}, actual={"items": [{"id": 4}]},
                      message="wrong item")
    assert err.message == "wrong item: values differ at $.items[0].id: expected 3, got 4"


async def test_equals_strict_keeps_types_apart(ctx):
    await fails(ctx, "assert.equals", expected="200", actual=200, strict=True)
    assert await run(ctx, "assert.equals", expected=200, actual=200.0, strict=True) == {"pass": True}


@pytest.mark.parametrize(
    ("haystack", "needle"),
    [
        ("hello world", "o w"),
        ("status 200", 200),
        ([1, {"a": [2]}], {"a": [2.0]}),
        (["200"], 200),
        ({"id": 1, "name": "x"}, "name"),
        ({"id": 1, "tags": ["a"], "name": "x"}, {"id": 1.0, "tags": ["a"]}),
    ],
)
async def test_contains_passes(ctx, haystack, needle):
    assert await run(ctx, "assert.contains", haystack=haystack, needle=needle) == {"pass": True}


@pytest.mark.parametrize(
    ("haystack", "needle", "strict"),
    [
        ("hello", "xyz", False),
        ([1, 2], 3, False),
        ([[1, 2]], 1, False),
        (["200"], 200, True),
        ({"id": 1}, "name", False),
        ({"id": 1}, {"id": 2}, False),
        ({"id": 1}, {"id": 1, "x": None}, False),
    ],
)
async def test_contains_fails(ctx, haystack, needle, strict):
    err = await fails(ctx, "assert.contains", haystack=haystack, needle=needle, strict=strict)
    assert err.details == {"expected": needle, "actual": haystack}


async def test_contains_rejects_an_unusable_needle(ctx):
    await fails(ctx, "assert.contains", VALIDATION_ERROR, haystack={"a": 1}, needle=1)


async def test_matches(ctx):
    out = await run(ctx, "assert.matches", value="order-1234 ok", pattern=r"order-(?P<id>\d+)")
    assert out == {"pass": True, "matches": "order-1234", "groups": ["1234"], "named_groups": {"id": "1234"}}
    assert (await run(ctx, "assert.matches", value=204, pattern=r"^2\d\d$"))["matches"] == "204"


async def test_matches_fails_with_pattern_and_value(ctx):
    err = await fails(ctx, "assert.matches", value="abc", pattern=r"^\d+$", message="not a number")
    assert err.details == {"expected": r"^\d+$", "actual": "abc"}
    assert err.message.startswith("not a number: ")


async def test_matches_reads_re2_end_of_text(ctx):
    assert (await run(ctx, "assert.matches", value="ab", pattern=r"b\z"))["pass"] is True
    await fails(ctx, "assert.matches", value="ab\n", pattern=r"b\z")
    # An escaped backslash followed by z is a literal backslash and z, not the anchor.
    assert (await run(ctx, "assert.matches", value="a\\z", pattern=r"a\\z"))["matches"] == "a\\z"


async def test_matches_invalid_pattern(ctx):
    err = await fails(ctx, "assert.matches", VALIDATION_ERROR, value="x", pattern="(")
    assert "invalid regex" in err.message


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name"],
    "additionalProperties": False,
}


async def test_schema_passes(ctx):
    assert await run(ctx, "assert.schema", data={"name": "a", "age": 3}, schema=PERSON) == {"pass": True}
    assert await run(ctx, "assert.schema", data=[1, "x"], schema=True) == {"pass": True}


async def test_schema_failure_lists_every_error_with_its_path(ctx):
    data = {"age": -1, "tags": ["ok", 7], "extra": 1}
    err = await fails(ctx, "assert.schema", data=data, schema=PERSON)
    paths = [(e["path"], e["keyword"]) for e in err.details["errors"]]
    assert [p for p, _ in paths] == sorted(p for p, _ in paths)
    assert sorted(paths) == [("$", "additionalProperties"), ("$", "required"), ("$.age", "minimum"),
                     ("$.tags[1]", "type")]
    assert err.details["error_count"] == 4
    assert err.details["actual"] == data and err.details["expected"] == PERSON
    assert "$.tags[1]" in err.message


async def test_schema_is_2020_12_and_asserts_formats(ctx):
    tuple_schema = {"prefixItems": [{"type": "integer"}], "items": False}
    assert await run(ctx, "assert.schema", data=[1], schema=tuple_schema) == {"pass": True}
    await fails(ctx, "assert.schema", data=[1, 2], schema=tuple_schema)
    await fails(ctx, "assert.schema", data="not-an-email", schema={"type": "string", "format": "email"})


async def test_schema_errors_in_the_schema_itself(ctx):
    await fails(ctx, "assert.schema", VALIDATION_ERROR, data=1, schema={"type": "wat"})
    err = await fails(ctx, "assert.schema", VALIDATION_ERROR, data=1, schema={"$ref": "https://example.com/s.json"})
    assert "not fetched" in err.message

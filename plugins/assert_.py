"""Assertion actions (assert.equals, assert.contains, assert.matches, assert.schema): `{pass: true}` or
ASSERTION_FAILED with `details.expected` and `details.actual`.

Equality is JSON equality: numbers compare by value (1 == 1.0), booleans never equal numbers, and lists and
objects compare deeply. The original interpolated every `${{...}}` into a string, so its workflows compare
`"200"` with a status code; unless `strict` is set a string equals a number, boolean or null whose JSON text
it holds ("200" == 200, "true" == true). `matches` uses Python's `re` (see its schema for the differences
from the original's RE2); `schema` uses JSON Schema 2020-12 (or the draft a `$schema` names).
"""

from __future__ import annotations

import json
import re
from typing import Any

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.errors import ASSERTION_FAILED, VALIDATION_ERROR

JSON = dict[str, Any]

MAX_SCHEMA_ERRORS = 100
_SHOWN_CHARS = 200
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCALARS = (int, float, bool, type(None))

_MESSAGE = {"type": "string", "description": "Replaces the start of the failure message (the reason follows)."}
_STRICT = {"type": "boolean", "default": False,
           "description": "Compare types exactly: a string never equals a number, boolean or null."}


def _params(required: list[str], **properties: JSON) -> JSON:
    return {"type": "object", "properties": {**properties, "message": _MESSAGE}, "required": required,
            "additionalProperties": False}


EQUALS_SCHEMA = _params(["expected", "actual"], expected={"description": "The value wanted (any JSON)."},
                        actual={"description": "The value to check (any JSON)."}, strict=_STRICT)
CONTAINS_SCHEMA = _params(
    ["haystack", "needle"],
    haystack={"type": ["string", "array", "object"],
              "description": "A string (substring search), an array (an element equal to `needle`) or an object "
              "(`needle` a string: a key; `needle` an object: every key with an equal value)."},
    needle={"description": "What to look for; in a string, a non-string needle is searched as its JSON text."},
    strict=_STRICT,
)
MATCHES_SCHEMA = _params(
    ["value", "pattern"],
    value={"description": "The text to search; a non-string value is searched as its JSON text."},
    pattern={"type": "string", "description": "Regular expression, searched anywhere in `value` (anchor it with ^ "
             "and \\Z for a whole match). Python `re` syntax: RE2's syntax works except \\p{...} classes and "
             "(?U); `\\z` is read as `\\Z`; `$` also matches before a final newline; backreferences and "
             "lookaround work here but not in the original."},
)
SCHEMA_SCHEMA = _params(
    ["data", "schema"],
    data={"description": "The value to validate (any JSON)."},
    schema={"type": ["object", "boolean"], "description": "JSON Schema; 2020-12 unless `$schema` names another "
            "draft. `format` is asserted (email, date, ipv4, uuid, ...); remote `$ref`s are not fetched."},
)


def _shown(value: Any) -> str:
    text = repr(value) if value is MISSING else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _scalar_from_text(text: str) -> tuple[bool, Any]:
    try:
        value = json.loads(text, parse_constant=lambda _: text)
    except ValueError:
        return False, None
    return isinstance(value, _SCALARS) and not isinstance(value, str), value


class _Missing:
    """Stands for the absent side of a key only one object has."""

    def __repr__(self) -> str:
        return "nothing (missing)"


MISSING = _Missing()
Diff = tuple[str, Any, Any]


def difference(expected: Any, actual: Any, *, strict: bool = False, path: str = "$") -> Diff | None:
    """(JSON path, expected part, actual part) of the first place two values differ, or None when equal."""
    here = (path, expected, actual)
    if not strict and isinstance(expected, str) != isinstance(actual, str):
        return _loose(expected, actual, path)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return None if type(expected) is type(actual) and expected == actual else here
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return None if expected == actual else here
    if isinstance(expected, dict) and isinstance(actual, dict):
        only_one = sorted(expected.keys() ^ actual.keys())
        if only_one:
            key = only_one[0]
            return _child(path, key), expected.get(key, MISSING), actual.get(key, MISSING)
        for key in expected:
            found = difference(expected[key], actual[key], strict=strict, path=_child(path, key))
            if found is not None:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for index in range(max(len(expected), len(actual))):
            if index >= len(expected) or index >= len(actual):
                return (_child(path, index), expected[index] if index < len(expected) else MISSING,
                        actual[index] if index < len(actual) else MISSING)
            found = difference(expected[index], actual[index], strict=strict, path=_child(path, index))
            if found is not None:
                return found
        return None
    return None if type(expected) is type(actual) and expected == actual else here


def _loose(expected: Any, actual: Any, path: str) -> Diff | None:
    """A string against a scalar: equal when the string is that scalar's JSON text ("200" and 200)."""
    text, other = (expected, actual) if isinstance(expected, str) else (actual, expected)
    if isinstance(other, _SCALARS):
        ok, value = _scalar_from_text(text)
        if ok and difference(value, other, strict=True) is None:
            return None
    return path, expected, actual


def _fail(params: JSON, reason: str, **details: Any) -> ActionError:
    message = params.get("message") or "assertion failed"
    return ActionError(f"{message}: {reason}", code=ASSERTION_FAILED, details=details)


async def equals(params: JSON, ctx: ActionContext) -> JSON:
    """Pass when `actual` equals `expected` as JSON."""
    expected, actual = params["expected"], params["actual"]
    found = difference(expected, actual, strict=params.get("strict", False))
    if found is None:
        return {"pass": True}
    where, want, got = found
    at = "" if where == "$" else f" at {where}"
    raise _fail(params, f"values differ{at}: expected {_shown(want)}, got {_shown(got)}",
                expected=expected, actual=actual, path=where)


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


async def contains(params: JSON, ctx: ActionContext) -> JSON:
    """Pass when `haystack` contains `needle`: substring, array element or object key/subset."""
    haystack, needle, strict = params["haystack"], params["needle"], params.get("strict", False)
    if isinstance(haystack, str):
        found, what = _json_text(needle) in haystack, "the string to contain"
    elif isinstance(haystack, list):
        found = any(difference(needle, item, strict=strict) is None for item in haystack)
        what = "the array to have an element equal to"
    elif isinstance(haystack, dict) and isinstance(needle, str):
        found, what = needle in haystack, "the object to have the key"
    elif isinstance(haystack, dict) and isinstance(needle, dict):
        found = all(k in haystack and difference(v, haystack[k], strict=strict) is None for k, v in needle.items())
        what = "the object to include"
    elif isinstance(haystack, dict):
        raise ActionError("assert.contains: in an object, needle must be a key (string) or an object",
                          code=VALIDATION_ERROR)
    else:
        raise ActionError(f"assert.contains: haystack must be a string, array or object, not {_shown(haystack)}",
                          code=VALIDATION_ERROR)
    if found:
        return {"pass": True}
    raise _fail(params, f"expected {what} {_shown(needle)}; got {_shown(haystack)}", expected=needle, actual=haystack)


def _from_re2(pattern: str) -> str:
    """Rewrite RE2's `\\z` (end of text) to Python's `\\Z`, leaving escaped backslashes alone."""
    return re.sub(r"\\(.)", lambda m: "\\Z" if m.group(1) == "z" else m.group(0), pattern, flags=re.DOTALL)


async def matches(params: JSON, ctx: ActionContext) -> JSON:
    """Pass when `pattern` matches somewhere in `value`; output the match and its groups."""
    pattern, value = params["pattern"], _json_text(params["value"])
    try:
        compiled = re.compile(_from_re2(pattern))
    except re.error as exc:
        raise ActionError(f"assert.matches: invalid regex pattern {pattern!r}: {exc}", code=VALIDATION_ERROR) from exc
    match = compiled.search(value)
    if match is None:
        raise _fail(params, f"{_shown(value)} does not match /{pattern}/", expected=pattern, actual=value)
    return {"pass": True, "matches": match.group(0), "groups": list(match.groups()),
            "named_groups": match.groupdict()}


async def schema(params: JSON, ctx: ActionContext) -> JSON:
    """Pass when `data` is valid against `schema`; otherwise list every error with its path."""
    import jsonschema
    from referencing.exceptions import Unresolvable

    schema_doc, data = params["schema"], params["data"]
    cls = jsonschema.validators.validator_for(schema_doc, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema_doc)
        validator = cls(schema_doc, format_checker=cls.FORMAT_CHECKER)
        found = sorted(validator.iter_errors(data), key=lambda e: (e.json_path, e.message))
    except jsonschema.SchemaError as exc:
        raise ActionError(f"assert.schema: schema is invalid: {exc.message}", code=VALIDATION_ERROR) from exc
    except Unresolvable as exc:
        raise ActionError(f"assert.schema: cannot resolve a $ref ({exc}); remote schemas are not fetched",
                          code=VALIDATION_ERROR) from exc
    if not found:
        return {"pass": True}
    errors = [{"path": e.json_path, "message": e.message, "keyword": e.validator,
               "schema_path": "/" + "/".join(str(p) for p in e.absolute_schema_path)}
              for e in found[:MAX_SCHEMA_ERRORS]]
    listed = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    raise _fail(params, f"{len(found)} schema error(s): {listed}{more}", expected=schema_doc, actual=data,
                errors=errors, error_count=len(found))


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide assert.equals, assert.contains, assert.matches and assert.schema."""
    passed = {"type": "object", "properties": {"pass": {"const": True}}}
    return [
        ActionSpec("assert.equals", "Assert that `actual` equals `expected` as JSON (1 == 1.0, deep; \"200\" == 200 "
                   "unless strict); output `{pass: true}`, else ASSERTION_FAILED with the path of the first "
                   "difference.", EQUALS_SCHEMA, equals, output_schema=passed),
        ActionSpec("assert.contains", "Assert that a string contains a substring, an array an equal element, or an "
                   "object a key (or every key/value of an object needle); output `{pass: true}`.",
                   CONTAINS_SCHEMA, contains, output_schema=passed),
        ActionSpec("assert.matches", "Assert that a regular expression matches somewhere in `value`; output "
                   "`{pass: true, matches, groups, named_groups}`.", MATCHES_SCHEMA, matches,
                   output_schema={"type": "object", "properties": {
                       "pass": {"const": True}, "matches": {"type": "string"}, "groups": {"type": "array"},
                       "named_groups": {"type": "object"}}}),
        ActionSpec("assert.schema", "Assert that `data` is valid against a JSON Schema (2020-12 by default); "
                   "output `{pass: true}`, else ASSERTION_FAILED listing each error's path and message.",
                   SCHEMA_SCHEMA, schema, output_schema=passed),
    ]

"""The Expr language: a table of expressions with exact results, and bad ones with their errors and positions."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from opcode_core.engine.expressions import go_float_text as go_float
from opcode_core.errors import EXECUTION_ERROR, VALIDATION_ERROR, ExpressionError
from opcode_plugins import expr_lang

ENV: dict[str, Any] = {
    "xs": [
        {"name": "ann", "score": 5, "tags": ["a", "b"]},
        {"name": "bob", "score": 1, "tags": []},
        {"name": "cy", "score": 4, "tags": ["b"]},
    ],
    "nums": [3, 1, 4, 1, 5],
    "n": 3,
    "f": 2.5,
    "s": "  Hello World ",
    "name": "Ada",
    "empty": [],
    "none": None,
    "user": {"profile": {"email": "ada@example.com"}, "roles": ["admin", "dev"], "age": 36},
    "steps": {"fetch": {"status_code": 200, "body": {"items": [{"score": 2}, {"score": 7}, {"score": 3}]}}},
    "inputs": {"threshold": 3},
}


def same(actual: Any, expected: Any) -> bool:
    """Equal and of the same types all the way down (so 3 is not 3.0 and 1 is not True)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected, strict=True))
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(same(actual[k], v) for k, v in expected.items())
    return bool(actual == expected)


CASES = [
    # literals
    ("42", 42), ("0x2A", 42), ("0o52", 42), ("0b101010", 42), ("1_000_000", 1000000), ("0.5", 0.5), (".5", 0.5),
    ("1e3", 1000.0), ("2.5e-1", 0.25), ('"double"', "double"), ("'single'", "single"), ("`raw\\n`", "raw\\n"),
    ("'tab\\tnl\\n'", "tab\tnl\n"), ("'\\u00e9\\x41\\101'", "éAA"), ("true", True), ("false", False), ("nil", None),
    ("[1, 'a', nil]", [1, "a", None]), ("[1, 2,]", [1, 2]), ("{a: 1, 'b c': 2, 3: 4}", {"a": 1, "b c": 2, "3": 4}),
    ("{(name): 1}", {"Ada": 1}), ("{}", {}), ("[]", []),
    # arithmetic: int stays int, / is float division, ** is float
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("7 / 2", 3.5), ("6 / 3", 2.0), ("7 % 3", 1), ("-7 % 3", -1),
    ("2 ** 10", 1024.0), ("2 ^ 3", 8.0), ("2 ** 3 ** 2", 512.0), ("-2 ** 2", -4.0), ("n * f", 7.5), ("10 - 2 - 3", 5),
    ("-n", -3), ("+n", 3), ("1 + 2.0", 3.0), ("'a' + 'b' + name", "abAda"),
    # comparison and equality
    ("1 == 1.0", True), ("1 != 2", True), ("'a' < 'b'", True), ("n >= 3", True), ("1 < n < 5", True),
    ("1 < n < 2", False), ("5 > n > 1 >= 0", True), ("[1, 2] == [1.0, 2]", True), ("{a: [1]} == {a: [1]}", True),
    ("{a: 1} == {a: 2}", False), ("nil == nil", True), ("none == nil", True), ("0 == nil", False),
    ("true == 1", False), ("'1' == 1", False), ("1 < 2 == true", True),
    # logic
    ("true and false", False), ("true && true", True), ("false or true", True), ("false || false", False),
    ("not false", True), ("!true", False), ("not (1 > 2)", True), ("!(n == 3) || n > 2", True),
    ("false and nope", False), ("true or nope", True), ("not not true", True), ("!!false", False),
    # membership, strings, regex
    ("2 in [1, 2, 3]", True), ("2.0 in [1, 2]", True), ("'admin' in user.roles", True), ("'age' in user", True),
    ("'x' not in user", True), ("5 not in nums", False), ("1 in none", False), ("'World' contains 'orl'", True),
    ("s contains 'Hello'", True), ("name startsWith 'A'", True), ("name endsWith 'z'", False),
    ("name not startsWith 'B'", True), ("'abc' matches '^a.c$'", True), ("'xabcx' matches 'b'", True),
    ("user.profile.email matches '@example\\\\.com$'", True), ("'abc' not matches '\\\\d'", True),
    # member, index, slice, optional chaining, nil coalescing
    ("user.profile.email", "ada@example.com"), ("user['profile']['email']", "ada@example.com"),
    ("steps.fetch.status_code", 200), ("steps['fetch'].body.items[1].score", 7), ("xs[0].name", "ann"),
    ("xs[-1].name", "cy"), ("nums[1:3]", [1, 4]), ("nums[:2]", [3, 1]), ("nums[3:]", [1, 5]), ("nums[-2:]", [1, 5]),
    ("nums[:]", [3, 1, 4, 1, 5]), ("nums[4:2]", []), ("nums[1:100]", [1, 4, 1, 5]), ("name[1:]", "da"),
    ("name[0]", "A"), ("user.missing", None), ("user.missing ?? 'default'", "default"), ("none?.a", None),
    ("none?.a.b.c", None), ("none?.[0]", None), ("user?.profile?.email", "ada@example.com"),
    ("user.nobody?.name", None), ("none ?? nil ?? 3", 3), ("0 ?? 1", 0), ("false ?? true", False),
    ("(none ?? 1) + 1", 2), ("n + (none ?? 1)", 4), ("$env.n", 3), ("$env['name']", "Ada"), ("'n' in $env", True),
    # ternary, elvis, if/else, let, sequences, comments
    ("n > 2 ? 'big' : 'small'", "big"), ("n > 5 ? 'big' : n > 2 ? 'mid' : 'small'", "mid"), ("false ?: 7", 7),
    ("true ?: 7", True), ("if n > 2 { 'y' } else { 'n' }", "y"), ("if n > 5 { 1 } else if n > 2 { 2 } else { 3 }", 2),
    ("let y = n * 2; y + 1", 7), ("let a = 1; let b = a + 1; a + b", 3), ("let n = 10; n", 10),
    ("let v = user.profile; v.email", "ada@example.com"), ("1; 2; 3", 3), ("(let t = 2; t * t) + 1", 5),
    ("1 + /* inline */ 2 // trailing", 3), ("n;", 3),
    # ranges
    ("1..3", [1, 2, 3]), ("3..1", []), ("-1..1", [-1, 0, 1]), ("len(1..100)", 100), ("2 in 1..3", True),
    # closures with #, .field, #index, #acc
    ("filter(xs, {.score > 3})", [ENV["xs"][0], ENV["xs"][2]]), ("filter(xs, .score > 3) | map(.name)", ["ann", "cy"]),
    ("map(xs, {.name})", ["ann", "bob", "cy"]), ("map(xs, #.score * 2)", [10, 2, 8]),
    ("map(nums, # + 1)", [4, 2, 5, 2, 6]),
    ("map(xs, #index)", [0, 1, 2]), ("map(0..9, {# % 2 == 0}) | count()", 5), ("count(xs, .score > 3)", 2),
    ("count([true, false, true])", 2), ("any(xs, .score > 4)", True), ("any(empty, # > 0)", False),
    ("all(xs, .score > 0)", True), ("all(empty, # > 0)", True), ("none(xs, .score > 10)", True),
    ("one(xs, .score == 5)", True), ("one(nums, # == 1)", False), ("sum(nums)", 14), ("sum(xs, .score)", 10),
    ("sum([1, 2.5])", 3.5), ("sum(empty)", 0), ("min(nums)", 1), ("max(nums)", 5), ("max(1, 7, 3)", 7),
    ("min(2.5, 1)", 1), ("max(empty)", None), ("max([1, [9, 2]])", 9), ("mean([1, 2, 3, 4])", 2.5),
    ("median([3, 1, 2])", 2.0), ("len(xs)", 3), ("len('héllo')", 5), ("len(user)", 3),
    ("find(xs, .score < 5).name", "bob"), ("findIndex(xs, .score < 5)", 1), ("findLast(nums, # == 1)", 1),
    ("findLastIndex(nums, # == 1)", 3), ("find(xs, .score > 9)", None), ("findIndex(xs, .score > 9)", -1),
    ("groupBy(xs, .score > 3)[true] | map(.name)", ["ann", "cy"]),
    ("sortBy(xs, .score) | map(.name)", ["bob", "cy", "ann"]),
    ("sortBy(xs, .name, 'desc')[0].name", "cy"), ("reduce(1..4, #acc + #)", 10), ("reduce(1..4, #acc * #, 2)", 48),
    ("reduce(xs, #acc + len(.tags), 0)", 3), ("reduce(empty, #acc + #)", None),
    ("filter(steps['fetch'].body.items, {.score >= inputs.threshold})", [{"score": 7}, {"score": 3}]),
    ("filter(xs, { let x = #; any(x.tags, # == 'b') }) | map(.name)", ["ann", "cy"]),
    ("map(xs, { map(.tags, upper(#)) })", [["A", "B"], [], ["B"]]), ("filter(xs, len(.tags) > 0) | len()", 2),
    ("map(filter(nums, # > 2), # * 10)", [30, 40, 50]), ("xs | map(.score) | sum()", 10),
    # string functions and pipes
    ("upper('abc')", "ABC"), ("lower(name)", "ada"), ("trim(s)", "Hello World"), ("trim('__x__', '_')", "x"),
    ("trimPrefix('HelloWorld', 'Hello')", "World"), ("trimSuffix('HelloWorld', 'World')", "Hello"),
    ("split('a,b,c', ',')", ["a", "b", "c"]), ("split('a,b,c', ',', 2)", ["a", "b,c"]),
    ("splitAfter('a,b,c', ',')", ["a,", "b,", "c"]), ("replace('a-b-c', '-', '+')", "a+b+c"),
    ("repeat('ab', 3)", "ababab"), ("join(['a', 'b'], '-')", "a-b"), ("join(['a', 'b'])", "ab"),
    ("indexOf('apple pie', 'pie')", 6), ("lastIndexOf('apple pie apple', 'apple')", 10),
    ("hasPrefix(name, 'Ad')", True), ("hasSuffix(name, 'x')", False),
    ("s | trim() | lower() | split(' ')", ["hello", "world"]), ("name | upper()", "ADA"),
    ("toBase64('Hello World')", "SGVsbG8gV29ybGQ="), ("fromBase64('SGVsbG8gV29ybGQ=')", "Hello World"),
    # conversions and other builtins
    ("int('42')", 42), ("int(3.9)", 3), ("float('1.5')", 1.5), ("float(2)", 2.0), ("string(42)", "42"),
    ("string(2.0)", "2"), ("string(nil)", "<nil>"), ("string([1, 'a'])", "[1 a]"), ("string(true)", "true"),
    ("type(1)", "int"), ("type(1.5)", "float"), ("type('')", "string"), ("type([])", "array"), ("type({})", "map"),
    ("type(nil)", "nil"), ("type(true)", "bool"), ("abs(-3)", 3), ("abs(-2.5)", 2.5), ("ceil(1.2)", 2.0),
    ("floor(1.8)", 1.0), ("round(2.5)", 3.0), ("round(-2.5)", -3.0), ("round(2)", 2.0),
    ("toJSON({b: 2.0, a: [1, 'x']})", '{\n  "a": [\n    1,\n    "x"\n  ],\n  "b": 2\n}'),
    ("fromJSON('{\"a\": [1, 2]}').a[1]", 2), ("first(nums)", 3), ("last(nums)", 5), ("first(empty)", None),
    ("get(nums, 1)", 1), ("get(nums, 10)", None), ("get(user, 'age')", 36), ("take(nums, 2)", [3, 1]),
    ("keys({a: 1, b: 2})", ["a", "b"]), ("values({a: 1, b: 2})", [1, 2]), ("toPairs({a: 1})", [["a", 1]]),
    ("fromPairs([['a', 1], ['b', 2]])", {"a": 1, "b": 2}), ("reverse(nums)", [5, 1, 4, 1, 3]),
    ("uniq(nums)", [3, 1, 4, 5]), ("concat([1], [2, 3], [])", [1, 2, 3]), ("flatten([1, [2, [3, 4]]])", [1, 2, 3, 4]),
    ("sort(nums)", [1, 1, 3, 4, 5]), ("sort(['b', 'a'], 'desc')", ["b", "a"]), ("bitand(0b1010, 0b1100)", 8),
    ("bitor(0b1010, 0b1100)", 14), ("bitxor(0b1010, 0b1100)", 6), ("bitnot(0b1010)", -11), ("bitshl(1, 4)", 16),
    ("bitshr(16, 2)", 4), ("bitushr(-5, 2)", 4611686018427387902), ("bitnand(0b1010, 0b1100)", 2),
    # keywords stay names when they are only a prefix
    ("{order: 1, notes: 2, android: 3}.notes", 2), ("user.age > 30 and user.age < 40", True),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 80


@pytest.mark.parametrize(("source", "expected"), CASES, ids=[c[0] for c in CASES])
def test_expression(source, expected):
    result = expr_lang.evaluate(source, ENV)
    assert same(result, expected), f"{source!r} gave {result!r} ({type(result).__name__})"


@pytest.mark.parametrize(
    ("source", "position", "fragment"),
    [
        ("1 +", 3, "unexpected end of expression"),
        ("(1 + 2", 6, "unexpected end of expression"),
        ("1 + * 2", 4, "unexpected token '*'"),
        ("1 2", 2, "unexpected token '2'"),
        ("x @ y", 2, "unexpected character '@'"),
        ("'open", 0, "unexpected character"),
        ("f(1,, 2)", 4, "unexpected token ','"),
        ("", 0, "empty expression"),
        ("a ?? b + c", 7, "coalesce expressions (??) cannot be mixed"),
        ("a ?? b == c", 7, "cannot be mixed"),
        ("xs | a ?? b", None, None),
        ("foo(1)", 0, "unknown function foo"),
        ("n + uper(name)", 4, "did you mean upper?"),
        ("len()", 0, "invalid number of arguments for len (expected 1, got 0)"),
        ("filter(xs)", 0, "invalid number of arguments for filter (expected 2, got 1)"),
        ("#", 0, "only be used inside a predicate"),
        ("1 + .score", 4, "only be used inside a predicate"),
        ("{.a}", 0, "predicate {…} can only be an argument"),
        ("filter(xs, #acc > 1)", 11, "#acc can only be used inside the predicate of reduce()"),
        ("map(xs, #item)", 8, "unknown pointer #item"),
        ("'a' matches '['", 12, "invalid regular expression"),
        ("let x = 1", 0, "must be followed by an expression"),
        ("user.name()", 5, "unknown method name()"),
        ("99999999999999999999", 0, "integer literal is too large"),
        ("'bad \\q'", 5, "invalid escape sequence \\q"),
        ("if n { 1 }", 10, "unexpected end of expression"),
    ],
)
def test_syntax_errors_name_the_position(source, position, fragment):
    with pytest.raises(ExpressionError) as caught:
        expr_lang.compile(source)
    error = caught.value
    assert error.code == VALIDATION_ERROR
    assert error.engine == "expr" and error.expression == source
    if position is not None:
        assert error.position == position, error.message
        assert f"at position {position}" in error.message
        assert fragment in error.message
    assert repr(source) in error.message


@pytest.mark.parametrize(
    ("source", "position", "fragment"),
    [
        ("nope", 0, "unknown name nope"),
        ("n + nope", 4, "unknown name nope"),
        ("none.foo", 4, "cannot fetch foo from nil (use ?. to allow nil)"),
        ("user.nobody.name", 11, "cannot fetch name from nil"),
        ("(none?.a).b", 9, "cannot fetch b from nil"),
        ("xs[10]", 2, "index out of range: 10 (array length is 3)"),
        ("xs.name", 2, "cannot fetch name from array"),
        ("n.x", 1, "cannot fetch x from int"),
        ("1 + 'a'", 2, "invalid operation: int + string"),
        ("[1] + [2]", 4, "concat()"),
        ("1 / 0", 2, "division by zero"),
        ("7 % 0", 2, "integer divide by zero"),
        ("7.5 % 2", 4, "modulo needs integers"),
        ("'a' < 1", 4, "invalid operation: string < int"),
        ("-name", 0, "invalid operation: -string"),
        ("not 1", 0, "not needs a bool, got int"),
        ("n and true", 2, "and needs a bool, got int"),
        ("none ? 1 : 2", 5, "needs a bool, got nil"),
        ("filter(xs, .score)", 0, "the predicate of filter() needs a bool, got int"),
        ("filter(user, true)", 0, "cannot iterate over map"),
        ("map(none, #)", 0, "cannot iterate over nil"),
        ("len(1)", 0, "invalid argument for len (type int)"),
        ("upper(1)", 0, "upper() needs a string, got int"),
        ("int('x')", 0, "invalid operation: int(x)"),
        ("1..'a'", 1, "a range needs integers"),
        ("1..2000000", 1, "memory budget exceeded"),
        ("'a' in 'abc'", 4, "for substrings use `contains`"),
        ("1 contains 'a'", 2, "contains needs strings, got int"),
        ("sort(nums, 'up')", 0, 'order must be "asc" or "desc"'),
        ("sort([1, 'a'])", 0, "invalid operation"),
        ("fromJSON('{')", 0, "fromJSON"),
        ("2 ** 100000", 2, "invalid operation"),
    ],
)
def test_runtime_errors_name_the_expression_and_position(source, position, fragment):
    program = expr_lang.compile(source)
    with pytest.raises(ExpressionError) as caught:
        expr_lang.run(program, ENV)
    error = caught.value
    assert error.code == EXECUTION_ERROR
    assert error.position == position, error.message
    assert fragment in error.message
    assert repr(source) in error.message
    assert error.to_dict()["details"] == {"expression": source, "engine": "expr", "position": position}


def test_short_circuit_skips_errors_on_the_other_side():
    assert expr_lang.evaluate("none == nil or none.x", ENV) is True
    assert expr_lang.evaluate("none != nil and none.x", ENV) is False
    assert expr_lang.evaluate("n > 0 ? 'ok' : none.x", ENV) == "ok"
    assert expr_lang.evaluate("'set' ?? none.x", ENV) == "set"


def test_a_chain_is_evaluated_once_per_operand():
    # `1 < n < 10` must read the middle operand once; a counting env would show a second read.
    reads = []

    class Counting(dict):
        def __getitem__(self, key):
            reads.append(key)
            return super().__getitem__(key)

    assert expr_lang.run(expr_lang.compile("1 < n < 10"), Counting(ENV)) is True
    assert reads == ["n"]


def test_compile_is_cached_and_bounded():
    first = expr_lang.compile("n + 41")
    assert expr_lang.compile("n + 41") is first
    assert expr_lang.compile.cache_info().maxsize == expr_lang.CACHE_SIZE
    assert expr_lang.run(first, {"n": 1}) == 42
    assert expr_lang.run(first, {"n": 2}) == 43


def test_compile_errors_are_not_cached_as_programs():
    for _ in range(2):
        with pytest.raises(ExpressionError):
            expr_lang.compile("1 +")


def test_references_are_the_free_top_level_names():
    assert expr_lang.references("steps['a'].x > inputs.min") == {"steps", "inputs"}
    assert expr_lang.references("let t = context.n; t + workflow.x") == {"context", "workflow"}
    assert expr_lang.references("filter(data, {.score > limit})") == {"data", "limit"}
    assert expr_lang.references("len('x') + 1") == set()
    assert expr_lang.references("'a' in $env") == {"$env"}


def test_results_are_fresh_values():
    program = expr_lang.compile("[1, 2]")
    first = expr_lang.run(program, {})
    first.append(3)
    assert expr_lang.run(program, {}) == [1, 2]


def test_programs_are_shared_safely_between_threads():
    program = expr_lang.compile("sum(map(1..k, # * k))")
    results: dict[int, Any] = {}

    def work(k: int) -> None:
        for _ in range(200):
            results[k] = expr_lang.run(program, {"k": k})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {k: k * k * (k + 1) // 2 for k in range(1, 9)}


def test_env_may_be_any_mapping():
    from types import MappingProxyType

    assert expr_lang.evaluate("a + 1", MappingProxyType({"a": 1})) == 2


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1"), (2.5, "2.5"), (123456.0, "123456"), (1e6, "1e+06"), (1234567.0, "1.234567e+06"),
     (0.0001, "0.0001"), (0.00001, "1e-05"), (-0.5, "-0.5"), (0.1 + 0.2, "0.30000000000000004")],
)
def test_floats_print_as_go_does(value, text):
    assert go_float(value) == text

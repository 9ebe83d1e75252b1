"""Time compile and evaluate for both CEL implementations (and jq) on the expressions workflows use.

Run: `python benchmarks/expressions.py` (about a minute; `--quick` stops at 1,000 elements). Evaluation
times include turning the activation into the library's values, as a run pays for that on every call.
The table is what chose the default CEL implementation (see the `opcode_plugins.expressions.cel` docstring).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from opcode_plugins.expressions import cel, jq

IMPLEMENTATIONS = ("cel-python", "common-expression-language")
BUDGET_S = 0.3  # time spent per measurement; slow cases run once


def per_call_us(call: Callable[[], Any]) -> float:
    """Microseconds per call, repeating until the budget is spent (at least once, after one warm-up)."""
    call()
    runs, start = 0, time.perf_counter()
    while True:
        call()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= BUDGET_S:
            return elapsed / runs * 1e6


def entries(n: int) -> list[dict[str, Any]]:
    """A file listing as a step's output would carry it."""
    return [{"name": f"file-{i}.txt", "size": i % 100, "dir": i % 10 == 0} for i in range(n)]


def cases(sizes: list[int]) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(label, CEL source, jq source, activation) rows."""
    fetch = {"status_code": 200, "headers": {"content-type": "application/json"}, "body": {"ok": True, "id": 7}}
    rows: list[tuple[str, str, str | None, dict[str, Any]]] = [
        ("step output comparison", "steps['fetch'].status_code == 200", '.steps["fetch"].status_code == 200',
         {"steps": {"fetch": fetch}}),
        ("inputs.env == 'prod'", 'inputs.env == "prod"', '.inputs.env == "prod"',
         {"inputs": {"env": "prod", "region": "eu"}}),
    ]
    for n in [10, 1000]:
        listing = {"steps": {"list": {"entries": entries(n)}}}
        rows.append((f"size() > 0, {n}", "size(steps['list'].entries) > 0",
                     '(.steps["list"].entries | length) > 0', listing))
        rows.append((f"exists(), {n}", f"steps['list'].entries.exists(e, e.name == 'file-{n - 1}.txt')",
                     f'any(.steps["list"].entries[]; .name == "file-{n - 1}.txt")', listing))
    for n in sizes:
        listing = {"steps": {"list": {"entries": entries(n)}}}
        rows.append((f"for_each over a path, {n}", "steps['list'].entries", '.steps["list"].entries', listing))
        rows.append((f"map(), {n}", "steps['list'].entries.map(e, e.size)",
                     '[.steps["list"].entries[] | .size]', listing))
        rows.append((f"filter(), {n}", "steps['list'].entries.filter(e, e.size > 50)",
                     '[.steps["list"].entries[] | select(.size > 50)]', listing))
    return rows


def measure_compile(implementation: str, source: str) -> float:
    """Microseconds to compile, with the shared analysis cache cleared each time."""
    engine = cel.make_engine(implementation)

    def compile_once() -> None:
        cel.analyse.cache_clear()
        engine.compile(source)

    return per_call_us(compile_once)


def measure_evaluate(implementation: str, source: str, activation: dict[str, Any]) -> float:
    """Microseconds per evaluation of a compiled expression."""
    engine = cel.make_engine(implementation)
    compiled = engine.compile(source)
    return per_call_us(lambda: engine.evaluate(compiled, activation))


def fmt(us: float) -> str:
    """A duration in µs, ms or s."""
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.1f} µs"


def main(argv: list[str]) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="comprehensions over 100 and 1,000 elements only")
    args = parser.parse_args(argv)
    sizes = [100, 1000] if args.quick else [100, 1000, 5000]
    header = ["expression", "cel-python compile", "cel-python eval", "cel-rust compile", "cel-rust eval", "jq eval"]
    widths = [30, 19, 16, 17, 14, 10]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for label, source, jq_source, activation in cases(sizes):
        cells = [label]
        for implementation in IMPLEMENTATIONS:
            cells.append(fmt(measure_compile(implementation, source)))
            cells.append(fmt(measure_evaluate(implementation, source, activation)))
        if jq_source is not None:
            program = jq.compile_jq(jq_source)
            cells.append(fmt(per_call_us(lambda p=program, a=activation: jq.evaluate_jq(p, a))))
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""`make bench`: opcode against floor A (asyncio), floor B (asyncio + batched SQLite) and DBOS, in one run.

Usage: python -m benchmarks.run [--quick] [--json PATH] [--no-dbos]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import micro
from benchmarks.contenders import durable, in_memory, make_dbos, temp_home
from benchmarks.floors import FloorB, floor_a
from benchmarks.shapes import SHAPES, Shape


async def timed_runs(run: Any, shape: Shape, copies: int, iterations: int) -> list[float]:
    """Seconds per iteration, each iteration running `copies` workflows of the shape at once."""
    for _ in range(2):  # warm caches, compiled expressions, connections
        await asyncio.gather(*(run(shape) for _ in range(copies)))
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await asyncio.gather(*(run(shape) for _ in range(copies)))
        samples.append(time.perf_counter() - started)
    return samples


def iterations_for(shape: Shape, copies: int, quick: bool) -> int:
    """Fewer iterations for the big shapes."""
    size = len(shape) * copies
    base = 3 if quick else (15 if size >= 300 else 40)
    return base


async def bench_shapes(quick: bool, use_dbos: bool) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Median seconds per shape and contender."""
    results: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    checks: dict[str, dict[str, int]] = {}
    floor_b = FloorB(temp_home() / "floor_b.db")
    dbos = make_dbos(temp_home()) if use_dbos else "skipped (--no-dbos or --quick)"
    if isinstance(dbos, str):
        notes["dbos"] = dbos
    async with in_memory(temp_home()) as memory, durable(temp_home()) as disk:
        for name, (shape, copies) in SHAPES.items():
            n = iterations_for(shape, copies, quick)
            row = {
                "floor_a": statistics.median(await timed_runs(floor_a, shape, copies, n)),
                "floor_b": statistics.median(await timed_runs(floor_b.run, shape, copies, n)),
                "opcode_memory": statistics.median(await timed_runs(memory.run, shape, copies, n)),
                "opcode_durable": statistics.median(await timed_runs(disk.run, shape, copies, n)),
            }
            if not isinstance(dbos, str):
                row["dbos"] = statistics.median(await timed_runs(dbos.run, shape, copies, max(3, n // 4)))
            results[name] = row
            checks[name] = await verify(disk, floor_b, shape)
            print(f"  measured {name}", file=sys.stderr)
    floor_b.close()
    if not isinstance(dbos, str):
        dbos.close()
    notes["checks"] = json.dumps(checks)
    return results, notes


async def verify(disk: Any, floor_b: FloorB, shape: Shape) -> dict[str, int]:
    """What one run of each durable contender really wrote: 2N+2 events, N completed step states."""
    result = await disk.run(shape)
    store = disk.runtime.store
    events = store.count_events(result["workflow_id"])
    states = store.get_step_states(result["workflow_id"])
    return {"steps": len(shape), "opcode_events": events,
            "opcode_completed_steps": sum(s["status"] == "completed" for s in states.values()),
            "floor_b_events": await floor_b.run(shape)}


async def scale_curve(quick: bool) -> dict[str, float]:
    """Cost of a run as history grows: early vs late runs of one template; early vs late steps of one run."""
    from benchmarks.shapes import definition, parallel
    from opcode_core import service

    prior = 500 if quick else 10_000
    out: dict[str, float] = {}
    async with durable(temp_home()) as disk:
        shape = parallel(10)
        early = [await _timed(disk.run(shape)) for _ in range(20)]
        for _ in range(prior):
            await disk.run(shape)
        late = [await _timed(disk.run(shape)) for _ in range(20)]
        out["run_10_steps_early_s"] = statistics.median(early)
        out[f"run_10_steps_after_{prior}_runs_s"] = statistics.median(late)
        # One run of 2,500 loop iterations (~7,500 events): per-iteration cost at its start and at its end.
        items = 400 if quick else 2_500
        loop = {"steps": [{"id": "each", "type": "loop", "config": {"over": list(range(items)),
                                                                    "body": definition({"b": []})["steps"]}}]}
        await service.define_template(disk.runtime, name="scale-loop", definition=loop, agent_id="bench")
        result = await service.run_workflow(disk.runtime, template_name="scale-loop", agent_id="bench")
        events = disk.runtime.store.list_events(workflow_id=result["workflow_id"], event_type="loop_iter_started")
        stamps = [e["timestamp"] for e in events]

        def span(a: int, b: int) -> float:
            from datetime import datetime

            t0, t1 = (datetime.fromisoformat(stamps[i].replace("Z", "+00:00")) for i in (a, b))
            return (t1 - t0).total_seconds() / (b - a)

        out["loop_iteration_first_100_s"] = span(0, 100)
        out[f"loop_iteration_last_100_of_{items}_s"] = span(items - 101, items - 1)
        out["loop_run_events"] = disk.runtime.store.count_events(result["workflow_id"])
    return out


async def _timed(awaitable: Any) -> float:
    started = time.perf_counter()
    await awaitable
    return time.perf_counter() - started


def fmt(seconds: float) -> str:
    """Seconds in a readable unit."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def shape_table(results: dict[str, dict[str, float]]) -> str:
    """The shape table with ratios to the floors and to DBOS."""
    head = (f"{'shape':<18}{'floor A':>11}{'floor B':>11}{'opcode mem':>12}{'mem/A':>7}"
            f"{'opcode dur':>12}{'dur/B':>7}{'DBOS':>11}{'DBOS/dur':>9}")
    lines = [head, "-" * len(head)]
    for name, row in results.items():
        dbos = row.get("dbos")
        lines.append(
            f"{name:<18}{fmt(row['floor_a']):>11}{fmt(row['floor_b']):>11}{fmt(row['opcode_memory']):>12}"
            f"{row['opcode_memory'] / row['floor_a']:>7.1f}{fmt(row['opcode_durable']):>12}"
            f"{row['opcode_durable'] / row['floor_b']:>7.2f}{fmt(dbos) if dbos else '-':>11}"
            f"{dbos / row['opcode_durable'] if dbos else float('nan'):>9.1f}"
        )
    return "\n".join(lines)


async def main(argv: list[str]) -> dict[str, Any]:
    """Run everything and print the tables; returns the JSON written."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few iterations, no DBOS (CI)")
    parser.add_argument("--no-dbos", action="store_true")
    parser.add_argument("--json", default=".bench/results.json")
    args = parser.parse_args(argv)
    shapes, notes = await bench_shapes(args.quick, use_dbos=not (args.quick or args.no_dbos))
    events = 2_000 if args.quick else 20_000
    appends = await micro.append_throughput(temp_home(), events)
    async with in_memory(temp_home()) as contender:
        expressions = micro.expression_costs(contender.runtime.expressions)
    mcp = await micro.mcp_round_trips(20 if args.quick else 200)
    scale = await scale_curve(args.quick)
    print(shape_table(shapes))
    for key, note in notes.items():
        if key != "checks":
            print(f"note: {note}")
    print()
    print(f"append, one writer        {appends['append_sequential_per_s']:>10.0f} events/s")
    print(f"append, 100 writers       {appends['append_concurrent_100_per_s']:>10.0f} events/s")
    print(f"replay 1,000 events       {fmt(appends['replay_1000_events_s']):>10}")
    print(f"CEL guard (cached)        {fmt(expressions['cel_guard_cached_s']):>10}")
    print(f"jq over                   {fmt(expressions['jq_over_s']):>10}")
    print(f"interpolation of params   {fmt(expressions['interpolation_s']):>10}")
    ratio = mcp["mcp_run_p50_s"] / mcp["mcp_query_p50_s"]
    print(f"MCP opcode.run 1 step     p50 {fmt(mcp['mcp_run_p50_s'])}  p99 {fmt(mcp['mcp_run_p99_s'])}"
          f"  ({ratio:.2f}x the lightest call)")
    print(f"MCP opcode.query          p50 {fmt(mcp['mcp_query_p50_s'])}  p99 {fmt(mcp['mcp_query_p99_s'])}")
    print()
    for key, value in scale.items():
        print(f"{key:<40}{fmt(value) if key.endswith('_s') else int(value):>12}")
    out = {"shapes": shapes, "notes": notes, "appends": appends, "expressions": expressions, "mcp": mcp,
           "scale": scale, "checks": json.loads(notes.pop("checks")),
           "quick": args.quick, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"\nJSON: {path}")
    return out


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

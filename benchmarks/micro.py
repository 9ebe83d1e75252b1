"""Micro-benchmarks: event appends, replay, a cached CEL guard, jq `over`, interpolation, MCP round trips."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.contenders import durable
from opcode_core.engine.executor import activation
from opcode_core.engine.interpolation import Scope, StepResult, interpolate


def per_call(fn: Callable[[], Any], n: int) -> float:
    """Median seconds per call over `n` calls, timed in 5 batches."""
    batch = max(1, n // 5)
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - started) / batch)
    return statistics.median(samples)


async def append_throughput(home: Path, events: int) -> dict[str, float]:
    """Events/s through the writer: one awaiting writer, and 100 concurrent writers."""
    async with durable(home) as contender:
        writer = contender.runtime.writer
        started = time.perf_counter()
        for i in range(events):
            await writer.append("seq-writer", "custom_event", payload={"i": i})
        sequential = events / (time.perf_counter() - started)

        async def one_writer(w: int) -> None:
            for i in range(events // 100):
                await writer.append(f"writer-{w}", "custom_event", payload={"i": i})

        started = time.perf_counter()
        await asyncio.gather(*(one_writer(w) for w in range(100)))
        concurrent = (events // 100 * 100) / (time.perf_counter() - started)
        store = contender.runtime.store
        await writer.drain()
        wid = "replay"
        for i in range(500):
            writer.append(wid, "step_started", step_id=f"s{i}", payload={"attempt": 1})
            writer.append(wid, "step_completed", step_id=f"s{i}", payload={"output": {"i": i}, "duration_ms": 1})
        await writer.drain()
        replay = per_call(lambda: store.rebuild_step_states(wid), 50)
    return {"append_sequential_per_s": sequential, "append_concurrent_100_per_s": concurrent,
            "replay_1000_events_s": replay}


def expression_costs(evaluator: Any) -> dict[str, float]:
    """A cached CEL guard reading two values with 20 completed steps, a jq `over`, and interpolation."""
    steps = {f"s{i}": StepResult("completed", {"status_code": 200, "body": {"items": list(range(10)), "ok": True}})
             for i in range(20)}
    scope = Scope(inputs={"env": "prod", "threshold": 3}, workflow={"run_id": "r"}, context={}, steps=steps)
    guard = "steps['s7'].status_code == 200 && inputs.env == 'prod'"
    evaluator.evaluate("cel", guard, lambda refs: activation(scope, refs))
    over = ".steps.s3.body.items | map(select(. > 4))"
    evaluator.evaluate("jq", over, lambda refs: activation(scope, refs))
    params = {"url": "https://api.example/${{inputs.env}}/items", "headers": {"X-Run": "${{workflow.run_id}}"},
              "body": {"items": "${{steps.s3.output.body.items}}", "ok": "${{steps.s4.output.body.ok}}",
                       "note": "threshold ${{inputs.threshold}} on ${{steps.s5.output.status_code}}"}}
    return {
        "cel_guard_cached_s": per_call(lambda: evaluator.evaluate("cel", guard, lambda r: activation(scope, r)), 5000),
        "jq_over_s": per_call(lambda: evaluator.evaluate("jq", over, lambda r: activation(scope, r)), 2000),
        "interpolation_s": per_call(lambda: interpolate(params, scope), 5000),
    }


async def mcp_round_trips(n: int) -> dict[str, float]:
    """opcode.run of a 1-step workflow vs opcode.query of one template, over Streamable HTTP, p50/p99."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from tests.conftest import start_server, stop_server

    home = Path(__import__("tempfile").mkdtemp(prefix="opcode-bench-mcp-"))
    server = start_server(home, OPCODE_LOG_LEVEL="warning")
    try:
        async with httpx2.AsyncClient() as http, streamable_http_client(server.mcp_url, http_client=http) as (
            read, write), ClientSession(read, write) as session:
            await session.initialize()
            one = {"steps": [{"id": "u", "action": "crypto.uuid"}]}
            await session.call_tool("opcode.define", {"name": "one", "definition": one, "agent_id": "bench"})

            async def timed(call: Callable[[], Awaitable[Any]]) -> list[float]:
                out = []
                for _ in range(n):
                    started = time.perf_counter()
                    await call()
                    out.append(time.perf_counter() - started)
                return out

            runs = await timed(lambda: session.call_tool("opcode.run", {"template_name": "one", "agent_id": "bench"}))
            queries = await timed(lambda: session.call_tool("opcode.query", {"resource": "templates",
                                                                             "filter": {"name": "one", "limit": 1}}))
    finally:
        stop_server(server.process)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"mcp_run_p50_s": pct(runs, 0.5), "mcp_run_p99_s": pct(runs, 0.99),
            "mcp_query_p50_s": pct(queries, 0.5), "mcp_query_p99_s": pct(queries, 0.99)}

"""The benchmark runs in quick mode so it cannot rot; it asserts what the bench measured is real, never time."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import main
from benchmarks.shapes import SHAPES

pytestmark = pytest.mark.slow


async def test_quick_bench_measures_real_runs(tmp_path) -> None:
    out = await main(["--quick", "--json", str(tmp_path / "bench.json")])
    assert json.loads((tmp_path / "bench.json").read_text())["quick"] is True
    for name, (shape, _) in SHAPES.items():
        row = out["shapes"][name]
        assert set(row) >= {"floor_a", "floor_b", "opcode_memory", "opcode_durable"}
        assert all(value > 0 for value in row.values())
        checks = out["checks"][name]
        assert checks["opcode_events"] == 2 * len(shape) + 2  # workflow_started, 2 per step, workflow_completed
        assert checks["floor_b_events"] == 2 * len(shape) + 2
        assert checks["opcode_completed_steps"] == len(shape)
    assert out["appends"]["append_concurrent_100_per_s"] > 0
    assert out["scale"]["loop_run_events"] > 3 * 400  # the long run really produced its events
    assert out["mcp"]["mcp_run_p50_s"] > 0 and out["mcp"]["mcp_query_p50_s"] > 0

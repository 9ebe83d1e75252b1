"""DAG shapes shared by every contender: step id → ids it depends on."""

from __future__ import annotations

Shape = dict[str, list[str]]


def parallel(n: int) -> Shape:
    """n independent steps."""
    return {f"s{i}": [] for i in range(n)}


def sequential(n: int) -> Shape:
    """n steps in a chain."""
    return {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(n)}


def diamond(width: int = 8) -> Shape:
    """One step fanning out to `width` steps that join into one."""
    shape: Shape = {"top": []}
    shape.update({f"m{i}": ["top"] for i in range(width)})
    shape["bottom"] = [f"m{i}" for i in range(width)]
    return shape


def levels(shape: Shape) -> list[list[str]]:
    """Steps grouped by depth, as a level walker runs them."""
    depth: dict[str, int] = {}
    for sid in shape:  # shapes are listed in dependency order
        depth[sid] = 1 + max((depth[d] for d in shape[sid]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for sid, d in depth.items():
        out[d].append(sid)
    return out


def definition(shape: Shape) -> dict:
    """An opcode definition of the shape whose steps call the no-op action."""
    return {"steps": [{"id": sid, "action": "bench.noop", "depends_on": deps} for sid, deps in shape.items()]}


SHAPES: dict[str, tuple[Shape, int]] = {
    # name: (shape, how many workflows run at once)
    "parallel_10": (parallel(10), 1),
    "parallel_100": (parallel(100), 1),
    "parallel_500": (parallel(500), 1),
    "sequential_5": (sequential(5), 1),
    "sequential_50": (sequential(50), 1),
    "diamond": (diamond(8), 1),
    "concurrent_100x3": (sequential(3), 100),
}

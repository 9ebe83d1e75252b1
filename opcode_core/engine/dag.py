"""Dependency graphs of one step list: cycle detection and topological levels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a list of ids (first id repeated at the end), or None when the graph is acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, ()):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def levels(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Steps grouped by depth: level 0 has no dependencies; assumes the graph is acyclic."""
    depth: dict[str, int] = {}

    def level_of(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((level_of(d) for d in deps.get(node, ()) if d in deps), default=-1)
        return depth[node]

    out: list[list[str]] = []
    for node in deps:
        lvl = level_of(node)
        while len(out) <= lvl:
            out.append([])
        out[lvl].append(node)
    return out

"""The diagram graph of a workflow: its steps (nested ones as groups), dependencies and, for a run, statuses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opcode_core.diagrams.styles import format_duration, status_style, style_for
from opcode_core.specs import StepTypeSpec

JSON = dict[str, Any]
MAX_LINE = 40
# A loop of 200 iterations would be 200 groups: show the first ones and the last, and say how many are hidden.
MAX_INSTANCES = 6
SHOWN_FIRST = 4
FINISHED = ("completed", "failed", "skipped")
HOOKS = ("on_complete", "on_error")


@dataclass
class Edge:
    """A dependency between two steps of one step list (or a hook step after the terminal steps)."""

    source: str
    target: str
    kind: str = "depends"  # depends | hook
    label: str | None = None


@dataclass
class Group:
    """A nested step list: a condition branch, a parallel branch, a loop body or one iteration of it."""

    id: str  # the id prefix its steps run under, without the trailing dot: `gate.true`, `each.iter_0`
    label: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    # False when the run finished the parent step and nothing in this group ran (a branch not taken).
    ran: bool | None = None


@dataclass
class Node:
    """One step as the diagram shows it."""

    id: str  # the full id the run records: `deploy`, `gate.true.notify`, `each.iter_2.fetch`
    step_id: str  # the id as written in its step list
    type: str
    detail: str = ""
    status: str | None = None  # None: no statuses drawn (a template)
    duration_ms: int | None = None
    error: str | None = None
    attempt: int | None = None
    hook: str | None = None  # on_complete / on_error for the definition's hook steps
    groups: list[Group] = field(default_factory=list)
    arrange: str = "row"  # row: groups side by side (branches); column: one under the other (iterations)

    @property
    def tag(self) -> str | None:
        """The ascii status tag, e.g. `OK`; None without statuses."""
        return None if self.status is None else status_style(self.status).tag

    def lines(self) -> list[str]:
        """The text lines of the node: marker and id, detail, and for a run its status."""
        out = [_clip(f"{style_for(self.type).marker} {self.step_id}")]
        if self.detail:
            out.append(_clip(self.detail))
        if self.status is not None:
            extra = format_duration(self.duration_ms) if self.status in ("completed", "failed") else ""
            if self.attempt and self.attempt > 1:
                extra = f"{extra} try {self.attempt}".strip()
            out.append(_clip(f"[{self.tag}] {extra}".strip()))
        return out


@dataclass
class Diagram:
    """A workflow drawn: top-level nodes (each with its groups) and the edges between them."""

    title: str
    nodes: list[Node]
    edges: list[Edge]
    with_status: bool = False
    status: str | None = None  # the run's status, for a run

    def walk(self) -> list[Node]:
        """Every node, nested ones included, parents before children."""
        out: list[Node] = []

        def visit(nodes: list[Node]) -> None:
            for node in nodes:
                out.append(node)
                for group in node.groups:
                    visit(group.nodes)

        visit(self.nodes)
        return out


def build_diagram(
    definition: JSON,
    step_types: Mapping[str, StepTypeSpec],
    *,
    states: Mapping[str, JSON] | None = None,
    title: str = "",
    status: str | None = None,
) -> Diagram:
    """The diagram of a definition; with `states` (step id → step state) every node carries its status."""
    builder = _Builder(step_types, states)
    steps = [s for s in definition.get("steps") or [] if isinstance(s, dict) and isinstance(s.get("id"), str)]
    nodes, edges = builder.scope(steps, "")
    terminals = _terminals(steps)
    for hook in HOOKS:
        raw = definition.get(hook)
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            node = builder.node(raw, "")
            node.hook = hook
            node.detail = _clip(f"{hook} · {node.detail}" if node.detail else hook)
            nodes.append(node)
            edges.extend(Edge(t, node.id, "hook", hook) for t in terminals)
    return Diagram(title=title, nodes=nodes, edges=edges, with_status=states is not None, status=status)


class _Builder:
    def __init__(self, step_types: Mapping[str, StepTypeSpec], states: Mapping[str, JSON] | None) -> None:
        self.step_types = step_types
        self.states = states

    def scope(self, steps: list[JSON], prefix: str) -> tuple[list[Node], list[Edge]]:
        nodes = [self.node(raw, prefix) for raw in steps]
        local = {raw["id"] for raw in steps}
        edges = [
            Edge(prefix + dep, prefix + raw["id"])
            for raw in steps
            for dep in _deps(raw)
            if dep in local and dep != raw["id"]
        ]
        return nodes, edges

    def node(self, raw: JSON, prefix: str) -> Node:
        full = prefix + raw["id"]
        step_type = raw.get("type") or "action"
        config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        detail = self._detail(raw, step_type, config)
        if isinstance(raw.get("condition"), str):
            detail = f"{detail} · if {raw['condition']}" if detail else f"if {raw['condition']}"
        node = Node(id=full, step_id=raw["id"], type=step_type, detail=_clip(detail))
        if self.states is not None:
            state = self.states.get(full) or {}
            node.status = state.get("status") or "pending"
            node.duration_ms = state.get("duration_ms")
            node.attempt = state.get("attempt")
            node.error = _error_text(state.get("error"))
        spec = self.step_types.get(step_type)
        if spec is not None and spec.nested_steps is not None:
            try:
                nested = spec.nested_steps(config)
            except Exception:  # a stored definition the plugin no longer understands still draws as one node
                nested = []
            self._groups(node, [(seg, lst) for seg, lst in nested if isinstance(lst, list)])
        return node

    def _groups(self, node: Node, nested: list[tuple[str, list[Any]]]) -> None:
        declared = {segment for segment, _ in nested}
        for segment, raw_steps in nested:
            steps = [s for s in raw_steps if isinstance(s, dict) and isinstance(s.get("id"), str)]
            instances = self._instances(node.id, declared, {s["id"] for s in steps})
            if instances:
                # Ids that repeat at run time (loop iterations): one group per instance, in run order.
                node.arrange = "column"
                shown = instances
                if len(instances) > MAX_INSTANCES:
                    shown = [*instances[:SHOWN_FIRST], None, instances[-1]]
                for instance in shown:
                    if instance is None:
                        hidden = len(instances) - SHOWN_FIRST - 1
                        node.groups.append(Group(f"{node.id}.…", f"… {hidden} more", ran=True))
                    else:
                        node.groups.append(self._group(node, instance, instance, steps))
                continue
            label = segment
            repeat = style_for(node.type).repeat_label
            if repeat and self._static_ids_unused(node.id, segment):
                label = repeat
            node.groups.append(self._group(node, segment, label, steps))

    def _group(self, node: Node, segment: str, label: str, steps: list[JSON]) -> Group:
        group_id = f"{node.id}.{segment}"
        nodes, edges = self.scope(steps, group_id + ".")
        group = Group(group_id, label, nodes, edges)
        if self.states is not None:
            ran = any(sid.startswith(group_id + ".") for sid in self.states)
            group.ran = ran if node.status in FINISHED else (True if ran else None)
        return group

    def _instances(self, parent: str, declared: set[str], local_ids: set[str]) -> list[str]:
        """Run-time segments under `parent.` that are not declared ones but hold this list's steps."""
        if not self.states:
            return []
        found = set()
        head = parent + "."
        for sid in self.states:
            if not sid.startswith(head):
                continue
            segment, _, rest = sid[len(head):].partition(".")
            if segment not in declared and rest.split(".", 1)[0] in local_ids:
                found.add(segment)
        return sorted(found, key=_natural)

    def _static_ids_unused(self, parent: str, segment: str) -> bool:
        return not self.states or not any(sid.startswith(f"{parent}.{segment}.") for sid in self.states)

    def _detail(self, raw: JSON, step_type: str, config: JSON) -> str:
        if isinstance(raw.get("action"), str):
            return raw["action"]
        style = style_for(step_type)
        if style.detail is not None:
            try:
                return style.detail(config)
            except Exception:  # a malformed config only loses its summary
                return ""
        spec = self.step_types.get(step_type)
        keys = list((spec.config_schema.get("properties") or {}) if spec else {}) or sorted(config)
        scalars = [f"{k} {config[k]}" for k in keys if isinstance(config.get(k), str | int | float)]
        return " · ".join(scalars[:2])


def _deps(raw: JSON) -> list[str]:
    deps = raw.get("depends_on")
    return [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []


def _terminals(steps: list[JSON]) -> list[str]:
    needed = {dep for raw in steps for dep in _deps(raw)}
    return [raw["id"] for raw in steps if raw["id"] not in needed]


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"[{code}] {message}" if code else str(message)
    return str(error)


def _natural(text: str) -> list[Any]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"

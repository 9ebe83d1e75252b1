"""Mermaid flowcharts: node shapes per step type, subgraphs for nested step lists, classDefs per status."""

from __future__ import annotations

import re

from opcode_core.diagrams.model import Diagram, Group, Node
from opcode_core.diagrams.styles import STATUS_ORDER, STATUS_STYLES, status_style, style_for

# Mermaid's own shapes for ours: (opening, closing) around the quoted label.
SHAPES = {
    "box": ("[", "]"),
    "diamond": ("{", "}"),
    "stadium": ("([", "])"),
    "parallelogram": ("[/", "/]"),
    "round": ("(", ")"),
    "double": ("[[", "]]"),
}
# Words that end or redirect a flowchart statement when used as a bare node id.
RESERVED = {"end", "graph", "flowchart", "subgraph", "style", "class", "classdef", "click", "linkstyle",
            "default", "direction"}
INDENT = "    "


def render_mermaid(diagram: Diagram) -> str:
    """The diagram as a `flowchart TD`; for a run each node also gets its status class."""
    ids = _Ids()
    lines = []
    if diagram.title:
        lines += ["---", f"title: {_yaml(diagram.title)}", "---"]
    lines.append("flowchart TD")
    links: list[str] = []
    classes: dict[str, list[str]] = {}

    def emit(nodes: list[Node], depth: int) -> None:
        pad = INDENT * depth
        for node in nodes:
            nid = ids.of(node.id)
            opening, closing = SHAPES.get(style_for(node.type).shape, SHAPES["box"])
            lines.append(f'{pad}{nid}{opening}"{_label(node)}"{closing}')
            if node.status is not None:
                classes.setdefault(status_style(node.status).css, []).append(nid)
            previous: Group | None = None
            for group in node.groups:
                gid = ids.of(group.id, group=True)
                label = group.label + (" (not run)" if group.ran is False else "")
                lines.append(f'{pad}subgraph {gid}["{_escape(label)}"]')
                lines.append(f"{pad}{INDENT}direction TB")
                emit(group.nodes, depth + 1)
                lines.append(f"{pad}end")
                if node.arrange == "column" and previous is not None:
                    links.append(f"{ids.of(previous.id, group=True)} --> {gid}")
                else:
                    links.append(f'{nid} -->|"{_escape(group.label)}"| {gid}')
                previous = group
                for edge in group.edges:
                    links.append(f"{ids.of(edge.source)} --> {ids.of(edge.target)}")

    emit(diagram.nodes, 1)
    for edge in diagram.edges:
        if edge.kind == "hook":
            links.append(f'{ids.of(edge.source)} -.->|"{_escape(edge.label or "")}"| {ids.of(edge.target)}')
        else:
            links.append(f"{ids.of(edge.source)} --> {ids.of(edge.target)}")
    lines += [INDENT + link for link in links]
    if diagram.with_status:
        for status in STATUS_ORDER:
            if status in classes:
                s = STATUS_STYLES[status]
                lines.append(f"{INDENT}classDef {s.css} fill:{s.fill},stroke:{s.stroke},color:{s.text}")
        for status in STATUS_ORDER:
            if status in classes:
                lines.append(f"{INDENT}class {','.join(classes[status])} {status}")
    return "\n".join(lines) + "\n"


class _Ids:
    """Mermaid-safe ids, unique within one diagram, stable for the same input."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, bool], str] = {}
        self.used: set[str] = set()

    def of(self, key: str, group: bool = False) -> str:
        if (key, group) in self.by_key:
            return self.by_key[(key, group)]
        base = re.sub(r"[^A-Za-z0-9_]", "_", key) or "step"
        if group:
            base += "_group"
        if base.lower() in RESERVED or base[0].isdigit():
            base = f"s_{base}"
        candidate, n = base, 2
        while candidate in self.used:
            candidate, n = f"{base}_{n}", n + 1
        self.used.add(candidate)
        self.by_key[(key, group)] = candidate
        return candidate


def _label(node: Node) -> str:
    # The marker is for ascii: in mermaid the shape says the type.
    lines = [node.step_id, *node.lines()[1:]]
    return "<br/>".join(_escape(line) for line in lines)


def _escape(text: str) -> str:
    # Mermaid entity codes: `#` first, so the codes added after it stay intact.
    for raw, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return text


def _yaml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

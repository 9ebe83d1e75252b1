"""The DAG as inline SVG, drawn from the diagrams' own layout (`layout_workflow`): no second layout engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape

from opcode_core.diagrams import layout_workflow
from opcode_core.diagrams.styles import EDGE, STROKE, status_style, style_for
from opcode_core.specs import StepTypeSpec

JSON = dict[str, Any]
MARGIN = 12


def workflow_svg(
    definition: JSON,
    step_types: Mapping[str, StepTypeSpec],
    *,
    states: Mapping[str, JSON] | None = None,
    link_steps: bool = False,
) -> Markup:
    """A definition (with a run's step states: coloured by status) as an `<svg>` element."""
    return render_svg(layout_workflow(definition, step_types, states=states), link_steps=link_steps)


def render_svg(layout: JSON, *, link_steps: bool = False) -> Markup:
    """Draw a layout: group frames, then edges, then nodes (so nodes sit on top of edge ends)."""
    cw, ch = layout["cell_px"]
    width = layout["width"] * cw + 2 * MARGIN
    height = layout["height"] * ch + 2 * MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="workflow diagram">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{EDGE}"/></marker></defs>',
        f'<g transform="translate({MARGIN},{MARGIN})">',
    ]
    for group in layout["groups"]:
        parts.append(_group(group, cw, ch))
    for edge in layout["edges"]:
        parts.append(_edge(edge, cw, ch))
    for node in layout["nodes"]:
        parts.append(_node(node, cw, ch, layout["with_status"], link_steps))
    parts.append("</g></svg>")
    return Markup("".join(parts))


def _group(group: JSON, cw: int, ch: int) -> str:
    x, y, w, h = group["x"] * cw, group["y"] * ch, group["w"] * cw - 1, group["h"] * ch - 1
    idle = " idle" if group.get("ran") is False else ""
    return (
        f'<g class="dag-group{idle}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6"/>'
        f'<text x="{x + 2 * cw - 4}" y="{y + ch + 12}">{escape(group["label"])}</text></g>'
    )


def _edge(edge: JSON, cw: int, ch: int) -> str:
    if len(edge["points"]) < 2:
        return ""
    points = " ".join(f"{x * cw:g},{y * ch:g}" for x, y in edge["points"])
    arrow = ' marker-end="url(#arrow)"' if edge.get("arrow") else ""
    return f'<polyline class="dag-edge {escape(edge["kind"])}" points="{points}" stroke="{EDGE}"{arrow}/>'


def _node(node: JSON, cw: int, ch: int, with_status: bool, link: bool) -> str:
    x0, y0 = node["x"] * cw + 1, node["y"] * ch + 1
    x1, y1 = (node["x"] + node["w"]) * cw - 2, (node["y"] + node["h"]) * ch - 2
    if with_status:
        look = status_style(node["status"])
        fill, stroke, text = look.fill, look.stroke, look.text
    else:
        fill, stroke, text = style_for(node["type"]).fill, STROKE, "#212121"
    status = escape(node.get("status") or "none")
    tip = [node["id"], node.get("detail") or "", f"status: {node['status']}" if with_status else ""]
    if node.get("error"):
        tip.append(node["error"])
    body = [
        f'<g class="dag-node st-{status}" data-step="{escape(node["id"])}" data-status="{status}">',
        f"<title>{escape(chr(10).join(t for t in tip if t))}</title>",
        _shape(node["shape"], x0, y0, x1, y1, fill, stroke),
    ]
    cx = (node["x"] + node["w"] / 2) * cw
    for i, line in enumerate(node["lines"]):
        cy = (node["y"] + 1 + i) * ch + ch / 2
        weight = ' font-weight="600"' if i == 0 else ""
        body.append(f'<text x="{cx:g}" y="{cy:g}" fill="{text}"{weight}>{escape(line)}</text>')
    body.append("</g>")
    svg = "".join(body)
    if link:
        svg = f'<a href="#step-{escape(node["id"])}">{svg}</a>'
    return svg


def _shape(shape: str, x0: float, y0: float, x1: float, y1: float, fill: str, stroke: str) -> str:
    paint = f'fill="{fill}" stroke="{stroke}" stroke-width="2"'
    w, h = x1 - x0, y1 - y0
    cy = (y0 + y1) / 2
    if shape == "diamond":
        d = min(16, h / 2)
        pts = [(x0, cy), (x0 + d, y0), (x1 - d, y0), (x1, cy), (x1 - d, y1), (x0 + d, y1)]
        return f'<polygon points="{_pts(pts)}" {paint}/>'
    if shape == "stadium":
        return f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" rx="{h / 2:g}" {paint}/>'
    if shape == "parallelogram":
        s = 8
        return f'<polygon points="{_pts([(x0 + s, y0), (x1, y0), (x1 - s, y1), (x0, y1)])}" {paint}/>'
    if shape == "round":
        return f'<ellipse cx="{(x0 + x1) / 2:g}" cy="{cy:g}" rx="{w / 2:g}" ry="{h / 2:g}" {paint}/>'
    if shape == "double":
        inner = f'<rect x="{x0 + 4}" y="{y0 + 4}" width="{w - 8}" height="{h - 8}" fill="none" stroke="{stroke}"/>'
        return f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" rx="3" {paint}/>{inner}'
    return f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" rx="4" {paint}/>'


def _pts(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in points)

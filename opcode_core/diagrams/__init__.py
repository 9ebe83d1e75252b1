"""Diagrams of workflows and runs: ascii, mermaid and PNG, all from one model and one layout.

`build_diagram` turns a definition (and a run's step states) into a graph; `layout_workflow` /
`layout_diagram` place it (grandalf's Sugiyama) as plain data that the renderers here and the
panel's SVG draw alike; `render` produces what `opcode.diagram` answers.
"""

from __future__ import annotations

import base64
from typing import Any

from opcode_core.diagrams.ascii import render_ascii
from opcode_core.diagrams.layout import CELL_PX, layout_diagram, layout_workflow
from opcode_core.diagrams.mermaid import render_mermaid
from opcode_core.diagrams.model import Diagram, Edge, Group, Node, build_diagram
from opcode_core.diagrams.png import render_png

FORMATS = ("ascii", "mermaid", "image")

__all__ = [
    "CELL_PX",
    "FORMATS",
    "Diagram",
    "Edge",
    "Group",
    "Node",
    "build_diagram",
    "layout_diagram",
    "layout_workflow",
    "render",
    "render_ascii",
    "render_mermaid",
    "render_png",
]


def render(diagram: Diagram, fmt: str) -> dict[str, Any]:
    """`{format, diagram}`: text for ascii and mermaid, base64 PNG (with `width`, `height`) for image."""
    if fmt == "ascii":
        return {"format": fmt, "diagram": render_ascii(layout_diagram(diagram))}
    if fmt == "mermaid":
        return {"format": fmt, "diagram": render_mermaid(diagram)}
    if fmt == "image":
        png, width, height = render_png(layout_diagram(diagram))
        return {"format": fmt, "diagram": base64.b64encode(png).decode("ascii"), "width": width, "height": height}
    raise ValueError(f"unknown diagram format {fmt!r} (expected one of {', '.join(FORMATS)})")

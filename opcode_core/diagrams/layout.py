"""Layered layout of a diagram (grandalf's Sugiyama), as plain data every renderer and the panel can draw.

Coordinates are in character cells: `x` counts columns, `y` rows, and a box spans `[x, x+w) by [y, y+h)`.
The ascii renderer draws one cell per character; PNG and SVG multiply by `CELL_PX` (8 by 16 pixels).
Edge points sit on cell centres (`.5`), except the first (the source's bottom edge) and the last (the
target's top edge), and every segment is horizontal or vertical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from grandalf.graphs import Edge as GEdge
from grandalf.graphs import Vertex, graph_core
from grandalf.layouts import SugiyamaLayout

from opcode_core.diagrams.model import Diagram, Edge, Node, build_diagram
from opcode_core.diagrams.styles import style_for
from opcode_core.specs import StepTypeSpec

JSON = dict[str, Any]
CELL_PX = (8, 16)
XGAP = 3  # free columns between neighbours in a rank
GROUP_GAP = 2  # free columns between side-by-side group frames
# Extra columns for shapes whose outline eats into the text area in PNG/SVG (pointed ends, ellipse, slant).
SHAPE_PAD = {"diamond": 2, "round": 4, "parallelogram": 2}


def layout_workflow(
    definition: JSON,
    step_types: Mapping[str, StepTypeSpec],
    *,
    states: Mapping[str, JSON] | None = None,
    title: str = "",
    status: str | None = None,
) -> JSON:
    """Lay a definition out (with step statuses for a run): `{width, height, nodes, groups, edges, ...}`."""
    return layout_diagram(build_diagram(definition, step_types, states=states, title=title, status=status))


def layout_diagram(diagram: Diagram) -> JSON:
    """Lay an already built diagram out; the result is JSON-able and deterministic."""
    block = _scope(diagram.nodes, diagram.edges, None)
    types = list(dict.fromkeys(node.type for node in diagram.walk()))
    return {
        "title": diagram.title,
        "status": diagram.status,
        "with_status": diagram.with_status,
        "unit": "cell",
        "cell_px": list(CELL_PX),
        "width": block.w,
        "height": block.h,
        "types": types,
        "nodes": block.nodes,
        "groups": block.groups,
        "edges": block.edges,
    }


@dataclass
class _Block:
    """Laid-out content with coordinates relative to its own top-left corner."""

    w: int = 0
    h: int = 0
    # Where edges to later steps leave, as rows from the top: the bottom edge, or the row where a
    # step's branches join again.
    exit: float | None = None
    nodes: list[JSON] = field(default_factory=list)
    groups: list[JSON] = field(default_factory=list)
    edges: list[JSON] = field(default_factory=list)

    def put(self, other: _Block, dx: int, dy: int) -> None:
        """Copy another block's content into this one, moved by (dx, dy)."""
        for item in (*other.nodes, *other.groups):
            item["x"] += dx
            item["y"] += dy
        for edge in other.edges:
            edge["points"] = [[x + dx, y + dy] for x, y in edge["points"]]
        self.nodes.extend(other.nodes)
        self.groups.extend(other.groups)
        self.edges.extend(other.edges)


def _odd(n: int) -> int:
    # Odd widths have a middle column, so edges leave and enter exactly at the centre.
    return n if n % 2 else n + 1


def _edge(source: str, target: str, kind: str, points: list[tuple[float, float]], *, label: str | None = None,
          arrow: bool = True) -> JSON:
    simple: list[list[float]] = []
    for x, y in points:
        if simple and simple[-1] == [x, y]:
            continue
        # Drop a middle point on a straight run: renderers then see one segment per direction change.
        if len(simple) >= 2 and (simple[-2][0] == simple[-1][0] == x or simple[-2][1] == simple[-1][1] == y):
            simple[-1] = [x, y]
            continue
        simple.append([x, y])
    return {"source": source, "target": target, "kind": kind, "label": label, "arrow": arrow, "points": simple}


def _leaf(node: Node, group: str | None) -> _Block:
    style = style_for(node.type)
    lines = node.lines()
    w = _odd(max(len(line) for line in lines) + 4 + SHAPE_PAD.get(style.shape, 0))
    h = len(lines) + 2
    data = {
        "id": node.id,
        "step_id": node.step_id,
        "type": node.type,
        "shape": style.shape,
        "marker": style.marker,
        "label": node.step_id,
        "detail": node.detail,
        "lines": lines,
        "status": node.status,
        "tag": node.tag,
        "duration_ms": node.duration_ms,
        "error": node.error,
        "hook": node.hook,
        "group": group,
        "x": 0,
        "y": 0,
        "w": w,
        "h": h,
    }
    return _Block(w, h, nodes=[data])


def _item(node: Node, group: str | None) -> _Block:
    """A node, and when it has nested step lists, the node with its group frames below it."""
    header = _leaf(node, group)
    if not node.groups:
        return header
    frames = []
    for g in node.groups:
        inner = _scope(g.nodes, g.edges, g.id)
        label = g.label + (" (not run)" if g.ran is False else "")
        frames.append((g, label, inner, _odd(max(inner.w, len(label)) + 4), inner.h + 4))
    out = _Block()
    hw, hh = header.w, header.h

    def frame(g: Any, label: str, inner: _Block, fx: int, fy: int, fw: int, fh: int) -> None:
        out.groups.append({"id": g.id, "label": label, "parent": node.id, "ran": g.ran,
                           "x": fx, "y": fy, "w": fw, "h": fh})
        out.put(inner, fx + (fw - inner.w) // 2, fy + 2)

    if node.arrange == "column":
        cw = _odd(max([hw] + [f[3] for f in frames]))
        cx = cw // 2 + 0.5
        out.put(header, cw // 2 - hw // 2, 0)
        y, source, kind = hh, node.id, "branch"
        for g, label, inner, fw, fh in frames:
            top = y + 2
            frame(g, label, inner, cw // 2 - fw // 2, top, fw, fh)
            out.edges.append(_edge(source, g.id, kind, [(cx, y), (cx, top)], label=label if kind == "branch" else None))
            y, source, kind = top + fh, g.id, "next"
        # The next step's edge leaves straight from the last frame.
        out.w, out.h = cw, y
        return out
    total = sum(f[3] for f in frames) + GROUP_GAP * (len(frames) - 1)
    cw = _odd(max(hw, total))
    cx = cw // 2 + 0.5
    out.put(header, cw // 2 - hw // 2, 0)
    lefts, x = [], (cw - total) // 2
    for f in frames:
        lefts.append(x)
        x += f[3] + GROUP_GAP
    centres = [left + f[3] // 2 + 0.5 for left, f in zip(lefts, frames, strict=True)]
    bent = any(c != cx for c in centres)
    top = hh + (3 if bent else 2)
    join = top + max(f[4] for f in frames) + 1
    for (g, label, inner, fw, fh), left, c in zip(frames, lefts, centres, strict=True):
        frame(g, label, inner, left, top, fw, fh)
        fan = [(cx, hh + 1.5), (c, hh + 1.5)] if bent else []
        out.edges.append(_edge(node.id, g.id, "branch", [(cx, hh), *fan, (c, top)], label=label))
        if bent:
            out.edges.append(_edge(g.id, node.id, "join", [(c, top + fh), (c, join + 0.5), (cx, join + 0.5)],
                                   arrow=False))
    # One group right under its step: the next step's edge leaves straight from the frame.
    out.w, out.h = cw, join + 1 if bent else top + frames[0][4]
    out.exit = join + 0.5 if bent else None
    return out


def _scope(nodes: list[Node], edges: list[Edge], group: str | None) -> _Block:
    """Lay out one step list: ranks top to bottom, orthogonal edges routed through the gaps between ranks."""
    items = {node.id: _item(node, group) for node in nodes}
    if not items:
        return _Block()
    keys = list(items)
    links = [(e.source, e.target, e) for e in edges if e.source in items and e.target in items]
    rank, centre, dummies = _sugiyama(keys, items, [(s, t) for s, t, _ in links])
    ranks = max(rank.values()) + 1
    band = [max((items[k].h for k in keys if rank[k] == r), default=0) for r in range(ranks)]

    # Each edge crosses the gaps between its ranks; a crossing that changes column needs a horizontal track.
    crossings: list[list[tuple[int, int, Any]]] = [[] for _ in range(ranks)]
    paths = []
    for index, (s, t, _) in enumerate(links):
        if rank[s] >= rank[t]:
            paths.append(None)
            continue
        cols = [centre[s], *(dummies[index][r] for r in range(rank[s] + 1, rank[t])), centre[t]]
        paths.append(cols)
        for step, r in enumerate(range(rank[s], rank[t])):
            # Edges leaving one node share a track: they fan out like a tree.
            key = ("node", s) if step == 0 else ("edge", index)
            crossings[r].append((cols[step], cols[step + 1], key))
    tracks: list[dict[Any, int]] = [_tracks(c) for c in crossings]

    tops = [0] * ranks
    for r in range(1, ranks):
        tops[r] = tops[r - 1] + band[r - 1] + 2 + len(set(tracks[r - 1].values()))
    out = _Block(h=tops[-1] + band[-1])
    lefts = {k: centre[k] - items[k].w // 2 for k in keys}
    for k in keys:
        out.put(items[k], lefts[k], tops[rank[k]])
    right = [lefts[k] + items[k].w for k in keys] + [c + 1 for d in dummies.values() for c in d.values()]
    out.w = max(right)
    for index, ((s, t, e), cols) in enumerate(zip(links, paths, strict=True)):
        if cols is None:
            continue
        exit_row = items[s].exit if items[s].exit is not None else items[s].h
        points = [(cols[0] + 0.5, tops[rank[s]] + exit_row)]
        for step, r in enumerate(range(rank[s], rank[t])):
            a, b = cols[step], cols[step + 1]
            if a != b:
                key = ("node", s) if step == 0 else ("edge", index)
                row = tops[r] + band[r] + 1 + tracks[r][key] + 0.5
                points += [(a + 0.5, row), (b + 0.5, row)]
        points.append((cols[-1] + 0.5, tops[rank[t]]))
        out.edges.append(_edge(s, t, e.kind, points, label=e.label))
    return out


def _tracks(crossings: list[tuple[int, int, Any]]) -> dict[Any, int]:
    """Rows for the horizontal runs of one gap: runs whose column spans overlap get different rows."""
    spans: dict[Any, list[int]] = {}
    for a, b, key in crossings:
        if a == b:
            continue
        lo, hi = min(a, b), max(a, b)
        if key in spans:
            spans[key] = [min(spans[key][0], lo), max(spans[key][1], hi)]
        else:
            spans[key] = [lo, hi]
    order = sorted(spans, key=lambda k: (spans[k][0], spans[k][1], list(spans).index(k)))
    ends: list[int] = []
    out = {}
    for key in order:
        lo, hi = spans[key]
        # One free column between runs on a row, or `──┘└──` would read as one line.
        row = next((i for i, end in enumerate(ends) if end < lo - 1), None)
        if row is None:
            ends.append(hi)
            row = len(ends) - 1
        else:
            ends[row] = hi
        out[key] = row
    return out


class _View:
    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


def _sugiyama(
    keys: list[str], items: dict[str, _Block], links: list[tuple[str, str]]
) -> tuple[dict[str, int], dict[str, int], dict[int, dict[int, int]]]:
    """Ranks, integer centre columns, and the columns of each long edge's dummy points (by edge index, rank)."""
    # Components are built here, in declaration order: grandalf's own split keeps edges in a set,
    # whose order changes from one process to the next, and so would the drawing.
    parent = {k: k for k in keys}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for s, t in links:
        a, b = find(s), find(t)
        if a != b:
            parent[max(a, b, key=keys.index)] = min(a, b, key=keys.index)
    components: dict[str, list[str]] = {}
    for k in keys:
        components.setdefault(find(k), []).append(k)

    rank: dict[str, int] = {}
    centre: dict[str, int] = {}
    dummies: dict[int, dict[int, int]] = {}
    offset = 0
    for members in components.values():
        vertices = {k: Vertex(k) for k in members}
        for k, v in vertices.items():
            v.view = _View(items[k].w, items[k].h)
        gedges = []
        for index, (s, t) in enumerate(links):
            if s in vertices:
                gedges.append(GEdge(vertices[s], vertices[t], data=index))
        floats: dict[Any, float] = {}
        widths: dict[Any, int] = {k: items[k].w for k in members}
        rows: dict[int, list[Any]] = {}
        if len(members) == 1:
            rank[members[0]] = 0
            floats[members[0]] = 0.0
            rows[0] = [members[0]]
        else:
            layout = SugiyamaLayout(graph_core(list(vertices.values()), gedges))
            layout.xspace = XGAP
            layout.dw, layout.dh = 1, 1  # dummy points carry only a vertical line
            layout.init_all()
            layout.draw(3)
            for k, v in vertices.items():
                rank[k] = layout.grx[v].rank
                floats[k] = v.view.xy[0]
                rows.setdefault(rank[k], []).append(k)
            for edge, ctrl in layout.ctrls.items():
                for r, dv in ctrl.items():
                    if r in (rank[edge.v[0].data], rank[edge.v[1].data]):
                        continue
                    key = ("dummy", edge.data, r)
                    floats[key] = dv.view.xy[0]
                    widths[key] = 1
                    rows.setdefault(r, []).append(key)
        cols: dict[Any, int] = {}
        for r in sorted(rows):
            previous_right: int | None = None
            for key in sorted(rows[r], key=lambda k: floats[k]):
                w = widths[key]
                left = math.floor(floats[key] + 0.5) - w // 2
                if previous_right is not None and left < previous_right + XGAP + 1:
                    left = previous_right + XGAP + 1
                cols[key] = left + w // 2
                previous_right = left + w - 1
        lo = min(c - widths[k] // 2 for k, c in cols.items())
        hi = max(c - widths[k] // 2 + widths[k] - 1 for k, c in cols.items())
        shift = offset - lo
        for key, c in cols.items():
            if isinstance(key, tuple):
                dummies.setdefault(key[1], {})[key[2]] = c + shift
            else:
                centre[key] = c + shift
        offset += hi - lo + 1 + XGAP
    return rank, centre, dummies


"""Text diagrams with box-drawing characters, drawn cell for cell from the layout."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

from opcode_core.diagrams.styles import STATUS_ORDER, STATUS_STYLES, STYLES, status_style, style_for

JSON = dict[str, Any]
UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
LINES = {
    UP: "│", DOWN: "│", UP | DOWN: "│", LEFT: "─", RIGHT: "─", LEFT | RIGHT: "─",
    DOWN | RIGHT: "┌", DOWN | LEFT: "┐", UP | RIGHT: "└", UP | LEFT: "┘",
    UP | DOWN | RIGHT: "├", UP | DOWN | LEFT: "┤", DOWN | LEFT | RIGHT: "┬", UP | LEFT | RIGHT: "┴",
    UP | DOWN | LEFT | RIGHT: "┼",
}  # fmt: skip
# Corners and sides per shape: top-left, horizontal, top-right, vertical, bottom-left, bottom-right.
BORDERS = {
    "box": "┌─┐│└┘",
    "diamond": "┌─┐│└┘",
    "stadium": "╭─╮│╰╯",
    "round": "╭─╮│╰╯",
    "parallelogram": "┏━┓┃┗┛",
    "double": "╔═╗║╚╝",
}
FRAME = "┌╌┐╎└┘"
# A border with a line leaving it downwards.
JUNCTIONS = {"─": "┬", "━": "┯", "═": "╤", "╌": "┬"}
ARROW = "▼"


def render_ascii(layout: JSON) -> str:
    """The layout as text: title, the drawing, and a legend of markers (and status counts for a run)."""
    width, height = layout["width"], layout["height"]
    grid = [[" "] * width for _ in range(height)]
    for group in layout["groups"]:
        _frame(grid, group)
    for node in layout["nodes"]:
        _box(grid, node)
    bits: dict[tuple[int, int], int] = {}
    starts, arrows = [], []
    for edge in layout["edges"]:
        cells = _cells(edge["points"])
        for (c0, r0), (c1, r1) in itertools.pairwise(cells):
            _segment(bits, c0, r0, c1, r1)
        if len(cells) == 1:
            bits.setdefault(cells[0], 0)
        starts.append(cells[0])
        if edge["arrow"]:
            arrows.append(cells[-1])
    for col, row in starts:
        # Every edge leaves downwards: join it to the line or the border above its first cell.
        above = (col, row - 1)
        if above in bits:
            bits[above] |= DOWN
            bits[(col, row)] = bits.get((col, row), 0) | UP
        elif row > 0 and grid[row - 1][col] in JUNCTIONS:
            grid[row - 1][col] = JUNCTIONS[grid[row - 1][col]]
            bits[(col, row)] = bits.get((col, row), 0) | UP
    for (col, row), value in bits.items():
        if 0 <= row < height and 0 <= col < width and grid[row][col] == " ":
            grid[row][col] = LINES.get(value, "·")
    for col, row in arrows:
        if 0 <= row < height and 0 <= col < width:
            grid[row][col] = ARROW
    lines = []
    if layout.get("title"):
        lines += [layout["title"], ""]
    lines += ["".join(row).rstrip() for row in grid]
    lines += ["", *legend(layout)]
    return "\n".join(lines).rstrip() + "\n"


def legend(layout: JSON) -> list[str]:
    """One line of type markers; for a run, one line counting steps per status tag."""
    present = layout["types"]
    known = [t for t in STYLES if t in present] + sorted(t for t in present if t not in STYLES)
    out = ["  ".join(f"{style_for(t).marker} {t}" for t in known)]
    if layout["with_status"]:
        counts = Counter(status_style(node["status"]).css for node in layout["nodes"])
        out.append("  ".join(f"[{STATUS_STYLES[s].tag}] {counts[s]}" for s in STATUS_ORDER if counts[s]))
    return out


def _cells(points: list[list[float]]) -> list[tuple[int, int]]:
    # The first point is a bottom edge (the row below it is the first cell), the last a top edge
    # (the row above it is the last cell); the points between are cell centres.
    out = []
    for i, (x, y) in enumerate(points):
        row = math.ceil(y) - 1 if i == len(points) - 1 and i > 0 else math.floor(y)
        out.append((math.floor(x), row))
    return out


def _segment(bits: dict[tuple[int, int], int], c0: int, r0: int, c1: int, r1: int) -> None:
    if c0 == c1:
        step = 1 if r1 >= r0 else -1
        for r in range(r0, r1, step):
            bits[(c0, r)] = bits.get((c0, r), 0) | (DOWN if step > 0 else UP)
            bits[(c0, r + step)] = bits.get((c0, r + step), 0) | (UP if step > 0 else DOWN)
    else:
        step = 1 if c1 >= c0 else -1
        for c in range(c0, c1, step):
            bits[(c, r0)] = bits.get((c, r0), 0) | (RIGHT if step > 0 else LEFT)
            bits[(c + step, r0)] = bits.get((c + step, r0), 0) | (LEFT if step > 0 else RIGHT)


def _rect(grid: list[list[str]], x: int, y: int, w: int, h: int, border: str) -> None:
    tl, hz, tr, vt, bl, br = border
    grid[y][x], grid[y][x + w - 1] = tl, tr
    grid[y + h - 1][x], grid[y + h - 1][x + w - 1] = bl, br
    for c in range(x + 1, x + w - 1):
        grid[y][c] = grid[y + h - 1][c] = hz
    for r in range(y + 1, y + h - 1):
        grid[r][x] = grid[r][x + w - 1] = vt


def _box(grid: list[list[str]], node: JSON) -> None:
    x, y, w, h = node["x"], node["y"], node["w"], node["h"]
    _rect(grid, x, y, w, h, BORDERS.get(node["shape"], BORDERS["box"]))
    for i, line in enumerate(node["lines"]):
        start = x + 1 + (w - 2 - len(line)) // 2
        for j, ch in enumerate(line):
            grid[y + 1 + i][start + j] = ch


def _frame(grid: list[list[str]], group: JSON) -> None:
    x, y, w, h = group["x"], group["y"], group["w"], group["h"]
    _rect(grid, x, y, w, h, FRAME)
    for j, ch in enumerate(group["label"][: w - 4]):
        grid[y + 1][x + 2 + j] = ch

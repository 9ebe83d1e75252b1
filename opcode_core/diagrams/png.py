"""PNG diagrams drawn with Pillow from the layout: a shape per step type, a fill per status, and a legend."""

from __future__ import annotations

import functools
import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from opcode_core.diagrams.styles import EDGE, STATUS_ORDER, STATUS_STYLES, STROKE, STYLES, status_style, style_for
from opcode_core.errors import VALIDATION_ERROR, OpcodeError

JSON = dict[str, Any]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
MARGIN = 24
MIN_WIDTH = 360
BACKGROUND = "#ffffff"
GROUP_FILL, GROUP_STROKE, GROUP_IDLE = "#f7f9fa", "#90a4ae", "#eceff1"
MUTED = "#78909c"
TEXT = "#212121"
SWATCH = 14
# About 120 MB of RGB: a workflow wider than this is better read as ascii or mermaid than held in memory.
MAX_PIXELS = 40_000_000


@functools.lru_cache(maxsize=4)
def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_png(layout: JSON) -> tuple[bytes, int, int]:
    """The layout as PNG bytes, with its width and height in pixels."""
    cw, ch = layout["cell_px"]
    font, title_font = _font(12), _font(14)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    inner_w = max(layout["width"] * cw, MIN_WIDTH - 2 * MARGIN)
    legend_rows = _legend_rows(layout, scratch, font, inner_w)
    title_h = 28 if layout.get("title") else 0
    width = inner_w + 2 * MARGIN
    height = MARGIN + title_h + layout["height"] * ch + 16 + len(legend_rows) * 22 + MARGIN
    if width * height > MAX_PIXELS:
        raise OpcodeError(VALIDATION_ERROR, f"the image would be {width}x{height} pixels, over the limit of "
                          f"{MAX_PIXELS:,}: ask for format ascii or mermaid")
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    ox, oy = MARGIN + (inner_w - layout["width"] * cw) // 2, MARGIN + title_h
    if layout.get("title"):
        draw.text((MARGIN, MARGIN), _fit(draw, layout["title"], title_font, inner_w), fill=TEXT, font=title_font)
    for group in layout["groups"]:
        _group(draw, group, ox, oy, cw, ch, font)
    for edge in layout["edges"]:
        _edge(draw, edge, ox, oy, cw, ch)
    for node in layout["nodes"]:
        _node(draw, node, ox, oy, cw, ch, font, layout["with_status"])
    y = oy + layout["height"] * ch + 16
    for row in legend_rows:
        x = MARGIN
        for kind, key, text, w in row:
            _legend_item(draw, kind, key, x, y, text, font)
            x += w
        y += 22
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue(), width, height


def _group(draw: ImageDraw.ImageDraw, group: JSON, ox: int, oy: int, cw: int, ch: int, font: Font) -> None:
    x0, y0 = ox + group["x"] * cw, oy + group["y"] * ch
    x1, y1 = x0 + group["w"] * cw - 1, y0 + group["h"] * ch - 1
    idle = group.get("ran") is False
    draw.rounded_rectangle((x0, y0, x1, y1), radius=6, fill=GROUP_IDLE if idle else GROUP_FILL)
    _dashed_rect(draw, x0, y0, x1, y1, GROUP_STROKE)
    label = _fit(draw, group["label"], font, (group["w"] - 3) * cw)
    draw.text((x0 + 2 * cw - 4, y0 + ch + 2), label, fill=MUTED, font=font)


def _dashed_rect(draw: ImageDraw.ImageDraw, x0: int, y0: int, x1: int, y1: int, colour: str) -> None:
    dash, gap = 6, 4
    for a, b, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True), (y0, y1, x0, False), (y0, y1, x1, False)):
        pos = a
        while pos < b:
            end = min(pos + dash, b)
            line = (pos, fixed, end, fixed) if horizontal else (fixed, pos, fixed, end)
            draw.line(line, fill=colour, width=1)
            pos = end + gap


def _edge(draw: ImageDraw.ImageDraw, edge: JSON, ox: int, oy: int, cw: int, ch: int) -> None:
    points = [(ox + x * cw, oy + y * ch) for x, y in edge["points"]]
    if len(points) < 2:
        return
    draw.line(points, fill=EDGE, width=2, joint="curve")
    if edge["arrow"]:
        (xa, ya), (xb, yb) = points[-2], points[-1]
        dx, dy = (xb > xa) - (xb < xa), (yb > ya) - (yb < ya)
        size, half = 8, 5
        tip = (xb, yb - 1 if dy > 0 else yb)
        base = (tip[0] - dx * size, tip[1] - dy * size)
        wing = (-dy * half, dx * half)
        draw.polygon([tip, (base[0] + wing[0], base[1] + wing[1]), (base[0] - wing[0], base[1] - wing[1])], fill=EDGE)


def _colours(node: JSON, with_status: bool) -> tuple[str, str, str]:
    if with_status:
        s = status_style(node["status"])
        return s.fill, s.stroke, s.text
    return style_for(node["type"]).fill, STROKE, TEXT


def _node(draw: ImageDraw.ImageDraw, node: JSON, ox: int, oy: int, cw: int, ch: int, font: Font,
          with_status: bool) -> None:
    x0, y0 = ox + node["x"] * cw + 1, oy + node["y"] * ch + 1
    x1, y1 = ox + (node["x"] + node["w"]) * cw - 2, oy + (node["y"] + node["h"]) * ch - 2
    fill, stroke, text = _colours(node, with_status)
    _shape(draw, node["shape"], (x0, y0, x1, y1), fill, stroke)
    # The ascii marker is not in Pillow's font; the shape already says the type.
    lines = [node["label"], *node["lines"][1:]]
    avail = (node["w"] - 4) * cw
    for i, line in enumerate(lines):
        line = _fit(draw, line, font, avail)
        tw = draw.textlength(line, font=font)
        top, bottom = draw.textbbox((0, 0), "Ag", font=font)[1::2]
        cy = oy + (node["y"] + 1 + i) * ch + ch / 2
        draw.text((ox + node["x"] * cw + (node["w"] * cw - tw) / 2, cy - (top + bottom) / 2), line, fill=text,
                  font=font)


def _shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: str, stroke: str) -> None:
    x0, y0, x1, y1 = box
    cy = (y0 + y1) / 2
    if shape == "diamond":
        d = min(16, (y1 - y0) / 2)
        draw.polygon([(x0, cy), (x0 + d, y0), (x1 - d, y0), (x1, cy), (x1 - d, y1), (x0 + d, y1)], fill=fill,
                     outline=stroke, width=2)
    elif shape == "stadium":
        draw.rounded_rectangle(box, radius=(y1 - y0) // 2, fill=fill, outline=stroke, width=2)
    elif shape == "parallelogram":
        s = 8
        draw.polygon([(x0 + s, y0), (x1, y0), (x1 - s, y1), (x0, y1)], fill=fill, outline=stroke, width=2)
    elif shape == "round":
        draw.ellipse(box, fill=fill, outline=stroke, width=2)
    elif shape == "double":
        draw.rectangle(box, fill=fill, outline=stroke, width=2)
        draw.rectangle((x0 + 4, y0 + 4, x1 - 4, y1 - 4), outline=stroke, width=1)
    else:
        draw.rectangle(box, fill=fill, outline=stroke, width=2)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: float) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _legend_rows(layout: JSON, draw: ImageDraw.ImageDraw, font: Font, width: int) -> list[list[tuple]]:
    present = layout["types"]
    items: list[tuple[str, str, str]] = [("type", t, t) for t in STYLES if t in present]
    items += [("type", t, t) for t in sorted(present) if t not in STYLES]
    if layout["with_status"]:
        items += [("status", s, f"[{STATUS_STYLES[s].tag}] {s}") for s in STATUS_ORDER]
    rows: list[list[tuple]] = [[]]
    used = 0
    for kind, key, text in items:
        w = int(SWATCH * 2 + 8 + draw.textlength(text, font=font) + 16)
        if rows[-1] and used + w > width:
            rows.append([])
            used = 0
        rows[-1].append((kind, key, text, w))
        used += w
    return [row for row in rows if row]


def _legend_item(draw: ImageDraw.ImageDraw, kind: str, key: str, x: int, y: int, text: str, font: Font) -> None:
    box = (x, y, x + SWATCH * 2, y + SWATCH)
    if kind == "type":
        _shape(draw, style_for(key).shape, box, style_for(key).fill, STROKE)
    else:
        s = STATUS_STYLES[key]
        draw.rectangle(box, fill=s.fill, outline=s.stroke, width=2)
    draw.text((x + SWATCH * 2 + 6, y), text, fill=TEXT, font=font)

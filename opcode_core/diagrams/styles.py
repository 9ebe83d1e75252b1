"""How each step type and each step status looks: shapes, markers, tags and colours, in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class TypeStyle:
    """The look of one step type in every format."""

    shape: str  # box | diamond | stadium | parallelogram | round | double (the layout's `shape` field)
    marker: str  # one character before the step id in ascii
    fill: str  # PNG/SVG/mermaid fill when the diagram has no statuses
    # A one-line summary of the step's config; None: the generic summary of its scalar config values.
    detail: Callable[[JSON], str] | None = None
    # The label of a nested list that repeats at run time, drawn once for a template (loop bodies).
    repeat_label: str | None = None


def _loop_detail(config: JSON) -> str:
    mode = config.get("mode") or "for_each"
    what = config.get("over") if mode == "for_each" else config.get("condition")
    if isinstance(what, list):
        what = f"[{len(what)} items]"
    text = f"{mode} over {what}" if mode == "for_each" else f"{mode} {what}"
    return f"{text} (max {config['max_iter']})" if config.get("max_iter") else text


def _parallel_detail(config: JSON) -> str:
    return f"{config.get('mode') or 'all'} of {len(config.get('branches') or [])} branches"


def _wait_detail(config: JSON) -> str:
    if config.get("signal"):
        return f"signal {config['signal']}"
    return f"wait {config.get('duration')}"


def _reasoning_detail(config: JSON) -> str:
    options = [str(o.get("id")) for o in config.get("options") or [] if isinstance(o, dict)]
    return " | ".join(options) if options else "free-form decision"


STYLES: dict[str, TypeStyle] = {
    "action": TypeStyle("box", "▸", "#e8eaf6"),
    "condition": TypeStyle("diamond", "◆", "#fff3e0", lambda c: str(c.get("expression", ""))),
    "loop": TypeStyle("stadium", "↻", "#e0f2f1", _loop_detail, repeat_label="iter"),
    "parallel": TypeStyle("parallelogram", "⇉", "#f3e5f5", _parallel_detail),
    "wait": TypeStyle("round", "◷", "#e1f5fe", _wait_detail),
    "reasoning": TypeStyle("double", "⚑", "#fce4ec", _reasoning_detail),
}
# Step types from third-party plugins: a plain box, described by their scalar config values.
DEFAULT_STYLE = TypeStyle("box", "•", "#eceff1")


def style_for(step_type: str) -> TypeStyle:
    """The style of a step type (a plain box for types this module does not know)."""
    return STYLES.get(step_type, DEFAULT_STYLE)


@dataclass(frozen=True)
class StatusStyle:
    """The look of one step status."""

    tag: str  # ascii tag, without brackets
    css: str  # mermaid class name
    fill: str
    stroke: str
    text: str


STATUS_STYLES: dict[str, StatusStyle] = {
    "completed": StatusStyle("OK", "completed", "#c8e6c9", "#2e7d32", "#1b3a1c"),
    "failed": StatusStyle("FAIL", "failed", "#ffcdd2", "#c62828", "#4a0d0d"),
    "running": StatusStyle("RUN", "running", "#bbdefb", "#1565c0", "#0d2a4a"),
    "suspended": StatusStyle("WAIT", "suspended", "#ffe0b2", "#ef6c00", "#4a2600"),
    "pending": StatusStyle("PEND", "pending", "#eeeeee", "#757575", "#333333"),
    "skipped": StatusStyle("SKIP", "skipped", "#f5f5f5", "#9e9e9e", "#757575"),
    "retrying": StatusStyle("RETRY", "retrying", "#fff9c4", "#f9a825", "#4a3b00"),
}
# `scheduled` is a step about to run; anything unknown is shown as not started.
STATUS_ALIASES = {"scheduled": "pending"}
STATUS_ORDER = tuple(STATUS_STYLES)
STROKE = "#37474f"
EDGE = "#546e7a"


def status_style(status: str | None) -> StatusStyle:
    """The style of a step status; a step with no status yet is pending."""
    key = STATUS_ALIASES.get(status or "pending", status or "pending")
    return STATUS_STYLES.get(key, STATUS_STYLES["pending"])


def format_duration(ms: Any) -> str:
    """`450ms`, `1.2s`, `3m05s`: short enough for a node."""
    if not isinstance(ms, int | float) or isinstance(ms, bool) or ms < 0:
        return ""
    if ms < 1000:
        return f"{int(ms)}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    return f"{minutes}m{seconds:02d}s"

"""Which MCP sessions belong to which agent, so `workflow.notify` reaches the run's agent (best effort)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

log = logging.getLogger("opcode.sessions")


class RawNotification(BaseModel):
    """A notification whose params go out as given (the SDK's Notification type drops custom params)."""

    method: str
    params: dict[str, Any] | None = None


def session_key(ctx: Any) -> str | None:
    """The transport's id of the connection a request came on: SSE `session_id` or `mcp-session-id`."""
    request = getattr(ctx, "request", None)
    if request is None:
        # stdio (`opcode mcp-stdio`): no HTTP request, one connection per process.
        connection = getattr(ctx.session, "_connection", None)
        return None if connection is None else f"connection-{id(connection)}"
    return request.query_params.get("session_id") or request.headers.get("mcp-session-id")


def on_connection_close(session: Any, callback: Any) -> bool:
    """Run `callback` when the connection closes; uses the SDK's private per-connection exit stack."""
    connection = getattr(session, "_connection", None)
    stack = getattr(connection, "exit_stack", None)
    if stack is None:
        return False
    stack.callback(callback)
    return True


class AgentSessions:
    """agent id → {session key: session}; entries leave when their connection closes."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}

    def remember(self, agent_id: str, ctx: Any) -> None:
        """Note that this request's connection speaks for `agent_id`."""
        key = session_key(ctx)
        if key is None:
            return
        by_key = self.sessions.setdefault(agent_id, {})
        if key not in by_key:
            by_key[key] = ctx.session
            watched = on_connection_close(ctx.session, lambda: self.forget(agent_id, key))
            log.debug("agent %s connected on %s (close watched: %s)", agent_id, key, watched)

    def forget(self, agent_id: str, key: str) -> None:
        """Drop a closed connection."""
        self.sessions.get(agent_id, {}).pop(key, None)
        log.debug("agent %s disconnected from %s", agent_id, key)

    async def notify(self, agent_id: str, payload: dict[str, Any]) -> bool:
        """Push a `notifications/message` to each live session of the agent; True when there was one."""
        targets = list(self.sessions.get(agent_id, {}).values())
        params = {"level": "info", "logger": "opcode", "data": payload, **{k: payload.get(k) for k in
                  ("message", "workflow_id", "step_id")}}
        for session in targets:
            try:
                await session.send_notification(RawNotification(method="notifications/message", params=params))
            except Exception:
                log.warning("could not notify agent %s", agent_id, exc_info=True)
        return bool(targets)

"""`GET /live`: the panel's SSE feed, one asyncio.Queue per browser, fed by the runtime's event hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request

from opcode_server.panel.render import templates

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime

log = logging.getLogger("opcode.panel")

QUEUE_MAX = 1000
# Events that arrive within this window go out together and trigger one refresh of the page's live parts.
COALESCE_S = 0.2
# Rows pushed per batch: a burst of thousands of events refreshes the page, it does not stream each row.
ROWS_PER_BATCH = 50
PING_S = 15
LABELS_MAX = 1000


class LiveFeed:
    """Streams the runtime's durable events to browsers: `activity` rows and `changed` refresh hints."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def endpoint(self, request: Request) -> EventSourceResponse:
        """One browser's stream, optionally of one workflow's events only (`?workflow_id=`)."""
        workflow_id = request.query_params.get("workflow_id") or None
        return EventSourceResponse(self._stream(workflow_id), ping=PING_S, headers={"Cache-Control": "no-store"})

    async def _stream(self, workflow_id: str | None) -> AsyncIterator[dict[str, str]]:
        loop = asyncio.get_running_loop()
        row = templates.get_template("_event_row.html")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        labels: dict[str, str] = {}

        def observe(event: dict[str, Any]) -> None:
            if workflow_id is not None and event["workflow_id"] != workflow_id:
                return
            # A browser this far behind drops rows; the `changed` hint it still gets re-reads the page's parts.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

        # Subscribed inside the generator, so the `finally` below always pairs with it, however the stream ends.
        unsubscribe = self.runtime.subscribe(observe)
        try:
            yield {"event": "ready", "data": ""}
            while True:
                batch = [await queue.get()]
                deadline = loop.time() + COALESCE_S
                while (left := deadline - loop.time()) > 0:
                    while not queue.empty():
                        batch.append(queue.get_nowait())
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), left))
                    except TimeoutError:
                        break
                rows = batch[-ROWS_PER_BATCH:]
                unknown = {e["workflow_id"] for e in rows} - set(labels)
                if unknown and workflow_id is None:
                    if len(labels) > LABELS_MAX:
                        labels.clear()
                    labels.update(await self.runtime.db(self.runtime.store.workflow_labels, unknown))
                for event in rows:
                    html = row.render(event=event, feed=workflow_id is None, labels=labels)
                    yield {"event": "activity", "data": html}
                changed = sorted({e["workflow_id"] for e in batch})
                yield {"event": "changed", "data": json.dumps(changed)}
        finally:
            # Runs on disconnect too (the stream's task is cancelled): a closed tab leaves no observer behind.
            unsubscribe()

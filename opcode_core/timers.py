"""The timer service: one task that fires every deadline of a process at its wall-clock time.

Deadlines are durable because their owners store them (a decision's `timeout_at`, a wait's `until`, a
job's `next_run_at`) and arm them again at start-up; this service only keeps the armed ones in a heap and
calls each once, at or after its time, unless it was cancelled first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("opcode.timers")

Callback = Callable[[], Awaitable[None] | None]


class TimerService:
    """Armed deadlines by key; `run()` is the task that fires them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, str]] = []
        self._armed: dict[str, tuple[float, int, Callback]] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._fired: set[asyncio.Task[None]] = set()

    def at(self, key: str, when: float, callback: Callback) -> None:
        """Call `callback` at epoch time `when` (at once if it passed); replaces an earlier timer of `key`."""
        seq = next(self._order)
        self._armed[key] = (when, seq, callback)
        heapq.heappush(self._heap, (when, seq, key))
        self._changed.set()

    def cancel(self, key: str) -> bool:
        """Disarm `key`; False when it was not armed (never set, already fired or cancelled)."""
        return self._armed.pop(key, None) is not None

    def armed(self) -> dict[str, float]:
        """Every armed key with its time."""
        return {key: when for key, (when, _, _) in self._armed.items()}

    async def run(self) -> None:
        """Fire deadlines as they come, until cancelled."""
        while True:
            self._changed.clear()
            delay = self._fire_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)

    def _fire_due(self) -> float | None:
        """Start the callbacks whose time has come; seconds until the next one (None: nothing armed)."""
        while self._heap:
            when, seq, key = self._heap[0]
            current = self._armed.get(key)
            if current is None or current[1] != seq:
                heapq.heappop(self._heap)  # cancelled or re-armed since: a stale entry
                continue
            wait = when - self.clock()
            if wait > 0:
                return wait
            heapq.heappop(self._heap)
            del self._armed[key]
            self._start(key, current[2])
        return None

    def _start(self, key: str, callback: Callback) -> None:
        async def call() -> None:
            try:
                result = callback()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("timer %s failed", key)

        task = asyncio.create_task(call(), name=f"opcode-timer:{key}")
        # The loop keeps only weak references to tasks: hold each until it is done.
        self._fired.add(task)
        task.add_done_callback(self._fired.discard)

"""Retry policies (SPEC §7): how many attempts, and how long to wait before each retry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opcode_core.engine.durations import parse_duration


@dataclass(frozen=True)
class RetryPolicy:
    """`retry: {max, backoff, delay, max_delay}` of a step, with durations in seconds."""

    max: int = 0
    backoff: str = "none"
    delay: float = 0.0
    max_delay: float | None = None

    @classmethod
    def from_step(cls, raw: dict[str, Any] | None) -> RetryPolicy:
        """The policy a step declares; no `retry` means no retries."""
        if not raw:
            return cls()
        max_delay = raw.get("max_delay")
        return cls(
            max=int(raw.get("max") or 0),
            backoff=raw.get("backoff") or "none",
            delay=parse_duration(raw["delay"]) if raw.get("delay") not in (None, "") else 0.0,
            max_delay=parse_duration(max_delay) if max_delay not in (None, "") else None,
        )

    def delay_before(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        if self.backoff == "linear":
            delay = self.delay * retry
        elif self.backoff == "exponential":
            delay = self.delay * 2 ** (retry - 1)
        elif self.backoff == "constant":
            delay = self.delay
        else:
            delay = 0.0
        return min(delay, self.max_delay) if self.max_delay is not None else delay

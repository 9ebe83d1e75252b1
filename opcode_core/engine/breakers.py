"""Per-action circuit breakers: closed → open after N consecutive failures → half-open probe → closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from opcode_core.errors import CIRCUIT_OPEN, OpcodeError

Transition = Callable[[str, str, dict[str, object]], None]


@dataclass
class Breaker:
    """The state of one action's breaker."""

    state: str = "closed"  # closed | open | half_open
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False


class CircuitBreakers:
    """All breakers of a runtime; `transition(action, state, details)` is told of every change."""

    def __init__(self, threshold: int = 5, reset_after: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.reset_after = reset_after
        self.clock = clock
        self.breakers: dict[str, Breaker] = {}

    def before_call(self, action: str, transition: Transition) -> None:
        """Refuse with CIRCUIT_OPEN while open; after the interval let exactly one probe through."""
        breaker = self.breakers.get(action)
        if breaker is None or breaker.state == "closed":
            return  # the path of every call to a healthy action: no allocation
        if breaker.state == "open" and self.clock() - breaker.opened_at >= self.reset_after:
            breaker.state, breaker.probing = "half_open", False
            transition(action, "half_open", {"failures": breaker.failures})
        if breaker.state == "half_open" and not breaker.probing:
            breaker.probing = True
            return
        raise OpcodeError(CIRCUIT_OPEN, f"circuit breaker for {action} is open after {breaker.failures} "
                          "consecutive failures; the action was not called",
                          details={"action": action, "state": breaker.state})

    def succeeded(self, action: str, transition: Transition) -> None:
        """A call went through: a half-open breaker closes, failures reset."""
        breaker = self.breakers.get(action)
        if breaker is None or (breaker.state == "closed" and not breaker.failures):
            return  # nothing to reset
        if breaker.state != "closed":
            transition(action, "closed", {"failures": breaker.failures})
        self.breakers[action] = Breaker()

    def failed(self, action: str, transition: Transition) -> None:
        """A call failed: count it; open at the threshold, or again after a failed probe."""
        breaker = self.breakers.setdefault(action, Breaker())
        breaker.failures += 1
        if breaker.state == "half_open" or (breaker.state == "closed" and breaker.failures >= self.threshold):
            breaker.state, breaker.opened_at, breaker.probing = "open", self.clock(), False
            transition(action, "open", {"failures": breaker.failures, "reset_after_s": self.reset_after})

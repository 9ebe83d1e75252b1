"""Secret redaction: every known secret value, wherever it appears in a string, becomes `***`."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "***"
# Below this length a value also matches ordinary text ("abc" in "abcdef"), so redaction may hide more
# than the secret. It is still redacted: hiding too much beats showing a secret. See docs/secrets.md.
SHORT_SECRET = 4


class Redactor:
    """The secret values in use, and the function that hides them in any JSON-like value."""

    def __init__(self, also: Iterable[Redactor] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        # Redactors that learn every value this one learns (the process-wide one the log formatter uses).
        self._also = tuple(also)
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return self._pattern is not None

    def add(self, value: str) -> None:
        """Redact `value` from now on; empty values are ignored (they would match everywhere)."""
        if value and value not in self._values:
            with self._lock:
                self._values.add(value)
                # Longest first, so a secret that contains another is hidden whole, not as `***tail`.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, ordered)))
        for other in self._also:
            other.add(value)

    def redact_text(self, text: str) -> str:
        """`text` with every known secret replaced by `***`."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(MASK, text)

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings, numbers) with secrets hidden; never mutates it."""
        pattern = self._pattern
        if pattern is None:
            return value
        return _redact(value, pattern)


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value) if pattern.search(value) else value
    if isinstance(value, dict):
        return {_redact(k, pattern): _redact(v, pattern) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, pattern) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A numeric secret echoed by a shell comes back JSON-parsed as a number. Only a whole match is
        # hidden: digits that merely contain a short secret are far more often a false positive.
        return MASK if pattern.fullmatch(str(value)) else value
    return value


# Process-wide: the log formatter has no runtime to ask, so every runtime's redactor feeds this one.
LOG_REDACTOR = Redactor()

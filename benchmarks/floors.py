"""The floors opcode is measured against: plain asyncio (A) and the same plus batched raw SQLite events (B)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path

from benchmarks.shapes import Shape, levels


async def noop() -> dict:
    """The step body every contender runs."""
    return {}


async def floor_a(shape: Shape) -> None:
    """Run the shape level by level with asyncio.gather, persisting nothing."""
    for level in levels(shape):
        await asyncio.gather(*(noop() for _ in level))


class FloorB:
    """Floor A plus the same 2N+2 events written to SQLite (WAL, synchronous=NORMAL), one commit per level."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS events (workflow_id TEXT, sequence INTEGER, event_type TEXT, "
                        "step_id TEXT, payload TEXT, timestamp TEXT, UNIQUE(workflow_id, sequence))")

    def _write(self, rows: list[tuple]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
        self.db.execute("COMMIT")

    async def run(self, shape: Shape) -> int:
        """Run one workflow of the shape; returns how many events it wrote."""
        wid, seq, written = str(uuid.uuid4()), 0, 0

        def rows(kind: str, ids: list[str | None], payload: dict) -> list[tuple]:
            nonlocal seq
            out = []
            for sid in ids:
                seq += 1
                out.append((wid, seq, kind, sid, json.dumps(payload), f"{time.time():.6f}"))
            return out

        self._write(rows("workflow_started", [None], {}))
        written += 1
        for level in levels(shape):
            started = rows("step_started", level, {"attempt": 1})
            outputs = await asyncio.gather(*(noop() for _ in level))
            done = rows("step_completed", level, {"output": outputs[0] if outputs else {}})
            self._write(started + done)
            written += len(started) + len(done)
        self._write(rows("workflow_completed", [None], {}))
        return written + 1

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

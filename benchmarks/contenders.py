"""opcode through its public API (in-memory SQLite and durable SQLite WAL), and DBOS Transact when installed."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.shapes import Shape, definition
from opcode_core import ActionSpec, hookimpl, service
from opcode_core.engine.definition import load_definition
from opcode_core.runtime import Runtime
from opcode_core.settings import load_settings


async def _noop(params: dict, ctx: Any) -> dict:
    return {}


@hookimpl
def opcode_register_actions() -> list[ActionSpec]:
    """The benchmark's no-op action, so steps cost only what the engine costs."""
    return [ActionSpec("bench.noop", "Do nothing.", {"type": "object"}, _noop)]


BENCH_PLUGIN = SimpleNamespace(opcode_register_actions=opcode_register_actions)


class OpcodeContender:
    """A runtime on one database; `run(shape)` runs one workflow of it through service.start_run."""

    def __init__(self, db_url: str, home: Path) -> None:
        env = {"OPCODE_HOME": str(home), "OPCODE_LOAD_PLUGINS": "", "OPCODE_DB_URL": db_url,
               "OPCODE_POOL_SIZE": "1000", "OPCODE_LOG_LEVEL": "warning"}
        self.runtime = Runtime(load_settings(env), extra_plugins={"bench": BENCH_PLUGIN})
        self._models: dict[int, Any] = {}
        self._ctx: Any = None

    async def __aenter__(self) -> OpcodeContender:
        self._ctx = self.runtime.running()
        await self._ctx.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._ctx.__aexit__(*exc)

    def model(self, shape: Shape) -> Any:
        """The validated definition of a shape, built once (as a stored template would be)."""
        key = id(shape)
        if key not in self._models:
            self._models[key] = load_definition(definition(shape), self.runtime.registry)
        return self._models[key]

    async def run(self, shape: Shape) -> dict[str, Any]:
        """Run one workflow to completion and return its result."""
        return await service.start_run(self.runtime, definition=self.model(shape), name="bench", agent_id="bench",
                                       params={})


def durable(home: Path) -> OpcodeContender:
    """opcode on a real SQLite file (WAL)."""
    return OpcodeContender(f"sqlite:///{home / 'bench.db'}", home)


def in_memory(home: Path) -> OpcodeContender:
    """opcode on an in-memory SQLite store."""
    return OpcodeContender("sqlite:///:memory:", home)


class DbosContender:
    """DBOS Transact on SQLite, the same shapes as steps of one workflow; None when not installed."""

    def __init__(self, home: Path) -> None:
        from dbos import DBOS  # the optional `bench` extra

        self.DBOS = DBOS
        DBOS(config={"name": "opcode-bench", "system_database_url": f"sqlite:///{home / 'dbos.sqlite'}"})

        @DBOS.step()
        async def step() -> dict:
            return {}

        @DBOS.workflow()
        async def workflow(levels: list[list[str]]) -> int:
            for level in levels:
                await asyncio.gather(*(step() for _ in level))
            return 0

        self.workflow = workflow
        DBOS.launch()

    async def run(self, shape: Shape) -> None:
        """Run one workflow of the shape."""
        from benchmarks.shapes import levels

        await self.workflow(levels(shape))

    def close(self) -> None:
        """Shut DBOS down."""
        self.DBOS.destroy()


def make_dbos(home: Path) -> DbosContender | str:
    """A DBOS contender, or the reason there is none."""
    try:
        return DbosContender(home)
    except ImportError:
        return "DBOS Transact is not installed (pip install -e '.[bench]')"
    except Exception as exc:  # a broken DBOS setup must not stop the rest of the bench
        return f"DBOS Transact could not start: {type(exc).__name__}: {exc}"


def temp_home() -> Path:
    """A fresh directory for one contender's files."""
    return Path(tempfile.mkdtemp(prefix=f"opcode-bench-{uuid.uuid4().hex[:6]}-"))

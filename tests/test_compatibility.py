"""Every workflow of the original's example corpus is accepted by `opcode.define` unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opcode_core import service

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "upstream-examples"
FILES = sorted(EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []


@pytest.mark.skipif(not FILES, reason=f"{EXAMPLES} is absent: the upstream example corpus lives outside the repo")
async def test_every_upstream_example_is_accepted_unchanged(runtime) -> None:
    refused = {}
    for path in FILES:
        doc = json.loads(path.read_text())
        try:
            answer = await service.define_template(
                runtime,
                name=doc["name"],
                definition=doc["definition"],
                agent_id="compat",
                description=doc.get("description"),
                input_schema=doc.get("input_schema"),
            )
            assert answer["version"] == "v1"
        except Exception as exc:  # collect them all, then report every refusal at once
            refused[path.name] = str(exc)
    assert refused == {}
    assert len(FILES) == 45

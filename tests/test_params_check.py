"""Accepted params are remembered per action by their canonical JSON; everything else is validated each time."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from opcode_core.errors import ValidationError
from opcode_core.registry import ACCEPTED_PER_ACTION, Registry
from opcode_core.specs import ActionSpec

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "minLength": 1},
        "retries": {"type": "integer", "minimum": 0, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}},
    },
    "additionalProperties": False,
}


async def execute(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {}


class CountingValidator:
    """Stands in for the registry's cached validator of an action and counts its passes over params."""

    def __init__(self, registry: Registry, spec: ActionSpec) -> None:
        registry.validate_params(spec, {"url": "warm-up"})
        cached_spec, self.validator, accepted = registry._validators[spec.name]
        registry._validators[spec.name] = (cached_spec, self, accepted)  # type: ignore[assignment]
        self.calls = 0

    def iter_errors(self, instance: Any) -> Any:
        self.calls += 1
        return self.validator.iter_errors(instance)


@pytest.fixture
def registry() -> Registry:
    return Registry({"t.act": ActionSpec("t.act", "test", SCHEMA, execute)}, {})


def test_validate_params_lists_every_problem_with_its_path(registry: Registry) -> None:
    spec = registry.actions["t.act"]
    registry.validate_params(spec, {"url": "x", "tags": ["ab"]})
    with pytest.raises(ValidationError) as info:
        registry.validate_params(spec, {"url": "", "retries": 9})
    assert [p["path"] for p in info.value.problems] == ["params.retries", "params.url"]


def test_accepted_params_are_validated_once_rejected_ones_every_time(registry: Registry) -> None:
    spec = registry.actions["t.act"]
    counter = CountingValidator(registry, spec)
    for _ in range(3):
        registry.validate_params(spec, {"tags": ["a"], "url": "x"})
        registry.validate_params(spec, {"url": "x", "tags": ["a"]})  # same JSON, other key order
    assert counter.calls == 1
    for _ in range(2):
        with pytest.raises(ValidationError):
            registry.validate_params(spec, {"url": "x", "retries": 9})
    assert counter.calls == 3
    # 3 and 3.0 are different JSON: each is checked (and both pass, as integers do in JSON Schema).
    registry.validate_params(spec, {"url": "x", "retries": 3})
    registry.validate_params(spec, {"url": "x", "retries": 3.0})
    assert counter.calls == 5


def test_params_that_are_not_plain_json_are_always_validated(registry: Registry) -> None:
    spec = registry.actions["t.act"]
    counter = CountingValidator(registry, spec)
    for _ in range(2):
        with pytest.raises(ValidationError):
            registry.validate_params(spec, {"url": "x", "retries": Decimal(9)})
    assert counter.calls == 2


def test_the_cache_is_bounded_and_follows_a_replaced_spec(registry: Registry) -> None:
    spec = registry.actions["t.act"]
    for i in range(ACCEPTED_PER_ACTION + 5):
        registry.validate_params(spec, {"url": f"u{i}"})
    assert len(registry._validators["t.act"][2]) <= ACCEPTED_PER_ACTION
    # An external MCP server that comes back with another schema: the old acceptances do not carry over.
    stricter = ActionSpec("t.act", "test", {**SCHEMA, "properties": {**SCHEMA["properties"],
                                                                     "url": {"type": "string", "maxLength": 1}}},
                          execute)
    registry.actions["t.act"] = stricter
    with pytest.raises(ValidationError):
        registry.validate_params(stricter, {"url": "u1"})

"""workflow.* actions against a recording RunServices."""

from __future__ import annotations

import logging

import pytest

from opcode_core.errors import EXECUTION_ERROR, NON_RETRYABLE, NOT_FOUND, PERMISSION_DENIED, ActionError, OpcodeError
from opcode_plugins import workflow

SPECS = {spec.name: spec for spec in workflow.opcode_register_actions(settings=None)}


def test_entry_point_provides_the_six_actions(via_entry_point):
    module, specs = via_entry_point("workflow")
    assert module is workflow
    assert sorted(s.name for s in specs) == [
        "workflow.context", "workflow.emit", "workflow.fail", "workflow.log", "workflow.notify", "workflow.run",
    ]


def test_schemas_are_complete(well_formed):
    well_formed(list(SPECS.values()), open_schemas=("workflow.log",))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("workflow.log", {"message": "hi"}),
        ("workflow.log", {"message": "hi", "level": "warn", "data": [1]}),
        ("workflow.log", {"message": "hi", "path": "/tmp/x", "size_mb": 3}),  # the original's examples do this
        ("workflow.emit", {"event_type": "deployed", "payload": {"v": 1}}),
        ("workflow.emit", {"event": "notification.received", "data": {"a": 1}}),
        ("workflow.emit", {"signal": "critical_alert", "payload": {}}),
        ("workflow.context", {"action": "read"}),
        ("workflow.context", {"action": "read", "workflow_id": "wf-1"}),
        ("workflow.context", {"action": "update", "data": {"k": 1}}),
        ("workflow.context", {"action": "update", "agent_notes": "n"}),
        ("workflow.fail", {"reason": "bad"}),
        ("workflow.fail", {"message": "bad"}),
        ("workflow.notify", {"message": "done", "data": {"n": 1}}),
        ("workflow.run", {"template_name": "child"}),
        ("workflow.run", {"template_name": "child", "version": "v2", "params": {"x": 1}}),
    ],
)
def test_valid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) == []


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("workflow.log", {}),
        ("workflow.log", {"message": ""}),
        ("workflow.log", {"message": "hi", "level": "fatal"}),
        ("workflow.emit", {}),
        ("workflow.emit", {"payload": {}}),
        ("workflow.emit", {"event_type": "a", "event": "b"}),
        ("workflow.emit", {"event_type": "a", "payload": 1, "data": 2}),
        ("workflow.emit", {"event_type": "a", "extra": 1}),
        ("workflow.context", {}),
        ("workflow.context", {"action": "delete"}),
        ("workflow.context", {"action": "update"}),
        ("workflow.context", {"action": "update", "data": [1, 2]}),
        ("workflow.fail", {}),
        ("workflow.fail", {"reason": ""}),
        ("workflow.notify", {"data": 1}),
        ("workflow.run", {}),
        ("workflow.run", {"template_name": "c", "params": [1]}),
        ("workflow.run", {"template_name": "c", "wait": False}),
    ],
)
def test_invalid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) != []


async def test_log_writes_through_the_step_logger_with_data(make_ctx, caplog):
    logger = logging.LoggerAdapter(logging.getLogger("test.wf"), {"workflow_id": "wf-1", "step_id": "s"})
    ctx = make_ctx(logger=logger)
    with caplog.at_level(logging.DEBUG, logger="test.wf"):
        out = await SPECS["workflow.log"].execute({"message": "disk low", "level": "warn", "data": {"pct": 91}}, ctx)
    assert out == {"logged": True, "level": "warn", "message": "disk low"}
    (record,) = caplog.records
    assert (record.levelno, record.getMessage()) == (logging.WARNING, "disk low")
    assert record.data == {"pct": 91}
    assert record.workflow_id == "wf-1"  # the adapter's bound ids survive next to the data


@pytest.mark.parametrize(("level", "levelno"), [("debug", 10), ("info", 20), ("error", 40)])
async def test_log_levels(ctx, caplog, level, levelno):
    with caplog.at_level(logging.DEBUG, logger="test"):
        await SPECS["workflow.log"].execute({"message": "m", "level": level}, ctx)
    assert [r.levelno for r in caplog.records] == [levelno]


async def test_log_default_level_is_info_and_extra_keys_become_data(ctx, caplog):
    with caplog.at_level(logging.DEBUG, logger="test"):
        out = await SPECS["workflow.log"].execute({"message": "backup ok", "path": "/b", "data": 0}, ctx)
    assert out["level"] == "info"
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.data == {"path": "/b", "data": 0}


async def test_log_below_the_logger_level_is_not_written(ctx, caplog):
    with caplog.at_level(logging.INFO, logger="test"):
        out = await SPECS["workflow.log"].execute({"message": "noise", "level": "debug"}, ctx)
    assert out["logged"] is True
    assert caplog.records == []


async def test_emit_records_a_custom_event(ctx, services):
    out = await SPECS["workflow.emit"].execute({"event_type": "deployed", "payload": {"v": 2}}, ctx)
    assert out == {"emitted": True, "event_type": "deployed"}
    assert services.calls == [("emit", "deployed", {"v": 2})]


async def test_emit_accepts_the_original_examples_spellings(ctx, services):
    await SPECS["workflow.emit"].execute({"event": "notification.received", "data": {"a": 1}}, ctx)
    await SPECS["workflow.emit"].execute({"signal": "critical_alert"}, ctx)
    assert services.calls == [("emit", "notification.received", {"a": 1}), ("emit", "critical_alert", None)]


async def test_context_read_returns_the_context(ctx, services):
    services.context = {"intent": "ship it", "n": 1}
    assert await SPECS["workflow.context"].execute({"action": "read"}, ctx) == {"intent": "ship it", "n": 1}


async def test_context_update_merges_data_and_notes(ctx, services):
    out = await SPECS["workflow.context"].execute(
        {"action": "update", "workflow_id": "wf-1", "data": {"env": "prod"}, "agent_notes": "careful"}, ctx
    )
    assert services.calls == [("update_context", {"env": "prod", "agent_notes": "careful"})]
    assert out == {
        "updated": True,
        "workflow_id": "wf-1",
        "context": {"intent": "test", "env": "prod", "agent_notes": "careful"},
    }


async def test_context_of_another_run_is_refused(ctx, services):
    with pytest.raises(ActionError) as info:
        await SPECS["workflow.context"].execute({"action": "read", "workflow_id": "someone-else"}, ctx)
    assert info.value.code == PERMISSION_DENIED
    assert services.calls == []


@pytest.mark.parametrize("params", [{"reason": "policy violated"}, {"message": "policy violated"}])
async def test_fail_raises_non_retryable(ctx, params):
    with pytest.raises(ActionError) as info:
        await SPECS["workflow.fail"].execute(params, ctx)
    assert (info.value.code, info.value.message) == (NON_RETRYABLE, "policy violated")
    assert info.value.retryable is False


async def test_notify_connected(ctx, services):
    out = await SPECS["workflow.notify"].execute({"message": "done", "data": {"n": 3}}, ctx)
    assert out == {"notified": True}
    assert services.calls == [("notify", "done", {"n": 3}, ctx.step_id)]


async def test_notify_not_connected_still_completes(ctx, services):
    services.connected = False
    out = await SPECS["workflow.notify"].execute({"message": "done"}, ctx)
    assert out == {"notified": False, "reason": "agent not connected"}
    assert services.calls == [("notify", "done", None, ctx.step_id)]


async def test_notify_failure_is_best_effort(ctx, services):
    services.notify_error = ConnectionError("session gone")
    out = await SPECS["workflow.notify"].execute({"message": "done"}, ctx)
    assert out == {"notified": False, "reason": "session gone"}


async def test_run_returns_the_child_output(ctx, services):
    services.child_result = {"workflow_id": "c-9", "status": "completed", "output": {"total": 42}}
    out = await SPECS["workflow.run"].execute({"template_name": "sum", "version": "v3", "params": {"xs": [1]}}, ctx)
    assert out == {"total": 42}
    assert services.calls == [("run_child", "sum", "v3", {"xs": [1]})]


async def test_run_defaults_to_latest_version_and_no_params(ctx, services):
    await SPECS["workflow.run"].execute({"template_name": "sum"}, ctx)
    assert services.calls == [("run_child", "sum", None, {})]


async def test_run_wraps_a_non_object_output(ctx, services):
    services.child_result = {"workflow_id": "c", "status": "completed", "output": None}
    assert await SPECS["workflow.run"].execute({"template_name": "t"}, ctx) == {"output": None}


@pytest.mark.parametrize("status", ["failed", "cancelled", "suspended"])
async def test_run_fails_when_the_child_does_not_complete(ctx, services, status):
    error = {"code": "STEP_FAILED", "message": "step x failed"} if status == "failed" else None
    services.child_result = {"workflow_id": "c-1", "status": status, "output": None, "error": error}
    with pytest.raises(ActionError) as info:
        await SPECS["workflow.run"].execute({"template_name": "t"}, ctx)
    assert info.value.code == EXECUTION_ERROR
    assert info.value.output == {"workflow_id": "c-1", "status": status, "error": error}
    assert f"c-1) ended {status}" in info.value.message
    if error:
        assert info.value.message.endswith(": step x failed")


async def test_run_lets_a_runtime_error_through(ctx, services):
    async def missing(*args, **kwargs):
        raise OpcodeError(NOT_FOUND, "template 'nope' not found")

    services.run_child = missing
    with pytest.raises(OpcodeError) as info:
        await SPECS["workflow.run"].execute({"template_name": "nope"}, ctx)
    assert info.value.code == NOT_FOUND

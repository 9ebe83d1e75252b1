"""The plugin as opcode sees it once installed: found through its entry point, and its action run in real runs.

The fixtures (`opcode_loaded_plugins`, `opcode_registry`, `run_action`, `run_workflow`) come with opcode itself
(`opcode_core.testing`, a pytest plugin): each test gets a fresh opcode home and SQLite file.
"""

import pytest

from opcode_core import OpcodeError

PLUGIN = "{{ cookiecutter.underscored }}"
ECHO = "{{ cookiecutter.action_namespace }}.echo"


def test_plugin_is_loaded_through_its_entry_point(opcode_loaded_plugins) -> None:
    row = opcode_loaded_plugins.row(PLUGIN)  # the row `opcode plugins` prints
    assert row["status"] == "loaded", row["error"]
    assert row["builtin"] is False
    assert row["distribution"] == "opcode-{{ cookiecutter.hyphenated }}"
    assert row["actions"] == [ECHO]
    assert opcode_loaded_plugins.registry.actions[ECHO].plugin == PLUGIN


def test_action_is_described_for_agents(opcode_registry) -> None:
    (described,) = opcode_registry.describe_actions(name=ECHO)
    assert described["params_schema"]["required"] == ["text"]
    assert described["description"]


async def test_echo_runs_in_a_workflow(run_workflow) -> None:
    result = await run_workflow(
        {
            "steps": [
                {"id": "shout", "action": ECHO,
                 "params": {"text": "${% raw %}{{inputs.word}}{% endraw %}", "uppercase": True}},
                {"id": "twice", "action": ECHO, "depends_on": ["shout"],
                 "params": {"text": "${% raw %}{{steps.shout.output.text}}{% endraw %}", "times": 2}},
            ]
        },
        {"word": "hello"},
    )
    assert result["status"] == "completed", result
    assert result["steps"]["shout"]["output"] == {"text": "HELLO", "length": 5}
    assert result["output"] == {"text": "HELLO HELLO", "length": 11}


async def test_plugin_settings_reach_the_action(run_action) -> None:
    output = await run_action(ECHO, {"text": "hi"}, plugin_settings={PLUGIN: {"prefix": "> "}})
    assert output == {"text": "> hi", "length": 4}


@pytest.mark.parametrize("params", [{}, {"text": 3}, {"text": "hi", "times": 0}, {"text": "hi", "colour": "red"}])
async def test_bad_params_are_refused_before_the_action_runs(run_action, params) -> None:
    with pytest.raises(OpcodeError) as failure:
        await run_action(ECHO, params)
    assert failure.value.code == "VALIDATION_ERROR"
    assert ECHO in failure.value.message


async def test_a_bad_setting_fails_the_step_with_a_message_for_the_agent(run_action) -> None:
    with pytest.raises(OpcodeError) as failure:
        await run_action(ECHO, {"text": "hi"}, plugin_settings={PLUGIN: {"prefix": 42}})
    assert failure.value.code == "VALIDATION_ERROR"
    assert "prefix must be a string" in failure.value.message

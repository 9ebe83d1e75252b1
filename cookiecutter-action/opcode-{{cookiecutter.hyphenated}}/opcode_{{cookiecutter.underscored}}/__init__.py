"""{{ cookiecutter.description or "An opcode action plugin." }}"""

from __future__ import annotations

from typing import Any

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.errors import VALIDATION_ERROR

JSON = dict[str, Any]

# The entry-point name: what admins write in settings.json and what `opcode plugins` shows.
PLUGIN = "{{ cookiecutter.underscored }}"

# The JSON Schema (2020-12) of the action's params: opcode checks params against it, after interpolation
# and before `execute` runs, and shows it to agents (`opcode.query` resource `actions`).
ECHO_PARAMS: JSON = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "The text to send back."},
        "uppercase": {"type": "boolean", "default": False, "description": "Upper-case the text first."},
        "times": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1,
                  "description": "How many times to repeat the text."},
    },
    "required": ["text"],
    "additionalProperties": False,
}

ECHO_OUTPUT: JSON = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "length": {"type": "integer"}},
    "required": ["text", "length"],
}


async def echo(params: JSON, ctx: ActionContext) -> JSON:
    """Send the text back, prefixed by this plugin's `prefix` setting; output `{text, length}`."""
    # ctx.settings is this plugin's block of `plugins.settings` in the admin's settings.json.
    prefix = ctx.settings.get("prefix", "")
    if not isinstance(prefix, str):
        # An ActionError fails the step with this message, written for the agent that reads it.
        raise ActionError(f"plugins.settings.{PLUGIN}.prefix must be a string, not {prefix!r}", code=VALIDATION_ERROR)
    text = params["text"].upper() if params.get("uppercase") else params["text"]
    text = prefix + " ".join([text] * params.get("times", 1))
    # ctx.logger already carries the workflow, step and agent ids.
    ctx.logger.info("echoing %d characters (attempt %d)", len(text), ctx.attempt)
    return {"text": text, "length": len(text)}


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide {{ cookiecutter.action_namespace }}.echo."""
    return [
        ActionSpec(
            "{{ cookiecutter.action_namespace }}.echo",
            "Send `text` back, optionally upper-cased and repeated; output `{text, length}`.",
            ECHO_PARAMS,
            echo,
            output_schema=ECHO_OUTPUT,
        ),
    ]

"""Refuse names opcode would reject or that would confuse admins, before any file is written."""

import re
import sys

PLUGIN_NAME = "{{ cookiecutter.plugin_name }}"
HYPHENATED = "{{ cookiecutter.hyphenated }}"
UNDERSCORED = "{{ cookiecutter.underscored }}"
NAMESPACE = "{{ cookiecutter.action_namespace }}"

# A plugin name is an entry-point name, a config key and a module suffix: a lowercase identifier.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
# The action families opcode ships; another plugin may not register the same action names, and sharing
# a namespace with a built-in family misleads whoever reads a workflow.
BUILTIN_NAMESPACES = {"workflow", "crypto", "shell", "http", "fs", "assert", "expr", "opcode"}


def problems() -> list[str]:
    """Every reason the answers cannot make a plugin, so the author fixes them all at once."""
    found = []
    if not PLUGIN_NAME.strip():
        found.append("plugin_name is required (e.g. 'acme slack')")
    elif PLUGIN_NAME.lower().replace("_", "-").startswith("opcode"):
        found.append(f"plugin_name {PLUGIN_NAME!r}: leave out 'opcode', the package is named opcode-<name> already")
    if not IDENTIFIER.match(UNDERSCORED):
        found.append(f"underscored {UNDERSCORED!r} must be a lowercase identifier (letters, digits, _; a letter first)")
    if HYPHENATED.replace("-", "_") != UNDERSCORED:
        found.append(f"hyphenated {HYPHENATED!r} and underscored {UNDERSCORED!r} must name the same plugin")
    if not IDENTIFIER.match(NAMESPACE):
        found.append(
            f"action_namespace {NAMESPACE!r} must be a lowercase identifier without dots "
            "(actions are called <namespace>.<verb>)"
        )
    elif NAMESPACE in BUILTIN_NAMESPACES:
        found.append(f"action_namespace {NAMESPACE!r} is a built-in family of opcode; choose your own")
    return found


if __name__ == "__main__":
    errors = problems()
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    sys.exit(1 if errors else 0)

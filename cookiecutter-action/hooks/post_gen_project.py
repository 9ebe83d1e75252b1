"""Finish pyproject.toml where the answers decide which lines exist (the template itself stays valid TOML)."""

from pathlib import Path

AUTHOR_NAME = r"""{{ cookiecutter.author_name }}"""
AUTHOR_EMAIL = r"""{{ cookiecutter.author_email }}"""
GITHUB_USERNAME = r"""{{ cookiecutter.github_username }}"""
REPOSITORY = "https://github.com/{{ cookiecutter.github_username }}/opcode-{{ cookiecutter.hyphenated }}"
ENTRY_POINTS = "# How opcode finds the plugin"


def finish(pyproject: Path) -> None:
    """Drop blank author fields; add project URLs when a GitHub user was given."""
    text = pyproject.read_text()
    # Packaging tools refuse an empty email address, so a blank answer drops its key rather than staying "".
    if not AUTHOR_EMAIL.strip():
        text = text.replace(', email = ""', "")
    if not AUTHOR_NAME.strip():
        text = text.replace('{name = "", ', "{").replace('authors = [{name = ""}]\n', "")
    if GITHUB_USERNAME.strip():
        urls = (
            "[project.urls]\n"
            f'Homepage = "{REPOSITORY}"\n'
            f'Changelog = "{REPOSITORY}/releases"\n'
            f'Issues = "{REPOSITORY}/issues"\n'
            f'CI = "{REPOSITORY}/actions"\n\n'
        )
        text = text.replace(ENTRY_POINTS, urls + ENTRY_POINTS, 1)
    pyproject.write_text(text)


if __name__ == "__main__":
    finish(Path("pyproject.toml"))

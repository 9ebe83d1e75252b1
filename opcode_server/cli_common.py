"""What several CLI commands share: loading settings, opening the configured store, parsing `--param`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from opcode_core.errors import ConfigError, OpcodeError
from opcode_core.settings import Settings, load_settings
from opcode_core.store.store import Store


def cli_settings() -> Settings:
    """The settings of this home, or a ClickException naming the invalid one."""
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    """The configured database, opened (and migrated) in this process; SQLite's WAL lets a server share it."""
    if not settings.db_url:
        settings.home.mkdir(parents=True, exist_ok=True)
    try:
        store = Store.open(settings.database_url)
    except OpcodeError as exc:
        raise click_error(exc) from None
    try:
        yield store
    except OpcodeError as exc:
        raise click_error(exc) from None
    finally:
        store.close()


def click_error(exc: OpcodeError) -> click.ClickException:
    """An opcode error as the CLI prints it: `CODE: message`, or `CODE:` and one line per problem with its path."""
    problems = getattr(exc, "problems", None)
    if problems:
        return click.ClickException("\n".join([f"{exc.code}:"] + [f"  {p['path']}: {p['message']}" for p in problems]))
    return click.ClickException(f"{exc.code}: {exc.message}")


def parse_param(text: str) -> tuple[str, Any]:
    """One `--param key=value`; the value is parsed as JSON when it can be, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not key=value", param_hint="--param")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value

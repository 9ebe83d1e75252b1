"""`opcode secrets set|list|delete`: the vault of the configured database, with or without a running server."""

from __future__ import annotations

import json
import sys

import click

from opcode_core.errors import OpcodeError
from opcode_core.redaction import SHORT_SECRET
from opcode_core.settings import Settings
from opcode_core.vault import Vault, check_name, delete_secret, list_secrets
from opcode_server.cli_common import cli_settings, open_store


@click.group()
@click.option("--vault-key", help="Vault passphrase (default: $OPCODE_VAULT_KEY); kept in memory only.")
@click.pass_context
def secrets(ctx: click.Context, vault_key: str | None) -> None:
    """Manage the secrets that workflows read as ${{secrets.NAME}}; values are never printed."""
    settings = cli_settings()
    if vault_key:
        settings = settings.with_overrides(vault_key=vault_key)
    ctx.obj = settings


@secrets.command("set")
@click.argument("name")
@click.argument("value", required=False)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the value from stdin (one trailing newline dropped).")
@click.pass_obj
def set_secret(settings: Settings, name: str, value: str | None, from_stdin: bool) -> None:
    """Encrypt and store secret NAME (replacing its value if it exists); needs the vault key."""
    if from_stdin == (value is not None):
        raise click.UsageError("give the value either as VALUE or on stdin with --stdin, not both or neither")
    if from_stdin:
        value = sys.stdin.read()
        # `echo token | opcode secrets set X --stdin` should store `token`, not `token\n`.
        value = value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value
    assert value is not None
    try:
        check_name(name)
    except OpcodeError as exc:
        raise click.BadParameter(exc.message, param_hint="NAME") from None
    if not value:
        raise click.ClickException("the value is empty; an empty secret would redact nothing and mean nothing")
    if not settings.vault_key:
        raise click.ClickException("VAULT_ERROR: no vault key: set OPCODE_VAULT_KEY or pass --vault-key")
    with open_store(settings) as store:
        existed = store.get_secret(name) is not None
        Vault.open(store, settings.vault_key).set(name, value)
    click.echo(f"secret {name} {'updated' if existed else 'set'}")
    if len(value) < SHORT_SECRET:
        click.echo(f"warning: values shorter than {SHORT_SECRET} characters are redacted wherever they appear, "
                   "which may hide ordinary text in run outputs and logs", err=True)


@secrets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def list_command(settings: Settings, as_json: bool) -> None:
    """List secret names with when they were created and last updated (no key needed; no values)."""
    with open_store(settings) as store:
        rows = list_secrets(store)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no secrets", err=True)
        return
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    click.echo(f"{'NAME':<{width}}  {'CREATED':<27}  UPDATED")
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['created_at']:<27}  {row['updated_at']}")


@secrets.command("delete")
@click.argument("name")
@click.pass_obj
def delete_command(settings: Settings, name: str) -> None:
    """Delete secret NAME (no key needed: nothing is decrypted)."""
    with open_store(settings) as store:
        delete_secret(store, name)
    click.echo(f"secret {name} deleted")

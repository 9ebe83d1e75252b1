"""The secret vault: AES-256-GCM values under a key derived once from a passphrase by PBKDF2 (SPEC §10)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from opcode_core.errors import NOT_FOUND, VALIDATION_ERROR, VAULT_ERROR, OpcodeError

if TYPE_CHECKING:
    from opcode_core.store.store import Store

# 600k is OWASP's figure for PBKDF2-HMAC-SHA256; it costs ~0.25 s once per start-up (docs/secrets.md).
KDF_ITERATIONS = 600_000
MIN_KDF_ITERATIONS = 100_000
KEY_BYTES = 32  # AES-256
SALT_BYTES = 16
NONCE_BYTES = 12  # the GCM standard nonce; random per encryption, so 2^32 writes per key stay safe
# The vault's own record lives in the secrets table under a name no secret can have (see NAME).
META_NAME = ":vault"
META_VERSION = 1
CHECK_PLAINTEXT = b"opcode vault key check"
CHECK_AAD = b"opcode:vault-check"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")
WRONG_KEY = "the vault key does not match this vault"


def check_name(name: str) -> str:
    """The name, or VALIDATION_ERROR when it cannot be a secret's name (`${{secrets.NAME}}`)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise OpcodeError(VALIDATION_ERROR, f"invalid secret name {name!r}: use letters, digits, _ and -, "
                          "starting with a letter or _ (at most 128 characters)")
    return name


def derive_key(passphrase: str, salt: bytes, iterations: int) -> bytes:
    """The 256-bit AES key of a passphrase: PBKDF2-HMAC-SHA256 over the vault's salt."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=iterations)
    return kdf.derive(passphrase.encode())


class Vault:
    """Encrypts and decrypts the secrets of one database with one derived key, held in memory only."""

    def __init__(self, store: Store, key: bytes, on_reveal: Callable[[str], None] | None = None) -> None:
        self.store = store
        self._aead = AESGCM(key)
        # Called with every value `lookup` hands out, before anyone can see it (the run's redactor learns it).
        self.on_reveal = on_reveal

    def __repr__(self) -> str:
        return "Vault(<key hidden>)"

    @classmethod
    def open(cls, store: Store, passphrase: str, *, on_reveal: Callable[[str], None] | None = None,
             iterations: int = KDF_ITERATIONS) -> Vault:
        """Derive the key and check it against the vault's key-check record, creating the record on first use."""
        if not passphrase:
            raise OpcodeError(VAULT_ERROR, "the vault key is empty")
        meta = _read_meta(store)
        if meta is None:
            salt = os.urandom(SALT_BYTES)
            key = derive_key(passphrase, salt, iterations)
            nonce = os.urandom(NONCE_BYTES)
            record = {"version": META_VERSION, "kdf": "pbkdf2-hmac-sha256", "iterations": iterations,
                      "salt": _b64(salt), "check": _b64(AESGCM(key).encrypt(nonce, CHECK_PLAINTEXT, CHECK_AAD))}
            if store.create_secret(META_NAME, json.dumps(record).encode(), nonce):
                return cls(store, key, on_reveal)
            meta = _read_meta(store)  # another process created the vault first: its salt is the one
            if meta is None:
                raise OpcodeError(VAULT_ERROR, "the vault's key-check record disappeared while opening the vault")
        salt, iterations, check, nonce = meta
        key = derive_key(passphrase, salt, iterations)
        try:
            plain = AESGCM(key).decrypt(nonce, check, CHECK_AAD)
        except InvalidTag:
            raise OpcodeError(VAULT_ERROR, WRONG_KEY) from None
        if plain != CHECK_PLAINTEXT:
            raise OpcodeError(VAULT_ERROR, WRONG_KEY)
        return cls(store, key, on_reveal)

    def set(self, name: str, value: str) -> None:
        """Encrypt and store a secret, replacing any value it had."""
        check_name(name)
        if not isinstance(value, str) or value == "":
            raise OpcodeError(VALIDATION_ERROR, f"secret {name!r}: the value must be a non-empty string")
        nonce = os.urandom(NONCE_BYTES)
        # The name is the associated data: a ciphertext copied under another name no longer decrypts.
        ciphertext = self._aead.encrypt(nonce, value.encode(), name.encode())
        self.store.put_secret(name, ciphertext, nonce)

    def get(self, name: str) -> str:
        """A secret's value; VAULT_ERROR when it is unknown or its stored ciphertext was altered."""
        row = self.store.get_secret(name) if NAME.fullmatch(name) else None
        if row is None:
            raise OpcodeError(VAULT_ERROR, f"secret {name!r} is not in the vault (set it with `opcode secrets set`)",
                              details={"secret": name})
        try:
            plain = self._aead.decrypt(bytes(row["nonce"]), bytes(row["ciphertext"]), name.encode())
        except InvalidTag:
            raise OpcodeError(VAULT_ERROR, f"secret {name!r} cannot be decrypted: its stored ciphertext was altered "
                              "or copied from another secret", details={"secret": name}) from None
        return plain.decode()

    def lookup(self, name: str) -> str:
        """`${{secrets.NAME}}`: the value, which the redactor learns before it is returned."""
        # Interpolation is synchronous, so this reads on the caller's thread: inline for SQLite, as every store
        # call is; on PostgreSQL a one-row query on the event loop thread's own connection. Reading each time
        # (no cache) lets a running server see `opcode secrets set` at once.
        value = self.get(name)
        if self.on_reveal is not None:
            self.on_reveal(value)
        return value

    def delete(self, name: str) -> None:
        """Remove a secret; NOT_FOUND when there is none of that name."""
        delete_secret(self.store, name)

    def entries(self) -> list[dict[str, Any]]:
        """Names and timestamps of every secret, never their values."""
        return list_secrets(self.store)


def list_secrets(store: Store) -> list[dict[str, Any]]:
    """Names and timestamps of the secrets in a store (no key needed: nothing is decrypted)."""
    return [row for row in store.list_secrets() if row["name"] != META_NAME]


def delete_secret(store: Store, name: str) -> None:
    """Remove a secret without opening the vault; NOT_FOUND when there is none of that name."""
    if not NAME.fullmatch(name) or not store.delete_secret(name):
        raise OpcodeError(NOT_FOUND, f"secret {name!r} is not in the vault")


def no_vault(name: str) -> str:
    """The secret lookup of a runtime started without a key: every reference is a VAULT_ERROR that says why."""
    raise OpcodeError(VAULT_ERROR, f"cannot resolve ${{{{secrets.{name}}}}}: no vault key is configured "
                      "(start opcode with OPCODE_VAULT_KEY set, or `opcode serve --vault-key`)",
                      details={"secret": name})


def _read_meta(store: Store) -> tuple[bytes, int, bytes, bytes] | None:
    """(salt, iterations, key-check ciphertext, its nonce) of the vault, None before its first use."""
    row = store.get_secret(META_NAME)
    if row is None:
        return None
    try:
        record = json.loads(bytes(row["ciphertext"]))
        iterations = int(record["iterations"])
        if record.get("version") != META_VERSION or iterations < MIN_KDF_ITERATIONS:
            raise ValueError(f"unsupported vault record (version {record.get('version')!r}, {iterations} iterations)")
        return _unb64(record["salt"]), iterations, _unb64(record["check"]), bytes(row["nonce"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OpcodeError(VAULT_ERROR, f"the vault's key-check record is damaged: {exc}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)

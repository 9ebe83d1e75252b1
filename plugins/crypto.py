"""Crypto actions: hashes, HMACs, UUIDs, and base64/hex encoding, all from the standard library."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac as hmac_lib
import json
import uuid
from typing import Any

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.errors import VALIDATION_ERROR

JSON = dict[str, Any]

ALGORITHMS = ("sha256", "sha512", "sha384", "sha1", "md5")
BYTE_ENCODINGS = ("utf8", "hex", "base64")
TEXT_ENCODINGS = ("base64", "base64url", "hex")
UUID_NAMESPACES = {"dns": uuid.NAMESPACE_DNS, "url": uuid.NAMESPACE_URL, "oid": uuid.NAMESPACE_OID,
                   "x500": uuid.NAMESPACE_X500}

_DATA = {
    "description": "What to use: a string is taken as UTF-8 text (see `data_encoding`); any other JSON value "
    "is first serialized as canonical JSON (sorted keys, no spaces, UTF-8).",
}
_DATA_ENCODING = {
    "type": "string",
    "enum": list(BYTE_ENCODINGS),
    "default": "utf8",
    "description": "How a string `data` becomes bytes: utf8 text, or decoded from hex or base64 (binary input).",
}
_ALGORITHM = {"type": "string", "enum": list(ALGORITHMS), "default": "sha256", "description": "Hash algorithm."}
_OUTPUT_ENCODING = {
    "type": "string",
    "enum": ["hex", "base64"],
    "default": "hex",
    "description": "How the digest is written: lowercase hex or standard base64.",
}

HASH_SCHEMA: JSON = {
    "type": "object",
    "properties": {"data": _DATA, "algorithm": _ALGORITHM, "encoding": _OUTPUT_ENCODING,
                   "data_encoding": _DATA_ENCODING},
    "required": ["data"],
    "additionalProperties": False,
}

HMAC_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "data": _DATA,
        "key": {"type": "string", "description": "The secret key (see `key_encoding`)."},
        "algorithm": _ALGORITHM,
        "encoding": _OUTPUT_ENCODING,
        "data_encoding": _DATA_ENCODING,
        "key_encoding": {**_DATA_ENCODING, "description": "How `key` becomes bytes: utf8 text, hex or base64."},
    },
    "required": ["data", "key"],
    "additionalProperties": False,
}

UUID_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "version": {"type": "integer", "enum": [4, 5, 3], "default": 4,
                    "description": "4: random; 5 (SHA-1) or 3 (MD5): derived from `namespace` and `name`."},
        "namespace": {"type": "string", "default": "url",
                      "description": "For versions 3 and 5: dns, url, oid, x500, or a UUID."},
        "name": {"type": "string", "description": "For versions 3 and 5: the name to derive the UUID from."},
    },
    "if": {"properties": {"version": {"enum": [3, 5]}}, "required": ["version"]},
    "then": {"required": ["name"]},
    "additionalProperties": False,
}

ENCODE_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "data": _DATA,
        "encoding": {"type": "string", "enum": list(TEXT_ENCODINGS), "default": "base64",
                     "description": "base64 (standard alphabet), base64url (URL-safe alphabet) or hex."},
        "padding": {"type": "boolean", "default": True,
                    "description": "Keep base64 `=` padding (JWTs drop it: set false with base64url)."},
    },
    "required": ["data"],
    "additionalProperties": False,
}

DECODE_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "description": "Encoded text; whitespace is ignored, missing base64 padding is "
                 "accepted."},
        "encoding": ENCODE_SCHEMA["properties"]["encoding"],
    },
    "required": ["data"],
    "additionalProperties": False,
}


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, compact separators, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _to_bytes(value: Any, encoding: str, what: str) -> bytes:
    if not isinstance(value, str):
        return canonical_json(value).encode()
    if encoding == "utf8":
        return value.encode()
    return _decode_text(value, "hex" if encoding == "hex" else "base64", what)


def _decode_text(text: str, encoding: str, what: str) -> bytes:
    compact = "".join(text.split())
    try:
        if encoding == "hex":
            return bytes.fromhex(compact)
        compact += "=" * (-len(compact) % 4)
        altchars = b"-_" if encoding == "base64url" else None
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ActionError(f"{what} is not valid {encoding}: {exc}", code=VALIDATION_ERROR) from exc


def _digest_text(digest: bytes, encoding: str) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


async def hash_data(params: JSON, ctx: ActionContext) -> JSON:
    """Hash `data` with the chosen algorithm."""
    algorithm, encoding = params.get("algorithm", "sha256"), params.get("encoding", "hex")
    data = _to_bytes(params["data"], params.get("data_encoding", "utf8"), "data")
    digest = hashlib.new(algorithm, data).digest()
    return {"hash": _digest_text(digest, encoding), "algorithm": algorithm, "encoding": encoding}


async def hmac_data(params: JSON, ctx: ActionContext) -> JSON:
    """Compute the HMAC of `data` under `key`."""
    algorithm, encoding = params.get("algorithm", "sha256"), params.get("encoding", "hex")
    data = _to_bytes(params["data"], params.get("data_encoding", "utf8"), "data")
    key = _to_bytes(params["key"], params.get("key_encoding", "utf8"), "key")
    digest = hmac_lib.new(key, data, algorithm).digest()
    return {"hmac": _digest_text(digest, encoding), "algorithm": algorithm, "encoding": encoding}


async def make_uuid(params: JSON, ctx: ActionContext) -> JSON:
    """Generate a random (v4) or name-based (v3, v5) UUID."""
    version = params.get("version", 4)
    if version == 4:
        return {"uuid": str(uuid.uuid4()), "version": 4}
    namespace_text = params.get("namespace", "url")
    namespace = UUID_NAMESPACES.get(namespace_text.lower())
    if namespace is None:
        try:
            namespace = uuid.UUID(namespace_text)
        except ValueError as exc:
            raise ActionError(
                f"namespace must be dns, url, oid, x500 or a UUID, not {namespace_text!r}", code=VALIDATION_ERROR
            ) from exc
    make = uuid.uuid5 if version == 5 else uuid.uuid3
    return {"uuid": str(make(namespace, params["name"])), "version": version}


async def encode(params: JSON, ctx: ActionContext) -> JSON:
    """Encode `data` as base64, base64url or hex text."""
    encoding = params.get("encoding", "base64")
    raw = _to_bytes(params["data"], "utf8", "data")
    if encoding == "hex":
        text = raw.hex()
    else:
        text = (base64.urlsafe_b64encode if encoding == "base64url" else base64.b64encode)(raw).decode()
        if not params.get("padding", True):
            text = text.rstrip("=")
    return {"encoded": text, "encoding": encoding}


async def decode(params: JSON, ctx: ActionContext) -> JSON:
    """Decode base64, base64url or hex text back to UTF-8 text."""
    encoding = params.get("encoding", "base64")
    raw = _decode_text(params["data"], encoding, "data")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ActionError(
            f"decoded {len(raw)} bytes are not UTF-8 text (binary data cannot be a JSON string)",
            code=VALIDATION_ERROR,
        ) from exc
    return {"decoded": text, "encoding": encoding}


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide crypto.hash, crypto.hmac, crypto.uuid, crypto.encode and crypto.decode."""
    return [
        ActionSpec(
            "crypto.hash",
            "Hash `data` with sha256 (default), sha512, sha384, sha1 or md5; output `{hash, algorithm, encoding}` "
            "with the digest in hex (default) or base64. Non-string data is hashed as canonical JSON "
            "(sorted keys, compact separators).",
            HASH_SCHEMA,
            hash_data,
        ),
        ActionSpec(
            "crypto.hmac",
            "HMAC of `data` under `key` with sha256 (default), sha512, sha384, sha1 or md5; output "
            "`{hmac, algorithm, encoding}`. Non-string data is signed as canonical JSON (sorted keys, compact).",
            HMAC_SCHEMA,
            hmac_data,
        ),
        ActionSpec(
            "crypto.uuid",
            "Generate a UUID: random v4 by default, or name-based v5/v3 from `namespace` and `name`; "
            "output `{uuid, version}`.",
            UUID_SCHEMA,
            make_uuid,
        ),
        ActionSpec(
            "crypto.encode",
            "Encode `data` (UTF-8 text; non-string data as canonical JSON) as base64, base64url or hex; "
            "output `{encoded, encoding}`.",
            ENCODE_SCHEMA,
            encode,
        ),
        ActionSpec(
            "crypto.decode",
            "Decode base64, base64url or hex text to UTF-8 text; output `{decoded, encoding}`.",
            DECODE_SCHEMA,
            decode,
        ),
    ]

"""crypto.* actions against published test vectors (FIPS 180-2, RFC 1321, RFC 2202, RFC 4231, RFC 4648)."""

from __future__ import annotations

import base64
import re
import uuid

import pytest

from opcode_core.errors import VALIDATION_ERROR, ActionError
from opcode_plugins import crypto

SPECS = {spec.name: spec for spec in crypto.opcode_register_actions(settings=None)}

# FIPS 180-2 appendix examples ("abc"), RFC 1321 appendix A.5 for MD5.
ABC = {
    "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
    "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "sha384": "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
    "8086072ba1e7cc2358baeca134c825a7",
    "sha512": "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    "md5": "900150983cd24fb0d6963f7d28e17f72",
}
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def run(name, params, ctx):
    return await SPECS[name].execute(params, ctx)


def test_entry_point_provides_the_actions(via_entry_point):
    module, specs = via_entry_point("crypto")
    assert module is crypto
    assert sorted(s.name for s in specs) == ["crypto.decode", "crypto.encode", "crypto.hash", "crypto.hmac",
                                             "crypto.uuid"]


def test_schemas_are_complete(well_formed):
    well_formed(list(SPECS.values()))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("crypto.hash", {"data": "abc"}),
        ("crypto.hash", {"data": {"a": 1}, "algorithm": "md5", "encoding": "base64"}),
        ("crypto.hash", {"data": "00ff", "data_encoding": "hex"}),
        ("crypto.hmac", {"data": "x", "key": "k", "algorithm": "sha512", "key_encoding": "base64"}),
        ("crypto.uuid", {}),
        ("crypto.uuid", {"version": 5, "name": "example.com", "namespace": "dns"}),
        ("crypto.encode", {"data": "hi", "encoding": "base64url", "padding": False}),
        ("crypto.decode", {"data": "aGk=", "encoding": "base64"}),
    ],
)
def test_valid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) == []


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("crypto.hash", {}),
        ("crypto.hash", {"data": "x", "algorithm": "sha3_256"}),
        ("crypto.hash", {"data": "x", "encoding": "base32"}),
        ("crypto.hash", {"data": "x", "salt": "y"}),
        ("crypto.hmac", {"data": "x"}),
        ("crypto.hmac", {"data": "x", "key": 12}),
        ("crypto.uuid", {"version": 1}),
        ("crypto.uuid", {"version": 5}),
        ("crypto.uuid", {"version": "4"}),
        ("crypto.encode", {"data": "x", "encoding": "base32"}),
        ("crypto.decode", {"data": 5}),
        ("crypto.decode", {}),
    ],
)
def test_invalid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) != []


@pytest.mark.parametrize("algorithm", sorted(ABC))
async def test_hash_published_vectors(ctx, algorithm):
    out = await run("crypto.hash", {"data": "abc", "algorithm": algorithm}, ctx)
    assert out == {"hash": ABC[algorithm], "algorithm": algorithm, "encoding": "hex"}


async def test_hash_defaults_to_sha256(ctx):
    assert (await run("crypto.hash", {"data": ""}, ctx))["hash"] == SHA256_EMPTY
    assert (await run("crypto.hash", {"data": "abc"}, ctx))["algorithm"] == "sha256"


async def test_hash_base64_output(ctx):
    out = await run("crypto.hash", {"data": "abc", "encoding": "base64"}, ctx)
    assert out["hash"] == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    assert base64.b64decode(out["hash"]).hex() == ABC["sha256"]


async def test_hash_of_binary_input(ctx):
    # "abc" given as hex and as base64 must hash like the text itself.
    assert (await run("crypto.hash", {"data": "616263", "data_encoding": "hex"}, ctx))["hash"] == ABC["sha256"]
    assert (await run("crypto.hash", {"data": "YWJj", "data_encoding": "base64"}, ctx))["hash"] == ABC["sha256"]


async def test_hash_of_json_data_uses_canonical_json(ctx):
    # Key order does not matter, and the bytes hashed are exactly the canonical text: sorted keys, no spaces.
    one = await run("crypto.hash", {"data": {"b": [1, "é"], "a": None}}, ctx)
    two = await run("crypto.hash", {"data": {"a": None, "b": [1, "é"]}}, ctx)
    text = await run("crypto.hash", {"data": '{"a":null,"b":[1,"é"]}'}, ctx)
    assert one["hash"] == two["hash"] == text["hash"]
    assert (await run("crypto.hash", {"data": 42}, ctx))["hash"] == (await run("crypto.hash", {"data": "42"}, ctx))[
        "hash"]


async def test_hash_bad_hex_input_is_a_validation_error(ctx):
    with pytest.raises(ActionError) as info:
        await run("crypto.hash", {"data": "xyz", "data_encoding": "hex"}, ctx)
    assert info.value.code == VALIDATION_ERROR


# RFC 4231 test cases 1, 2, 3 and 6; RFC 2202 test case 2 for MD5 and SHA-1.
RFC4231 = [
    ("0b" * 20, "hex", "Hi There", "utf8", "sha256",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    ("0b" * 20, "hex", "Hi There", "utf8", "sha384",
     "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"),
    ("0b" * 20, "hex", "Hi There", "utf8", "sha512",
     "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
     "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
    ("Jefe", "utf8", "what do ya want for nothing?", "utf8", "sha256",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("Jefe", "utf8", "what do ya want for nothing?", "utf8", "sha512",
     "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
     "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
    ("aa" * 20, "hex", "dd" * 50, "hex", "sha256",
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    ("aa" * 131, "hex", "Test Using Larger Than Block-Size Key - Hash Key First", "utf8", "sha256",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("Jefe", "utf8", "what do ya want for nothing?", "utf8", "md5", "750c783e6ab0b503eaa86e310a5db738"),
    ("Jefe", "utf8", "what do ya want for nothing?", "utf8", "sha1", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
]


@pytest.mark.parametrize(("key", "key_encoding", "data", "data_encoding", "algorithm", "expected"), RFC4231)
async def test_hmac_published_vectors(ctx, key, key_encoding, data, data_encoding, algorithm, expected):
    params = {"data": data, "key": key, "algorithm": algorithm, "key_encoding": key_encoding,
              "data_encoding": data_encoding}
    assert await run("crypto.hmac", params, ctx) == {"hmac": expected, "algorithm": algorithm, "encoding": "hex"}


async def test_hmac_defaults_to_sha256_and_utf8_key(ctx):
    out = await run("crypto.hmac", {"data": "what do ya want for nothing?", "key": "Jefe"}, ctx)
    assert out["hmac"] == RFC4231[3][5]
    keyed_b64 = await run("crypto.hmac", {"data": "what do ya want for nothing?", "key": "SmVmZQ==",
                                          "key_encoding": "base64"}, ctx)
    assert keyed_b64["hmac"] == RFC4231[3][5]


async def test_uuid_v4(ctx):
    first, second = await run("crypto.uuid", {}, ctx), await run("crypto.uuid", {}, ctx)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first["uuid"])
    assert first["version"] == 4
    assert first["uuid"] != second["uuid"]


async def test_uuid_name_based(ctx):
    # The examples of Python's uuid documentation.
    v5 = await run("crypto.uuid", {"version": 5, "namespace": "dns", "name": "python.org"}, ctx)
    v3 = await run("crypto.uuid", {"version": 3, "namespace": "DNS", "name": "python.org"}, ctx)
    assert v5 == {"uuid": "886313e1-3b8a-5372-9b90-0c9aee199e5d", "version": 5}
    assert v3 == {"uuid": "6fa459ea-ee8a-3ca4-894e-db77e160355e", "version": 3}
    own = await run("crypto.uuid", {"version": 5, "namespace": str(uuid.NAMESPACE_DNS), "name": "python.org"}, ctx)
    assert own["uuid"] == v5["uuid"]


async def test_uuid_bad_namespace(ctx):
    with pytest.raises(ActionError) as info:
        await run("crypto.uuid", {"version": 5, "namespace": "galaxy", "name": "x"}, ctx)
    assert info.value.code == VALIDATION_ERROR


# RFC 4648 section 10.
@pytest.mark.parametrize(
    ("text", "b64", "b16"),
    [("", "", ""), ("f", "Zg==", "66"), ("fo", "Zm8=", "666f"), ("foo", "Zm9v", "666f6f"),
     ("foob", "Zm9vYg==", "666f6f62"), ("fooba", "Zm9vYmE=", "666f6f6261"), ("foobar", "Zm9vYmFy", "666f6f626172")],
)
async def test_encode_decode_rfc4648(ctx, text, b64, b16):
    assert await run("crypto.encode", {"data": text}, ctx) == {"encoded": b64, "encoding": "base64"}
    assert await run("crypto.encode", {"data": text, "encoding": "hex"}, ctx) == {"encoded": b16, "encoding": "hex"}
    assert (await run("crypto.decode", {"data": b64}, ctx))["decoded"] == text
    assert (await run("crypto.decode", {"data": b16.upper(), "encoding": "hex"}, ctx))["decoded"] == text


async def test_base64url_and_padding(ctx):
    assert (await run("crypto.encode", {"data": "???"}, ctx))["encoded"] == "Pz8/"
    assert (await run("crypto.encode", {"data": "???", "encoding": "base64url"}, ctx))["encoded"] == "Pz8_"
    assert (await run("crypto.encode", {"data": "fo", "padding": False}, ctx))["encoded"] == "Zm8"
    assert (await run("crypto.decode", {"data": "Pz8_", "encoding": "base64url"}, ctx))["decoded"] == "???"
    # JWT-style: no padding, and whitespace from wrapped lines is ignored.
    assert (await run("crypto.decode", {"data": "Zm9v\nYmE", "encoding": "base64"}, ctx))["decoded"] == "fooba"


async def test_encode_json_and_unicode_round_trip(ctx):
    enc = await run("crypto.encode", {"data": {"b": 1, "a": "ü"}}, ctx)
    assert base64.b64decode(enc["encoded"]).decode() == '{"a":"ü","b":1}'
    assert (await run("crypto.decode", {"data": enc["encoded"]}, ctx))["decoded"] == '{"a":"ü","b":1}'


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"data": "Zm9v!", "encoding": "base64"}, "not valid base64"),
        ({"data": "Pz8_", "encoding": "base64"}, "not valid base64"),
        ({"data": "abc", "encoding": "hex"}, "not valid hex"),
        ({"data": "/w==", "encoding": "base64"}, "not UTF-8"),
    ],
)
async def test_decode_errors(ctx, params, fragment):
    with pytest.raises(ActionError) as info:
        await run("crypto.decode", params, ctx)
    assert info.value.code == VALIDATION_ERROR
    assert fragment in info.value.message

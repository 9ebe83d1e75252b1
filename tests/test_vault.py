"""The secret vault: crypto, the `opcode secrets` CLI, `${{secrets.*}}` in runs, and redaction everywhere."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from opcode_core.errors import NOT_FOUND, VAULT_ERROR, OpcodeError
from opcode_core.logs import JsonFormatter
from opcode_core.redaction import LOG_REDACTOR, Redactor
from opcode_core.runtime import Runtime
from opcode_core.settings import load_settings
from opcode_core.store.store import Store
from opcode_core.vault import KDF_ITERATIONS, META_NAME, WRONG_KEY, Vault, list_secrets
from tests.conftest import OPCODE, free_port, opcode_env, run_definition, start_server, stop_server
from tests.mcp_client import call, streamable_session
from tests.test_store import postgres_schema

KEY = "correct horse battery staple"


def new_secret() -> str:
    """A value that appears nowhere unless something leaked it."""
    return f"tok-{uuid.uuid4().hex}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a new PostgreSQL schema when OPCODE_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vault.db'}"
        return
    with postgres_schema() as pg:
        yield pg.url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store.open(db_url)
    yield opened
    opened.close()


# --- the vault itself -------------------------------------------------------------------------------------


def test_round_trip_survives_reopening(db_url: str, store: Store) -> None:
    value = new_secret()
    Vault.open(store, KEY).set("API_TOKEN", value)
    store.close()
    again = Store.open(db_url)
    try:
        vault = Vault.open(again, KEY)
        assert vault.get("API_TOKEN") == value
        assert [row["name"] for row in vault.entries()] == ["API_TOKEN"]  # the key-check record is not a secret
        vault.set("API_TOKEN", "rotated-value")
        assert vault.get("API_TOKEN") == "rotated-value"
        vault.delete("API_TOKEN")
        with pytest.raises(OpcodeError) as gone:
            vault.get("API_TOKEN")
        assert gone.value.code == VAULT_ERROR and "API_TOKEN" in gone.value.message
    finally:
        again.close()


def test_stored_rows_hold_ciphertext_with_a_fresh_nonce_each_time(store: Store) -> None:
    vault = Vault.open(store, KEY)
    value = new_secret()
    vault.set("A", value)
    vault.set("B", value)
    a, b = store.get_secret("A"), store.get_secret("B")
    assert value.encode() not in bytes(a["ciphertext"]) and KEY.encode() not in bytes(a["ciphertext"])
    assert bytes(a["nonce"]) != bytes(b["nonce"]) and bytes(a["ciphertext"]) != bytes(b["ciphertext"])
    assert len(bytes(a["ciphertext"])) == len(value) + 16  # AES-GCM: the plaintext's length plus the 16-byte tag


def test_key_check_record_holds_salt_and_iterations_never_the_key(store: Store) -> None:
    Vault.open(store, KEY)
    record = json.loads(bytes(store.get_secret(META_NAME)["ciphertext"]))
    assert record["kdf"] == "pbkdf2-hmac-sha256" and record["iterations"] == KDF_ITERATIONS >= 600_000
    assert len(base64.b64decode(record["salt"])) == 16 and KEY not in json.dumps(record)


def test_each_vault_has_its_own_salt(tmp_path: Path) -> None:
    salts = []
    for name in ("one.db", "two.db"):
        opened = Store.open(f"sqlite:///{tmp_path / name}")
        Vault.open(opened, KEY)
        salts.append(json.loads(bytes(opened.get_secret(META_NAME)["ciphertext"]))["salt"])
        opened.close()
    assert salts[0] != salts[1]


def test_wrong_key_is_a_vault_error(store: Store) -> None:
    Vault.open(store, KEY).set("API_TOKEN", new_secret())
    with pytest.raises(OpcodeError) as wrong:
        Vault.open(store, KEY + "!")
    assert wrong.value.code == VAULT_ERROR and wrong.value.message == WRONG_KEY


def test_tampered_ciphertext_is_detected(store: Store) -> None:
    vault = Vault.open(store, KEY)
    vault.set("API_TOKEN", new_secret())
    row = store.get_secret("API_TOKEN")
    flipped = bytearray(row["ciphertext"])
    flipped[0] ^= 0x01
    store.put_secret("API_TOKEN", bytes(flipped), bytes(row["nonce"]))
    with pytest.raises(OpcodeError) as tampered:
        vault.get("API_TOKEN")
    assert tampered.value.code == VAULT_ERROR and "altered" in tampered.value.message


def test_ciphertexts_cannot_be_swapped_between_names(store: Store) -> None:
    vault = Vault.open(store, KEY)
    vault.set("PROD_TOKEN", "prod-value-1234")
    vault.set("TEST_TOKEN", "test-value-5678")
    prod = store.get_secret("PROD_TOKEN")
    store.put_secret("TEST_TOKEN", bytes(prod["ciphertext"]), bytes(prod["nonce"]))
    with pytest.raises(OpcodeError) as swapped:
        vault.get("TEST_TOKEN")
    assert swapped.value.code == VAULT_ERROR


def test_damaged_key_check_record_is_reported(store: Store) -> None:
    Vault.open(store, KEY)
    store.put_secret(META_NAME, b"not json", b"\0" * 12)
    with pytest.raises(OpcodeError) as damaged:
        Vault.open(store, KEY)
    assert damaged.value.code == VAULT_ERROR and "damaged" in damaged.value.message


def test_unknown_and_invalid_names(store: Store) -> None:
    vault = Vault.open(store, KEY)
    with pytest.raises(OpcodeError) as unknown:
        vault.lookup("NOPE")
    assert unknown.value.code == VAULT_ERROR and "'NOPE'" in unknown.value.message
    with pytest.raises(OpcodeError) as bad:
        vault.set("has space", "v")
    assert bad.value.code == "VALIDATION_ERROR"
    with pytest.raises(OpcodeError) as missing:
        vault.delete("NOPE")
    assert missing.value.code == NOT_FOUND
    with pytest.raises(OpcodeError):
        vault.delete(META_NAME)  # the vault's own record is not a secret anyone can delete by name


# --- redaction --------------------------------------------------------------------------------------------


def test_redactor_hides_values_everywhere_without_touching_the_original() -> None:
    redactor = Redactor()
    assert redactor.redact({"a": "x"}) == {"a": "x"}
    redactor.add("s3cret-value")
    redactor.add("s3cret-value-longer")
    redactor.add("424242")
    original = {"out": "Bearer s3cret-value-longer!", "list": ["s3cret-value", 1, True, None],
                "s3cret-value": {"n": 424242, "m": 4242421}}
    snapshot = json.dumps(original)
    assert redactor.redact(original) == {"out": "Bearer ***!", "list": ["***", 1, True, None],
                                         "***": {"n": "***", "m": 4242421}}
    assert json.dumps(original) == snapshot
    redactor.add("")  # an empty value would match everywhere: ignored
    assert redactor.redact_text("plain") == "plain"


def test_log_lines_are_redacted() -> None:
    value = new_secret()
    LOG_REDACTOR.add(value)
    record = logging.LogRecord("opcode.test", logging.INFO, __file__, 1, "token=%s", (value,), None)
    record.data = {"header": f"Bearer {value}", "obj": Path(value)}
    line = JsonFormatter().format(record)
    assert value not in line
    assert json.loads(line)["message"] == "token=***" and json.loads(line)["data"]["header"] == "Bearer ***"


# --- runs in this process ---------------------------------------------------------------------------------


def _settings(home: Path, **env: str):
    return load_settings({"OPCODE_HOME": str(home), "OPCODE_LOAD_PLUGINS": "", **env})


def _set_secret(home: Path, name: str, value: str, key: str = KEY) -> None:
    opened = Store.open(f"sqlite:///{home / 'opcode.db'}")
    try:
        Vault.open(opened, key).set(name, value)
    finally:
        opened.close()


def _database_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.glob("opcode.db*") if p.is_file())


USE_SECRET = {
    "steps": [
        {"id": "use", "action": "shell.exec", "params": {
            "command": "sh", "args": ["-c", "printf '%s' \"$T\"; echo; printf '%s' \"$T\" | sha256sum"],
            "env": {"T": "${{secrets.API_TOKEN}}"}}},
        {"id": "keep", "action": "workflow.context", "depends_on": ["use"],
         "params": {"action": "update", "data": {"copy": "${{steps.use.output.stdout_raw}}"}}},
        {"id": "say", "action": "workflow.log", "depends_on": ["keep"],
         "params": {"message": "using ${{secrets.API_TOKEN}}"}},
    ]
}


async def test_a_run_gets_the_real_value_and_reports_only_the_redacted_one(tmp_path: Path) -> None:
    value = new_secret()
    tmp_path.mkdir(exist_ok=True)
    _set_secret(tmp_path, "API_TOKEN", value)
    rt = Runtime(_settings(tmp_path, OPCODE_VAULT_KEY=KEY))
    async with rt.running():
        assert rt.vault is not None
        result = await run_definition(rt, USE_SECRET)
        assert result["status"] == "completed", result
        stdout = result["steps"]["use"]["output"]["stdout_raw"]
        # The shell saw the real value (its hash), while every report of it shows `***`.
        assert stdout.startswith("***\n") and hashlib.sha256(value.encode()).hexdigest() in stdout
        assert result["steps"]["say"]["output"]["message"] == "using ***"
        assert value not in json.dumps(result)
        from opcode_core import service

        status = await service.workflow_status(rt, workflow_id=result["workflow_id"])
        assert status["context"]["copy"].startswith("***\n")
        assert value not in json.dumps(status, default=str)
    assert value.encode() not in _database_bytes(tmp_path)
    assert KEY.encode() not in _database_bytes(tmp_path)


@pytest.mark.postgres
async def test_a_run_on_postgresql_stores_only_redacted_values(tmp_path: Path) -> None:
    import psycopg

    value = new_secret()
    with postgres_schema() as pg:
        opened = Store.open(pg.url)
        Vault.open(opened, KEY).set("API_TOKEN", value)
        opened.close()
        rt = Runtime(_settings(tmp_path, OPCODE_VAULT_KEY=KEY, OPCODE_DB_URL=pg.url))
        async with rt.running():
            result = await run_definition(rt, USE_SECRET)
        assert result["status"] == "completed", result
        assert hashlib.sha256(value.encode()).hexdigest() in result["steps"]["use"]["output"]["stdout_raw"]
        with psycopg.connect(pg.url) as conn:
            dumped = [conn.execute(f"SELECT t::text FROM {table} t").fetchall()
                      for table in ("events", "step_state", "workflow_context", "workflows", "secrets")]
        assert "using ***" in repr(dumped) and value not in repr(dumped)


async def test_without_a_key_a_secret_reference_fails_with_vault_error(tmp_path: Path) -> None:
    rt = Runtime(_settings(tmp_path))
    async with rt.running():
        assert rt.vault is None
        result = await run_definition(rt, USE_SECRET)
        assert result["status"] == "failed"
        assert result["error"]["code"] == VAULT_ERROR and "no vault key" in result["error"]["message"]
        fine = await run_definition(rt, {"steps": [{"id": "ok", "action": "workflow.log",
                                                    "params": {"message": "still running"}}]})
        assert fine["status"] == "completed"


async def test_an_unknown_secret_fails_the_step_naming_it(tmp_path: Path) -> None:
    rt = Runtime(_settings(tmp_path, OPCODE_VAULT_KEY=KEY))
    async with rt.running():
        result = await run_definition(rt, USE_SECRET)
    assert result["status"] == "failed"
    assert result["error"]["code"] == VAULT_ERROR and "'API_TOKEN'" in result["error"]["message"]


async def test_a_wrong_key_stops_start_up(tmp_path: Path) -> None:
    _set_secret(tmp_path, "API_TOKEN", new_secret())
    rt = Runtime(_settings(tmp_path, OPCODE_VAULT_KEY="not the key"))
    with pytest.raises(OpcodeError) as wrong:
        await rt.start()
    assert wrong.value.code == VAULT_ERROR and wrong.value.message == WRONG_KEY


# --- the CLI, as real subprocesses ------------------------------------------------------------------------


def opcode(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the `opcode` console script with its own home."""
    return subprocess.run([OPCODE, *args], env=opcode_env(home, **env), input=stdin, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.slow
def test_cli_set_list_delete(tmp_path: Path) -> None:
    value, piped = new_secret(), new_secret()
    outputs: list[str] = []

    def ok(*args: str, stdin: str | None = None, **env: str) -> str:
        done = opcode(tmp_path, *args, stdin=stdin, **env)
        outputs.extend((done.stdout, done.stderr))
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "secret API_TOKEN set" in ok("secrets", "set", "API_TOKEN", value, OPCODE_VAULT_KEY=KEY)
    assert "secret PIPED set" in ok("secrets", "--vault-key", KEY, "set", "PIPED", "--stdin", stdin=piped + "\n")
    assert "updated" in ok("secrets", "set", "API_TOKEN", value, OPCODE_VAULT_KEY=KEY)
    table = ok("secrets", "list")
    assert "API_TOKEN" in table and "PIPED" in table and META_NAME not in table
    listed = json.loads(ok("secrets", "list", "--json"))
    assert [row["name"] for row in listed] == ["API_TOKEN", "PIPED"]
    assert set(listed[0]) == {"name", "created_at", "updated_at"}
    assert value not in "".join(outputs) and piped not in "".join(outputs)

    # What was stored is what a run resolves: the piped value lost its newline only.
    opened = Store.open(f"sqlite:///{tmp_path / 'opcode.db'}")
    try:
        vault = Vault.open(opened, KEY)
        assert vault.get("API_TOKEN") == value and vault.get("PIPED") == piped
    finally:
        opened.close()
    assert value.encode() not in _database_bytes(tmp_path) and piped.encode() not in _database_bytes(tmp_path)

    assert "secret PIPED deleted" in ok("secrets", "delete", "PIPED")
    assert [row["name"] for row in json.loads(ok("secrets", "list", "--json"))] == ["API_TOKEN"]
    again = opcode(tmp_path, "secrets", "delete", "PIPED")
    assert again.returncode == 1 and "NOT_FOUND" in again.stderr


@pytest.mark.slow
def test_cli_refuses_a_wrong_or_missing_key_and_bad_input(tmp_path: Path) -> None:
    assert opcode(tmp_path, "secrets", "set", "A", "first-value", OPCODE_VAULT_KEY=KEY).returncode == 0
    wrong = opcode(tmp_path, "secrets", "set", "B", "v-1234", OPCODE_VAULT_KEY="wrong key")
    assert wrong.returncode == 1 and f"VAULT_ERROR: {WRONG_KEY}" in wrong.stderr
    missing = opcode(tmp_path, "secrets", "set", "B", "v-1234")
    assert missing.returncode == 1 and "no vault key" in missing.stderr
    both = opcode(tmp_path, "secrets", "set", "B", "v-1234", "--stdin", stdin="x", OPCODE_VAULT_KEY=KEY)
    assert both.returncode == 2
    bad = opcode(tmp_path, "secrets", "set", "not a name", "v-1234", OPCODE_VAULT_KEY=KEY)
    assert bad.returncode == 2 and "invalid secret name" in bad.stderr
    opened = Store.open(f"sqlite:///{tmp_path / 'opcode.db'}")
    try:
        assert [row["name"] for row in list_secrets(opened)] == ["A"]
    finally:
        opened.close()


# --- a real server, over MCP: the secret appears nowhere --------------------------------------------------


class _Tee(httpx2.AsyncByteStream):
    """A response body passed through unchanged, its bytes copied to `sink` as they arrive."""

    def __init__(self, inner: httpx2.AsyncByteStream, sink: bytearray) -> None:
        self.inner, self.sink = inner, sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class RecordingTransport(httpx2.AsyncBaseTransport):
    """Every byte the server sends back, as it came off the socket."""

    def __init__(self, sink: bytearray) -> None:
        self.inner, self.sink = httpx2.AsyncHTTPTransport(), sink

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        assert "content-encoding" not in response.headers  # so the recorded bytes are searchable as they are
        return httpx2.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                               stream=_Tee(response.stream, self.sink))

    async def aclose(self) -> None:
        await self.inner.aclose()


LEAKY = {
    "steps": [
        # The step gets the secret in its environment and echoes it: stdout, a hash and the length.
        {"id": "echo", "action": "shell.exec", "params": {
            "command": "sh",
            "args": ["-c", "printf '%s\\n' \"$T\"; printf '%s' \"$T\" | sha256sum; printf 'len=%s\\n' \"${#T}\""],
            "env": {"T": "${{secrets.API_TOKEN}}"}}},
        {"id": "fail", "action": "shell.exec", "depends_on": ["echo"], "on_error": {"strategy": "ignore"},
         "params": {"command": "sh", "args": ["-c", "echo \"denied for $T\" >&2; exit 3"],
                    "env": {"T": "${{secrets.API_TOKEN}}"}}},
        {"id": "keep", "action": "workflow.context", "depends_on": ["fail"],
         "params": {"action": "update", "data": {"token": "${{secrets.API_TOKEN}}"}}},
        {"id": "say", "action": "workflow.log", "depends_on": ["keep"],
         "params": {"message": "calling the API with ${{secrets.API_TOKEN}}"}},
        {"id": "tell", "action": "workflow.notify", "depends_on": ["say"],
         "params": {"message": "token ${{secrets.API_TOKEN}}", "data": {"t": "${{secrets.API_TOKEN}}"}}},
    ],
    "output": {"echoed": "${{steps.echo.output.stdout_raw}}", "direct": "${{secrets.API_TOKEN}}"},
}


@pytest.mark.slow
async def test_a_secret_used_by_a_run_appears_nowhere(tmp_path: Path) -> None:
    value = new_secret()
    home = tmp_path / "home"
    home.mkdir()
    assert opcode(home, "secrets", "set", "API_TOKEN", value, OPCODE_VAULT_KEY=KEY).returncode == 0
    server = start_server(home, OPCODE_VAULT_KEY=KEY)
    wire, received = bytearray(), []

    async def on_message(message: Any) -> None:
        received.append(message)

    try:
        recording = RecordingTransport(wire)
        async with streamable_session(server.mcp_url, transport=recording, message_handler=on_message) as session:
            await call(session, "opcode.define", {"name": "leaky", "definition": LEAKY, "agent_id": "spy"})
            run = await call(session, "opcode.run", {"template_name": "leaky", "agent_id": "spy"})
            assert run["status"] == "completed", run
            echoed = run["steps"]["echo"]["output"]["stdout_raw"]
            # The step really received the value: its hash and length, computed in the shell, match.
            assert echoed == f"***\n{hashlib.sha256(value.encode()).hexdigest()}  -\nlen={len(value)}\n"
            assert run["output"] == {"echoed": echoed, "direct": "***"}
            assert run["steps"]["fail"]["error"]["code"] and "denied for ***" in json.dumps(run["steps"]["fail"])
            status = await call(session, "opcode.status", {"workflow_id": run["workflow_id"]})
            assert status["context"] == {"token": "***"}
            assert status["steps"]["echo"]["output"]["stdout_raw"] == echoed
            events = await call(session, "opcode.query", {"resource": "events",
                                                            "filter": {"workflow_id": run["workflow_id"]}})
            completed = [e for e in events["events"] if e["event_type"] == "step_completed" and e["step_id"] == "echo"]
            assert completed[0]["payload"]["output"]["stdout_raw"] == echoed
            assert completed[0]["payload"]["input"]["env"] == {"T": "***"}  # the step's input, as stored
            await call(session, "opcode.query", {"resource": "workflows", "filter": {"agent_id": "spy"}})
            await session.call_tool("opcode.diagram", {"workflow_id": run["workflow_id"], "format": "mermaid"})
        notes = [m for m in received if "token ***" in repr(m)]
        assert notes, received  # the notification arrived, redacted
        database_while_running = _database_bytes(home)
        log_while_running = server.log()
    finally:
        stop_server(server.process)
    assert b"calling the API with ***" in server.log_path.read_bytes()  # the log line was written, redacted
    secret = value.encode()
    assert secret not in bytes(wire) and b"***" in bytes(wire)
    assert secret not in repr(received).encode()
    assert secret not in database_while_running and secret not in _database_bytes(home)
    assert value not in log_while_running and secret not in server.log_path.read_bytes()
    assert KEY.encode() not in bytes(wire) + _database_bytes(home) + server.log_path.read_bytes()


@pytest.mark.slow
async def test_without_a_key_the_run_fails_and_the_server_keeps_answering(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home")
    wire: bytearray = bytearray()
    try:
        async with streamable_session(server.mcp_url, transport=RecordingTransport(wire)) as session:
            await call(session, "opcode.define", {"name": "leaky", "definition": LEAKY, "agent_id": "a"})
            run = await call(session, "opcode.run", {"template_name": "leaky", "agent_id": "a"})
            assert run["status"] == "failed"
            assert run["error"]["code"] == VAULT_ERROR and "no vault key" in run["error"]["message"]
            plain = {"steps": [{"id": "ok", "action": "workflow.log", "params": {"message": "fine"}}]}
            await call(session, "opcode.define", {"name": "plain", "definition": plain, "agent_id": "a"})
            assert (await call(session, "opcode.run", {"template_name": "plain", "agent_id": "a"}))["status"] == (
                "completed")
        assert httpx2.get(f"{server.base_url}/health").status_code == 200
    finally:
        stop_server(server.process)


@pytest.mark.slow
@pytest.mark.parametrize("given", ["env", "flag"])
def test_serve_with_a_wrong_key_stops_and_says_so(tmp_path: Path, given: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert opcode(home, "secrets", "set", "API_TOKEN", new_secret(), OPCODE_VAULT_KEY=KEY).returncode == 0
    if given == "env":
        with pytest.raises(RuntimeError, match=re.escape(f"cannot start: VAULT_ERROR: {WRONG_KEY}")):
            stop_server(start_server(home, OPCODE_VAULT_KEY="not the key").process)
        return
    # `--vault-key` reaches the runtime: with it ignored, this server would start without a vault.
    served = opcode(home, "serve", "--vault-key", "not the key", "--listen-addr", f"127.0.0.1:{free_port()}")
    assert served.returncode != 0 and f"cannot start: VAULT_ERROR: {WRONG_KEY}" in served.stderr
    assert "not the key" not in served.stderr


def test_the_docs_example_is_a_valid_workflow() -> None:
    from opcode_core.engine.definition import load_definition
    from opcode_core.runtime import load_registry

    text = (Path(__file__).resolve().parent.parent / "docs" / "secrets.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    assert len(blocks) == 1
    _, _, registry = load_registry(load_settings({"OPCODE_LOAD_PLUGINS": ""}, home="/nonexistent"))
    definition = load_definition(blocks[0], registry)
    assert [step.id for step in definition.steps] == ["whoami", "call"]

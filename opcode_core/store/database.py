"""Open a peewee database from a URL: SQLite (embedded default) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import peewee as pw
from playhouse.db_url import connect

from opcode_core.errors import STORE_ERROR, OpcodeError

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    # With WAL, NORMAL loses at most the last commits on power loss, never consistency; FULL costs an fsync each.
    "synchronous": "normal",
    "busy_timeout": 5000,
    "foreign_keys": 1,
}

try:  # psycopg is an optional extra; SQLite needs nothing.
    import psycopg

    DRIVER_ERRORS: tuple[type[Exception], ...] = (pw.PeeweeException, sqlite3.Error, psycopg.Error)
except ImportError:  # pragma: no cover - depends on the install
    DRIVER_ERRORS = (pw.PeeweeException, sqlite3.Error)


def redact_url(url: str) -> str:
    """The URL with its password replaced, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_database(url: str) -> pw.Database:
    """Connect to `sqlite:///path` or `postgresql://...`; raises STORE_ERROR when that fails."""
    scheme = urlsplit(url).scheme
    try:
        if scheme == "sqlite":
            db = _open_sqlite(url)
        elif scheme in ("postgresql", "postgres"):
            db = connect(url, unquote_user=True, unquote_password=True, prefer_psycopg3=True)
        else:
            raise OpcodeError(
                STORE_ERROR, f"unsupported database URL {redact_url(url)!r}: use sqlite:// or postgresql://"
            )
        db.connect()
    except OpcodeError:
        raise
    except (*DRIVER_ERRORS, OSError, ValueError, RuntimeError) as exc:
        raise OpcodeError(STORE_ERROR, f"cannot open database {redact_url(url)}: {exc}") from exc
    return db


def _open_sqlite(url: str) -> pw.Database:
    path = urlsplit(url).path[1:]  # sqlite:////abs/x.db -> /abs/x.db, sqlite:///rel.db -> rel.db
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # IMMEDIATE: a write transaction takes the lock at BEGIN, so read-then-write never fails on a stale snapshot.
    return connect(url, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")

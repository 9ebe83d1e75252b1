"""Persistence: peewee models and migrations, the event log with its projections, and the group-commit writer."""

from opcode_core.store.database import open_database
from opcode_core.store.events import Event
from opcode_core.store.store import Store
from opcode_core.store.writer import DbRunner, EventWriter

__all__ = ["DbRunner", "Event", "EventWriter", "Store", "open_database"]

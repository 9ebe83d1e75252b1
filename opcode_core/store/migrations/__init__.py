"""Versioned schema migrations, applied in order by `playhouse.migrations.Runner` (see Store.migrate)."""

"""The SQLite backend: one file, no other service (see store.py)."""

from hookd.storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]

"""The PostgreSQL backend: several hookd nodes on one database (see store.py)."""

from hookd.storage.postgres.store import PostgresStore

__all__ = ["PostgresStore"]

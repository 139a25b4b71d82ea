"""Where a scenario's daemon keeps its data: a SQLite file (the default), or a
PostgreSQL database of the run's own (``python -m bench run --postgres [URL]``).

A scenario fills ``source``, a SQLite file, through the store API as before,
then calls :meth:`Database.ready`: on SQLite that file is the daemon's; on
PostgreSQL ``hookd copy`` moves it into the run's database.  The daemon gets
:meth:`Database.env`; the harness reads counts with :meth:`Database.count`.
:meth:`Database.usage` samples the CPU of the whole machine and of the
PostgreSQL server's processes, which share the cores with hookd.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import pg
from bench.common import readonly_db

# The server of --postgres (its maintenance database's URL); None: SQLite.
POSTGRES: str | None = None


def backend() -> str:
    return "sqlite" if POSTGRES is None else "postgresql"


@dataclass
class Usage:
    at: float
    busy: float
    steal: float
    all: float
    postgres: pg.PgSample | None


class Database:
    kind = "sqlite"

    def __init__(self, wd: Path) -> None:
        self.source = wd / "hookd.db"
        self.name = ""
        # The harness's own sessions on the server, not counted as hookd's.
        self.harness_pids: set[int] = set()
        self._conn: sqlite3.Connection | None = None

    def ready(self) -> None:
        """The source is filled: make it what the daemon will use."""

    def env(self) -> dict[str, str]:
        return {}

    def count(self, sql: str) -> int:
        if self._conn is None:
            self._conn = readonly_db(self.source)
        return int(self._conn.execute(sql).fetchone()[0])

    def analyze(self) -> None:
        conn = sqlite3.connect(self.source)
        conn.execute("ANALYZE")
        conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def usage(self) -> Usage:
        return Usage(time.monotonic(), *pg.machine_cpu(), None)

    def report(self, first: Usage, last: Usage, per: int = 0, unit: str = "") -> dict[str, Any]:
        """The machine's CPU over the window (and the server's, on PostgreSQL), in
        cores; with ``per`` and ``unit``, the server's CPU per unit too."""
        seconds = last.at - first.at
        out: dict[str, Any] = {
            "backend": self.kind,
            "machine_busy_cores": (last.busy - first.busy) / seconds,
            "machine_steal_cores": (last.steal - first.steal) / seconds,
        }
        spent = pg.postgres_cpu(first.postgres, last.postgres, self.name, self.harness_pids)
        out.update(spent)
        for key, value in spent.items():
            out[key.replace("_cpu_s", "_cores")] = value / seconds
        if spent and per and unit:
            out[f"postgres_cpu_us_per_{unit}"] = spent["postgres_cpu_s"] / per * 1e6
        return out


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(self, wd: Path, server: str) -> None:
        super().__init__(wd)
        self.source = wd / "source.db"
        self.server = server
        self.name, self.postmaster = pg.create_database(server)
        self.url = pg.with_database(server, self.name)
        self._sql: pg.Sql | None = None

    def ready(self) -> None:
        if self.source.exists():
            pg.copy_from_sqlite(self.source, self.url)

    def env(self) -> dict[str, str]:
        return {"HOOKD_DATABASE_URL": self.url}

    def _open(self) -> pg.Sql:
        if self._sql is None:
            self._sql = pg.Sql(self.url)
            self.harness_pids.add(self._sql.backend_pid)
        return self._sql

    def count(self, sql: str) -> int:
        return int(self._open().value(sql))

    def execute(self, sql: str, *args: Any) -> None:
        self._open().execute(sql, *args)

    def analyze(self) -> None:
        self._open().execute("ANALYZE")

    def vacuum(self) -> None:
        self._open().execute("VACUUM ANALYZE deliveries")

    def usage(self) -> Usage:
        return Usage(time.monotonic(), *pg.machine_cpu(), pg.sample_postgres(self.postmaster))

    def close(self) -> None:
        if self._sql is not None:
            self._sql.close()
            self._sql = None
        pg.drop_database(self.server, self.name)


@contextmanager
def database(wd: Path) -> Iterator[Database]:
    """The run's database, on the backend chosen for the benchmark; dropped after."""
    db = Database(wd) if POSTGRES is None else PostgresDatabase(wd, POSTGRES)
    try:
        yield db
    finally:
        db.close()

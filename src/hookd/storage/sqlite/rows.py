"""How SQLite reads the shared rows (``storage/rows.py``): a JSON array per kind.

The hot statements take their rows as one JSON array per kind and read it
inside SQLite with ``json_each``: a statement then steps once, however many
rows it writes (the sqlite3 module hands the GIL back around every step, and
on a busy process those hand-backs, not SQLite's work, were most of a
transaction's time).
"""

from __future__ import annotations

from typing import NamedTuple


def columns(row: type[NamedTuple], source: str, only: tuple[str, ...] | None = None) -> str:
    """``(SELECT json_extract(value, '$[i]') AS name, ... FROM json_each(source))``.

    ``only`` limits the columns to those a statement reads (each is a JSON
    lookup per row); ``ordinal``, the row's position in the array, is always there.
    """
    fields = row._fields
    names = only if only is not None else fields
    extracts = ", ".join(f"json_extract(value, '$[{fields.index(n)}]') AS {n}" for n in names)
    return f"(SELECT key AS ordinal, {extracts} FROM json_each({source}))"

"""Read-only connections to the collector's database, and the snapshot each answer reads.

A connection from :func:`connect_readonly` opens the database with a ``mode=ro`` URI and
``query_only``; use one per thread (it is made with ``check_same_thread=False`` for callers
that lock it themselves). Every answer reads inside one :func:`snapshot`, a read transaction,
so what it counts is consistent while the writer (WAL mode) goes on writing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union
from urllib.parse import quote


def connect_readonly(path: Union[str, os.PathLike[str]]) -> sqlite3.Connection:
    """A read-only connection (``file:...?mode=ro``); raises ``FileNotFoundError`` if no file
    is there, ``sqlite3.DatabaseError`` "not a popcon database" for a file that is not one (not
    SQLite, or SQLite without popcon's ``meta`` table) and other ``sqlite3.Error`` when it
    cannot be opened."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no popcon database at {path}")
    if path.is_dir():
        raise sqlite3.DatabaseError("not a popcon database (a directory)")
    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    conn = sqlite3.connect(
        uri, uri=True, check_same_thread=False, timeout=10.0, isolation_level=None
    )
    try:
        try:
            is_popcon = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as error:  # "file is not a database"
            raise sqlite3.DatabaseError(f"not a popcon database ({error})") from None
        if is_popcon is None:
            raise sqlite3.DatabaseError("not a popcon database (no popcon tables in it)")
        conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: a month of daily rows stays cached
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[int]:
    """One read transaction (a consistent snapshot under WAL); yields ``rolled_until``, the
    end of the finest buckets already rolled up into the coarser tiers."""
    if conn.in_transaction:
        yield _rolled_until(conn)
        return
    conn.execute("BEGIN")
    try:
        yield _rolled_until(conn)
    finally:
        conn.execute("COMMIT")


def _rolled_until(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'rolled_until'").fetchone()
    return int(row[0]) if row is not None else 0

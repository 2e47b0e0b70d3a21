"""Upkeep of a collector's database: forget an environment or a library, back the database up.

Forgetting writes, so it takes the database's writer lock (:class:`~.lock.WriterLock`) first: a
running collector holds it, and keeps ids and counts in memory that would bring the forgotten
rows back, so forgetting waits until the collector is stopped (:class:`~.lock.DatabaseInUse`
otherwise). A backup only reads, through SQLite's online backup API, so it works while the
collector runs and copies one consistent snapshot.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union
from urllib.parse import quote

from .lock import WriterLock
from .schema import LEVEL_COLUMNS, SCHEMA_VERSION, renew_rolled_rows, schema_version
from .sketch import encode, merged

Path_ = Union[str, os.PathLike[str]]


class NotPopconDatabase(sqlite3.DatabaseError):
    """The file is not a popcon database."""


@dataclass(frozen=True)
class Forgettable:
    """What forgetting one environment or library removes, as said before asking."""

    kind: str  # "environment" or "library"
    name: str
    found: bool
    #: An environment's processes counted in the totals; a library's environments.
    amount: int
    last_seen: int | None  # epoch seconds of its latest bucket


def _check_popcon(conn: sqlite3.Connection) -> None:
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
    except sqlite3.DatabaseError as error:
        raise NotPopconDatabase(f"not a popcon database ({error})") from None
    if found is None:
        raise NotPopconDatabase("not a popcon database (no popcon tables in it)")


def _check_schema(conn: sqlite3.Connection) -> None:
    """:class:`NotPopconDatabase` unless the database holds the schema this popcon writes."""
    version = schema_version(conn)
    if version is None or version == SCHEMA_VERSION:
        return
    if version < SCHEMA_VERSION:
        advice = "start popcon serve on it once, which migrates it, then stop it and retry"
    else:
        advice = "use the popcon that wrote it"
    raise NotPopconDatabase(
        f"the database has schema {version}, this popcon writes schema {SCHEMA_VERSION}: {advice}"
    )


@contextmanager
def open_for_upkeep(database: Path_) -> Iterator[sqlite3.Connection]:
    """A writing connection to an existing popcon database, with its writer lock held.

    Raises ``FileNotFoundError``, :class:`NotPopconDatabase`, or
    :class:`~.lock.DatabaseInUse` when a collector (or another upkeep) holds the database."""
    if not Path(database).is_file():
        raise FileNotFoundError(f"no popcon database at {database}")
    lock = WriterLock(database)
    lock.acquire()
    try:
        conn = sqlite3.connect(str(database), isolation_level=None, timeout=5.0)
        try:
            _check_popcon(conn)
            _check_schema(conn)
            yield conn
        finally:
            conn.close()
    finally:
        lock.release()


def _env_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM envs WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def _lib_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM libs WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def describe_environment(conn: sqlite3.Connection, name: str) -> Forgettable:
    env_id = _env_id(conn, name)
    if env_id is None:
        return Forgettable("environment", name, False, 0, None)
    processes, last_seen = conn.execute(
        "SELECT COALESCE(SUM(count), 0), MAX(last_seen) FROM total_reports WHERE env_id = ?",
        (env_id,),
    ).fetchone()
    seen = conn.execute("SELECT last_seen FROM envs WHERE id = ?", (env_id,)).fetchone()[0]
    return Forgettable("environment", name, True, int(processes), last_seen or seen)


def describe_library(conn: sqlite3.Connection, name: str) -> Forgettable:
    lib_id = _lib_id(conn, name)
    if lib_id is None:
        return Forgettable("library", name, False, 0, None)
    environments, last_seen = conn.execute(
        "SELECT COUNT(DISTINCT env_id), MAX(last_seen) FROM total_usage WHERE lib_id = ?",
        (lib_id,),
    ).fetchone()
    return Forgettable("library", name, True, int(environments), last_seen)


def _rolled_until(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'rolled_until'").fetchone()
    return int(row[0]) if row is not None else 0


_SUMS = ", ".join(f"SUM(u.{c}) AS {c}" for c in LEVEL_COLUMNS)
_KEY = "g.tier = l.tier AND g.bucket = l.bucket AND g.lib_id = l.lib_id AND g.origin = l.origin"
_SUBTRACT = ", ".join(f"{c} = {c} - (SELECT {c} FROM gone g WHERE {_KEY})" for c in LEVEL_COLUMNS)


#: Libraries no stored row names any more (only the forgotten environment used them).
_ORPHAN_LIBRARIES = "DELETE FROM libs WHERE " + " AND ".join(
    f"id NOT IN (SELECT {column} FROM {table})"
    for table, column in (
        ("total_usage", "lib_id"),
        ("usage_by_source", "lib_id"),
        ("usage_by_library", "lib_id"),
        ("sketches_by_source", "lib_id"),
        ("programs", "lib_id"),
        ("edges", "lib_id"),
        ("edges", "importer_id"),
    )
)


def forget_environment(conn: sqlite3.Connection, name: str) -> bool:
    """Delete every count, edge, inventory and total of environment ``name``, and its rows in
    ``usage_by_library`` (the counts over all environments) taken off; False when no such
    environment is stored. One transaction."""
    env_id = _env_id(conn, name)
    if env_id is None:
        return False
    sources = "(SELECT id FROM sources WHERE env_id = ?)"
    conn.execute("BEGIN IMMEDIATE")
    try:
        # usage_by_library holds, per tier, the sum over sources of usage_by_source: the
        # coarser tiers all of it, tier 0 the buckets rolled up already.
        conn.execute(
            "CREATE TEMP TABLE gone AS "
            f"SELECT u.tier AS tier, u.bucket AS bucket, u.lib_id AS lib_id, "
            f"u.origin AS origin, {_SUMS} "
            f"FROM usage_by_source u WHERE u.source_id IN {sources} "
            "AND (u.tier > 0 OR u.bucket < ?) GROUP BY u.tier, u.bucket, u.lib_id, u.origin",
            (env_id, _rolled_until(conn)),
        )
        conn.execute(
            f"UPDATE usage_by_library AS l SET {_SUBTRACT} "
            f"WHERE EXISTS (SELECT 1 FROM gone g WHERE {_KEY})"
        )
        zero = " AND ".join(f"{c} <= 0" for c in LEVEL_COLUMNS)
        conn.execute(f"DELETE FROM usage_by_library WHERE {zero}")
        conn.execute("DROP TABLE temp.gone")
        _rebuild_library_sketches(conn, env_id)
        renew_rolled_rows(conn)
        for table in ("usage_by_source", "reports", "sketches_by_source", "programs"):
            conn.execute(f"DELETE FROM {table} WHERE source_id IN {sources}", (env_id,))
        for table in ("edges", "inventory", "total_usage", "total_versions", "total_reports"):
            conn.execute(f"DELETE FROM {table} WHERE env_id = ?", (env_id,))
        conn.execute("DELETE FROM sources WHERE env_id = ?", (env_id,))
        conn.execute("DELETE FROM envs WHERE id = ?", (env_id,))
        conn.execute(_ORPHAN_LIBRARIES)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def _rebuild_library_sketches(conn: sqlite3.Connection, env_id: int) -> None:
    """``sketches_by_library`` (per tier, the union of the sources' sketches: registers
    cannot be taken off) rebuilt without the sources of environment ``env_id``, where they
    had a part in it: the coarser tiers, and tier 0's buckets rolled up already."""
    sources = "(SELECT id FROM sources WHERE env_id = ?)"
    touched = conn.execute(
        "SELECT DISTINCT tier, lib_id, bucket, kind FROM sketches_by_source "
        f"WHERE source_id IN {sources} AND (tier > 0 OR bucket < ?)",
        (env_id, _rolled_until(conn)),
    ).fetchall()
    for tier, lib_id, bucket, kind in touched:
        blobs = [
            row[0]
            for row in conn.execute(
                "SELECT registers FROM sketches_by_source WHERE tier = ? AND bucket = ? "
                f"AND lib_id = ? AND kind = ? AND source_id NOT IN {sources}",
                (tier, bucket, lib_id, kind, env_id),
            )
        ]
        if blobs:
            conn.execute(
                "INSERT OR REPLACE INTO sketches_by_library VALUES (?, ?, ?, ?, ?)",
                (tier, lib_id, bucket, kind, encode(merged(blobs))),
            )
        else:
            conn.execute(
                "DELETE FROM sketches_by_library WHERE tier = ? AND lib_id = ? AND bucket = ? "
                "AND kind = ?",
                (tier, lib_id, bucket, kind),
            )


def forget_library(conn: sqlite3.Connection, name: str) -> bool:
    """Delete every count, version, edge (as the library and as an importer), total and
    inventory line of library ``name`` (canonical), and the name itself; False when no such
    library is stored. One transaction."""
    lib_id = _lib_id(conn, name)
    if lib_id is None:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in (
            "usage_by_source",
            "usage_by_library",
            "sketches_by_source",
            "sketches_by_library",
            "programs",
            "total_usage",
            "total_versions",
        ):
            conn.execute(f"DELETE FROM {table} WHERE lib_id = ?", (lib_id,))
        conn.execute("DELETE FROM edges WHERE lib_id = ? OR importer_id = ?", (lib_id, lib_id))
        conn.execute("DELETE FROM inventory WHERE name = ?", (name,))
        conn.execute("DELETE FROM libs WHERE id = ?", (lib_id,))
        renew_rolled_rows(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True


def backup_database(database: Path_, target: Path_) -> int:
    """Copy ``database`` to ``target`` with SQLite's online backup API, in one step (one
    consistent snapshot, while a collector writes); the copy replaces ``target`` only once
    complete. Returns the copy's size in bytes."""
    source_path, target_path = Path(database), Path(target)
    if not source_path.is_file():
        raise FileNotFoundError(f"no popcon database at {database}")
    if target_path.exists() and os.path.samefile(source_path, target_path):
        raise ValueError(f"{target}: that is the database itself")
    source = sqlite3.connect(f"file:{quote(str(source_path.resolve()))}?mode=ro", uri=True)
    partial = target_path.with_name(f".{target_path.name}.{os.getpid()}.partial")
    try:
        _check_popcon(source)
        copy = sqlite3.connect(str(partial))
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            copy.close()
        os.replace(partial, target_path)
    finally:
        source.close()
        partial.unlink(missing_ok=True)
    return target_path.stat().st_size

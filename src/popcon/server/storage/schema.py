"""The collector's database: its tables, tiers and settings, and how a connection to it is made.

Both sides use this module: the writer (``popcon.server.storage.writer``) creates the schema
through :func:`connect_writer`; the readers (``popcon.server.query``) read the tiers and the
codes stored in its columns. It imports nothing else of popcon but the protocol's vocabulary
(levels, origins, rejection reasons). The design of the tables is in ``docs/collector-storage.md``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from popcon.protocol import (
    CLAIMED,
    DIRECT,
    ORIGINS,
    PROGRAM,
    REJECTIONS,
    TRANSITIVE,
    UNKNOWN,
    UPGRADE,
)

#: 2: the ``program`` and ``claimed`` columns, the sketches of people and the programs;
#: 3: the inventory's ``requested`` and ``requires`` columns (a database of schema 1 or 2 is
#: migrated when the writer opens it).
SCHEMA_VERSION = 3
DAY = 86400
#: Count columns of the usage tables, in this order: raw record counts per level (also the
#: level codes of ``total_usage``).
LEVEL_COLUMNS = (DIRECT, TRANSITIVE, UPGRADE, UNKNOWN, PROGRAM, CLAIMED)
#: What the sketches of people are kept for: the people whose processes reported a library at
#: each level (``upgrade`` and ``claimed`` records go to ``direct``), and, for a program
#: (``prog`` records), the people who ran it.
RAN = "ran"
SKETCH_KINDS = (DIRECT, TRANSITIVE, PROGRAM, RAN)
#: The sketch a record of each level contributes to.
SKETCH_OF_LEVEL = {
    DIRECT: DIRECT,
    UPGRADE: DIRECT,
    CLAIMED: DIRECT,
    TRANSITIVE: TRANSITIVE,
    PROGRAM: PROGRAM,
}
#: How an origin is stored.
ORIGIN_CODES = {origin: code for code, origin in enumerate((*ORIGINS, UNKNOWN))}


#: The ``meta`` key of a random token that changes whenever rows of buckets already rolled up
#: change (records arriving late, ``popcon forget``): while it stays the same, answers may keep
#: what they read of those buckets (``popcon.server.query.kept``).
ROLLED_ROWS = "rolled_rows"


def renew_rolled_rows(conn: sqlite3.Connection) -> None:
    """Mark the rows of buckets already rolled up as changed (inside the caller's
    transaction)."""
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (ROLLED_ROWS, secrets.token_hex(8)))


def sketch_code(kind: str, origin: str) -> int:
    """The ``kind`` column of a sketch: its kind (:data:`SKETCH_KINDS`) and the origin of the
    records it counts (``env`` or ``user``; only popcon/2 records, which always name one,
    carry people), so that people can be counted under an origin filter too."""
    return SKETCH_KINDS.index(kind) * len(ORIGINS) + ORIGIN_CODES[origin]


def sketch_kind_of(code: int) -> int:
    """The index in :data:`SKETCH_KINDS` of a sketch's ``kind`` column."""
    return code // len(ORIGINS)


#: Results the store adds to the decoder's: a datagram dropped (``env_cap``, ``labels_cap``,
#: ``overload``: more inventory parts in half a second than the receiver keeps) or stored
#: without the records over a cap (``library_cap``, ``version_cap``) or the importer edges
#: over one (``importer_cap``).
STORE_REJECTIONS = (
    "env_cap",
    "labels_cap",
    "library_cap",
    "version_cap",
    "importer_cap",
    "overload",
)
#: Every value of ``popcon_datagrams_total{result}``.
RESULT_REASONS = ("ok", *REJECTIONS, *STORE_REJECTIONS)

Labels = tuple[tuple[str, str], ...]


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    """Buckets of ``width`` seconds (aligned to the epoch, so days start at 00:00 UTC), kept
    ``keep`` seconds."""

    width: int
    keep: int


def default_tiers(bucket_width: int = 600, retention: int = 400 * DAY) -> tuple[Tier, ...]:
    """``bucket_width`` kept 2 days, 1 hour kept 60 days, 1 day kept ``retention``.

    A coarser tier is left out when the finer one is already as coarse, and no tier is kept
    longer than the retention.
    """
    tiers = [Tier(bucket_width, min(2 * DAY, retention))]
    for width, keep in ((3600, 60 * DAY), (DAY, retention)):
        keep = min(keep, retention)
        if width > tiers[-1].width and width % tiers[-1].width == 0:
            tiers.append(Tier(width, keep))
        else:
            tiers[-1] = Tier(tiers[-1].width, max(tiers[-1].keep, keep))
    return tuple(tiers)


@dataclass(frozen=True)
class StoreSettings:
    """What the collector stores and for how long; every field is a ``popcon serve`` setting."""

    bucket_width: int = 600
    retention: int = 400 * DAY
    #: ``None``: :func:`default_tiers` of ``bucket_width`` and ``retention``.
    tiers: tuple[Tier, ...] | None = None
    max_environments: int = 500
    max_label_sets_per_env: int = 64
    max_libraries_per_env: int = 5000
    max_libraries: int = 50_000
    #: Versions, and importers, of one library in one environment seen within a day (the
    #: first is always kept), and those beyond the first over all of them.
    max_versions_per_library: int = 32
    max_importers_per_library: int = 1000
    max_versions: int = 100_000
    max_importers: int = 100_000
    #: Seconds between two commits while data arrives (at most 1 s, so a SIGKILL loses <= 2 s:
    #: the receiver hands over every 0.5 s).
    commit_interval: float = 1.0
    #: Seconds after a finest bucket ends before it is rolled up into coarser tiers and
    #: totals (later rows for it are still counted, at a higher cost).
    rollup_grace: float = 10.0
    #: Inventories being assembled at once, and how long a missing part is waited for.
    max_pending_inventories: int = 256
    inventory_timeout: float = 3600.0
    #: Jobs waiting for the writer; when full, the receiving side merges new rows into the
    #: job it holds instead (memory stays bounded by the caps).
    queue_size: int = 16
    #: Seconds a write waits for a lock held by another process before it is retried later.
    busy_timeout: float = 5.0

    def resolved_tiers(self) -> tuple[Tier, ...]:
        return (
            self.tiers
            if self.tiers is not None
            else default_tiers(self.bucket_width, self.retention)
        )

    def check(self) -> None:
        """Raise ``ValueError`` naming the setting that cannot work."""
        if not 60 <= self.bucket_width <= DAY or DAY % self.bucket_width:
            raise ValueError("bucket_width: expected 60..86400 seconds dividing a day")
        if self.retention < self.bucket_width:
            raise ValueError("retention: expected at least one bucket width")
        tiers = self.resolved_tiers()
        if not tiers or tiers[0].width != self.bucket_width:
            raise ValueError("tiers: the first tier's width must be bucket_width")
        for finer, coarser in zip(tiers, tiers[1:]):
            if coarser.width <= finer.width or coarser.width % finer.width:
                raise ValueError("tiers: each tier must be a multiple of the finer one")
        for name in (
            "max_environments",
            "max_label_sets_per_env",
            "max_libraries_per_env",
            "max_libraries",
            "max_versions_per_library",
            "max_importers_per_library",
            "max_versions",
            "max_importers",
            "max_pending_inventories",
            "queue_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected at least 1")
        if self.busy_timeout < 0:
            raise ValueError("busy_timeout: expected 0 or more seconds")
        if not 0 < self.commit_interval <= 1:
            raise ValueError("commit_interval: expected more than 0 and at most 1 second")


# -- labels ------------------------------------------------------------------------------------


def labels_text(labels: Labels) -> str:
    """How a source's labels are stored: ``(("hub", "a"), ("ns", "b"))`` → ``"hub=a,ns=b"``
    (labels arrive sorted by key)."""
    return ",".join(f"{k}={v}" for k, v in labels)


def parse_labels(text: str) -> dict[str, str]:
    """A source's stored labels (:func:`labels_text`), as a dict."""
    if not text:
        return {}
    return dict(item.split("=", 1) for item in text.split(","))


# -- schema ------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS envs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, py TEXT NOT NULL DEFAULT '',
    inventory_id TEXT, inventory_at INTEGER);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY, env_id INTEGER NOT NULL, labels TEXT NOT NULL,
    last_seen INTEGER NOT NULL, UNIQUE (env_id, labels));
CREATE TABLE IF NOT EXISTS libs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS usage_by_source (
    tier INTEGER NOT NULL, source_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    lib_id INTEGER NOT NULL, origin INTEGER NOT NULL, version TEXT NOT NULL,
    direct INTEGER NOT NULL, transitive INTEGER NOT NULL,
    upgrade INTEGER NOT NULL, unknown INTEGER NOT NULL,
    program INTEGER NOT NULL DEFAULT 0, claimed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tier, source_id, bucket, lib_id, origin, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_by_library (
    tier INTEGER NOT NULL, bucket INTEGER NOT NULL, lib_id INTEGER NOT NULL,
    origin INTEGER NOT NULL,
    direct INTEGER NOT NULL, transitive INTEGER NOT NULL,
    upgrade INTEGER NOT NULL, unknown INTEGER NOT NULL,
    program INTEGER NOT NULL DEFAULT 0, claimed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tier, lib_id, bucket, origin)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sketches_by_source (
    tier INTEGER NOT NULL, source_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    lib_id INTEGER NOT NULL, version TEXT NOT NULL, kind INTEGER NOT NULL,
    registers BLOB NOT NULL,
    PRIMARY KEY (tier, source_id, bucket, lib_id, version, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sketches_by_library (
    tier INTEGER NOT NULL, lib_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    kind INTEGER NOT NULL, registers BLOB NOT NULL,
    PRIMARY KEY (tier, lib_id, bucket, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS programs (
    tier INTEGER NOT NULL, source_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    lib_id INTEGER NOT NULL, version TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (tier, source_id, bucket, lib_id, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS edges (
    tier INTEGER NOT NULL, lib_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    env_id INTEGER NOT NULL, importer_id INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (tier, lib_id, bucket, env_id, importer_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (
    tier INTEGER NOT NULL, source_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (tier, source_id, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inventory (
    env_id INTEGER NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    requested INTEGER, requires TEXT,
    PRIMARY KEY (env_id, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS total_usage (
    env_id INTEGER NOT NULL, lib_id INTEGER NOT NULL, level INTEGER NOT NULL,
    count INTEGER NOT NULL, last_seen INTEGER NOT NULL,
    PRIMARY KEY (env_id, lib_id, level)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS total_versions (
    env_id INTEGER NOT NULL, lib_id INTEGER NOT NULL, version TEXT NOT NULL,
    count INTEGER NOT NULL, last_seen INTEGER NOT NULL,
    PRIMARY KEY (env_id, lib_id, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS total_reports (
    env_id INTEGER PRIMARY KEY, count INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS datagram_results (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""

#: Per-connection tables of the writer: rows for buckets already rolled up, added up before
#: they are rolled up again.
TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS late_usage (
    tier INTEGER, source_id INTEGER, bucket INTEGER, lib_id INTEGER, origin INTEGER,
    version TEXT, direct INTEGER, transitive INTEGER, upgrade INTEGER, unknown INTEGER,
    program INTEGER, claimed INTEGER,
    PRIMARY KEY (tier, source_id, bucket, lib_id, origin, version));
CREATE TEMP TABLE IF NOT EXISTS late_programs (
    tier INTEGER, source_id INTEGER, bucket INTEGER, lib_id INTEGER, version TEXT,
    count INTEGER, PRIMARY KEY (tier, source_id, bucket, lib_id, version));
CREATE TEMP TABLE IF NOT EXISTS late_edges (
    tier INTEGER, lib_id INTEGER, bucket INTEGER, env_id INTEGER, importer_id INTEGER,
    count INTEGER, PRIMARY KEY (tier, lib_id, bucket, env_id, importer_id));
CREATE TEMP TABLE IF NOT EXISTS late_reports (
    tier INTEGER, source_id INTEGER, bucket INTEGER, count INTEGER,
    PRIMARY KEY (tier, source_id, bucket));
"""


def connect_writer(
    path: Union[str, os.PathLike[str]],
    settings: StoreSettings | None = None,
    *,
    now: float | None = None,
) -> sqlite3.Connection:
    """Open (creating if needed) the database for writing: WAL, schema, tiers checked.

    Raises ``ValueError`` when the database was created with other bucket widths (they cannot
    change afterwards; keeps and caps can), ``sqlite3.Error``/``OSError`` when it cannot be
    opened. ``now`` starts ``rolled_until`` of a new database (default: the current time).
    It takes no lock of its own: the collector's writer holds the database's lock
    (:class:`~popcon.server.storage.lock.WriterLock`) before it calls this.
    """
    settings = settings or StoreSettings()
    settings.check()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path), timeout=settings.busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        conn.executescript(TEMP_TABLES)
        tiers = settings.resolved_tiers()
        row = conn.execute("SELECT value FROM meta WHERE key = 'tiers'").fetchone()
        if row is not None:
            stored = read_tiers(conn)
            if [t.width for t in stored] != [t.width for t in tiers]:
                raise ValueError(
                    f"bucket widths: the database at {path} was created with tiers "
                    f"{[t.width for t in stored]} s and cannot change to "
                    f"{[t.width for t in tiers]} s; use a new --db"
                )
        start = time.time() if now is None else now
        conn.execute("BEGIN IMMEDIATE")
        migrate(conn, path)
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('tiers', ?)",
            (json.dumps([[t.width, t.keep] for t in tiers]),),
        )
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('rolled_until', ?)",
            (str(int(start) - int(start) % tiers[0].width),),
        )
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES (?, ?)", (ROLLED_ROWS, secrets.token_hex(8))
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


_COUNT = "INTEGER NOT NULL DEFAULT 0"
#: The columns each schema lacks, with their types, added by :func:`migrate` (the new tables
#: are created as in a new database). The inventory's: installed on request (1, 0, NULL: not
#: known) and the installed distributions it requires (comma-separated; NULL: not known).
_ADDED_COLUMNS: dict[int, dict[str, tuple[tuple[str, str], ...]]] = {
    1: {
        table: (("program", _COUNT), ("claimed", _COUNT))
        for table in ("usage_by_source", "usage_by_library")
    },
    2: {"inventory": (("requested", "INTEGER"), ("requires", "TEXT"))},
}


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The schema a database holds (None for a database being created)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else None


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring a database of schema 1 or 2 to :data:`SCHEMA_VERSION` (inside the caller's
    transaction): its counts stay, their level codes unchanged; it has no people before
    schema 2, and its stored inventories say why nothing is installed before schema 3.
    Raises ``ValueError`` for a schema this popcon does not know."""
    version = schema_version(conn)
    if version == SCHEMA_VERSION:
        return
    if version is not None and version not in _ADDED_COLUMNS:
        raise ValueError(
            f"schema: the database at {path} has schema {version}; this popcon reads schema "
            f"{SCHEMA_VERSION} (and migrates schemas 1 and 2): use the popcon that wrote it"
        )
    for since, tables in _ADDED_COLUMNS.items():
        if version is None or version > since:
            continue
        for table, columns in tables.items():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns:
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def _whole_seconds(value: object) -> bool:
    return type(value) is int and value > 0


def read_tiers(conn: sqlite3.Connection) -> tuple[Tier, ...]:
    """The tiers a database was created with (finest first); ``sqlite3.DatabaseError`` when
    the stored value is not a list of ``[width, keep]`` pairs of whole seconds, each width a
    multiple of the finer one."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'tiers'").fetchone()
    if row is None:
        return default_tiers()
    try:
        tiers = tuple(Tier(w, k) for w, k in json.loads(row[0]))
    except (ValueError, TypeError, RecursionError):  # not JSON, or not a list of pairs
        tiers = ()
    if not (
        tiers
        and all(_whole_seconds(t.width) and _whole_seconds(t.keep) for t in tiers)
        and all(b.width > a.width and b.width % a.width == 0 for a, b in zip(tiers, tiers[1:]))
    ):
        raise sqlite3.DatabaseError(f"corrupt meta value 'tiers': {str(row[0])[:60]!r}")
    return tiers


def integrity_check(path: Union[str, os.PathLike[str]]) -> str:
    """``PRAGMA integrity_check`` of the database at ``path`` (``"ok"`` when intact)."""
    conn = sqlite3.connect(str(path))
    try:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()

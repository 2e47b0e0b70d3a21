"""The collector's SQLite store: schema, caps, and the one writer thread (API stable; see below).

Design (details and figures in ``docs/collector-storage.md``):

- The receiver aggregates datagrams in memory into a :class:`Batch` (a Counter keyed by
  ``(bucket, UseReport)``, inventory parts, result counts) and hands one to the
  :class:`Writer` about twice a second. The writer thread *expands* batches into pending rows
  keyed by names (applying the caps, so pending memory stays bounded even while the database
  is unavailable) and *flushes* them in one transaction at least once a second.
- Counts are written through to every :class:`Tier` (default: 10-minute buckets kept 2 days,
  1-hour buckets kept 60 days, 1-day buckets kept ``retention``, 400 days): "rolled up as they
  age" without a rollup job that could double count after a crash.
- Totals (per library/env/level, library/version/env, reports per env, datagram results) are
  stored, so Prometheus counters built from them are monotonic across restarts.
- A locked database or a full disk is logged and retried with back-off; the pending rows wait
  in memory. Nothing in the writer thread ends it but :meth:`Writer.stop`.

Public API (kept stable; a change would be announced here):

- :class:`StoreSettings`, :class:`Tier`, :func:`default_tiers`
- :class:`Batch` (what the receiver hands over), :data:`RESULT_REASONS`
- :class:`Writer` (``start()``, ``submit(batch)``, ``flush(timeout)``, ``stop(timeout)``,
  ``settings``, ``bucket_width``)
- :func:`connect_writer`, :func:`read_tiers`, :func:`format_labels`, :func:`parse_labels`,
  :func:`integrity_check`
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from popcon.server.decode import REJECTIONS, InventoryPart
from popcon.server.ingest import (
    Admission,
    InventoryAssembler,
    Limits,
    Pending,
    expand_batch,
)

log = logging.getLogger("popcon.server.store")

SCHEMA_VERSION = 1
DAY = 86400
#: Count columns of the usage tables, in this order: raw record counts per level.
LEVEL_COLUMNS = ("direct", "transitive", "upgrade", "unknown")
_LEVEL_INDEX = {name: i for i, name in enumerate(LEVEL_COLUMNS)}
ORIGIN_CODES = {"env": 0, "user": 1, "unknown": 2}
ORIGIN_NAMES = {code: name for name, code in ORIGIN_CODES.items()}
#: Results the store adds to the decoder's: a datagram dropped (``env_cap``, ``labels_cap``,
#: ``overload``: the writer queue was full) or stored without the libraries over the cap
#: (``library_cap``).
STORE_REJECTIONS = ("env_cap", "labels_cap", "library_cap", "overload")
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
    #: Seconds between two commits while data arrives (at most 1 s, so a SIGKILL loses <= 2 s).
    commit_interval: float = 0.5
    #: Inventories being assembled at once, and how long a missing part is waited for.
    max_pending_inventories: int = 256
    inventory_timeout: float = 3600.0
    #: Batches waiting for the writer before the receiver counts new ones as ``overload``.
    queue_size: int = 128

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
            "max_pending_inventories",
            "queue_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected at least 1")
        if not 0 < self.commit_interval <= 1:
            raise ValueError("commit_interval: expected more than 0 and at most 1 second")


# -- what the receiver hands over --------------------------------------------------------------


@dataclass
class Batch:
    """Datagrams received in a short interval, aggregated.

    ``uses`` counts identical reports per fine bucket: ``{(bucket_start, UseReport): n}``.
    ``inventories``: parts in arrival order. ``results``: datagrams per result (``ok`` or a
    rejection reason) as the decoder judged them; the writer moves ``ok`` ones it drops to
    the cap reasons.
    """

    uses: Counter = field(default_factory=Counter)
    inventories: list[InventoryPart] = field(default_factory=list)
    results: Counter = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.uses or self.inventories or self.results)


def format_labels(labels: Iterable[tuple[str, str]]) -> str:
    """``(("hub", "a"), ("ns", "b"))`` → ``"hub=a,ns=b"`` (sorted; ``""`` for none)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels))


def parse_labels(text: str) -> dict[str, str]:
    """The inverse of :func:`format_labels`, as a dict."""
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
    lib_id INTEGER NOT NULL, origin INTEGER NOT NULL,
    direct INTEGER NOT NULL, transitive INTEGER NOT NULL,
    upgrade INTEGER NOT NULL, unknown INTEGER NOT NULL,
    PRIMARY KEY (tier, source_id, bucket, lib_id, origin)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_by_library (
    tier INTEGER NOT NULL, bucket INTEGER NOT NULL, lib_id INTEGER NOT NULL,
    origin INTEGER NOT NULL,
    direct INTEGER NOT NULL, transitive INTEGER NOT NULL,
    upgrade INTEGER NOT NULL, unknown INTEGER NOT NULL,
    PRIMARY KEY (tier, bucket, lib_id, origin)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    tier INTEGER NOT NULL, lib_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    env_id INTEGER NOT NULL, version TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (tier, lib_id, bucket, env_id, version)) WITHOUT ROWID;
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


def connect_writer(
    path: Union[str, os.PathLike[str]], settings: StoreSettings | None = None
) -> sqlite3.Connection:
    """Open (creating if needed) the database for writing: WAL, schema, tiers checked.

    Raises ``ValueError`` when the database was created with other bucket widths (they cannot
    change afterwards; keeps and caps can), ``sqlite3.Error``/``OSError`` when it cannot be
    opened.
    """
    settings = settings or StoreSettings()
    settings.check()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        tiers = settings.resolved_tiers()
        row = conn.execute("SELECT value FROM meta WHERE key = 'tiers'").fetchone()
        if row is not None:
            stored = [Tier(int(w), int(k)) for w, k in json.loads(row[0])]
            if [t.width for t in stored] != [t.width for t in tiers]:
                raise ValueError(
                    f"bucket widths: the database at {path} was created with tiers "
                    f"{[t.width for t in stored]} s and cannot change to "
                    f"{[t.width for t in tiers]} s; use a new --db"
                )
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('tiers', ?)",
                (json.dumps([[t.width, t.keep] for t in tiers]),),
            )
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
    except BaseException:
        conn.close()
        raise
    return conn


def read_tiers(conn: sqlite3.Connection) -> tuple[Tier, ...]:
    """The tiers a database was created with (finest first)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'tiers'").fetchone()
    if row is None:
        return default_tiers()
    return tuple(Tier(int(w), int(k)) for w, k in json.loads(row[0]))


def integrity_check(path: Union[str, os.PathLike[str]]) -> str:
    """``PRAGMA integrity_check`` of the database at ``path`` (``"ok"`` when intact)."""
    conn = sqlite3.connect(str(path))
    try:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


# -- writing -----------------------------------------------------------------------------------


class _Ids:
    """name → id caches of one writer connection; cleared when a transaction rolls back."""

    def __init__(self) -> None:
        self.envs: dict[str, int] = {}
        self.sources: dict[tuple[str, str], int] = {}
        self.libs: dict[str, int] = {}

    def clear(self) -> None:
        self.envs.clear()
        self.sources.clear()
        self.libs.clear()


def _chunks(items: Sequence, size: int = 500) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lib_ids(conn: sqlite3.Connection, ids: _Ids, names: set[str]) -> None:
    missing = sorted(name for name in names if name not in ids.libs)
    if not missing:
        return
    conn.executemany("INSERT OR IGNORE INTO libs (name) VALUES (?)", [(n,) for n in missing])
    for chunk in _chunks(missing):
        marks = ",".join("?" * len(chunk))
        for lib_id, name in conn.execute(
            f"SELECT id, name FROM libs WHERE name IN ({marks})", chunk
        ):
            ids.libs[name] = lib_id


def _env_ids(conn: sqlite3.Connection, ids: _Ids, pending: Pending) -> None:
    conn.executemany(
        "INSERT INTO envs (name, first_seen, last_seen, py) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET "
        "py = CASE WHEN excluded.py != '' AND excluded.last_seen >= last_seen "
        "THEN excluded.py ELSE py END, "
        "last_seen = max(last_seen, excluded.last_seen)",
        [(env, seen, seen, py) for env, (seen, py) in pending.env_seen.items()],
    )
    missing = [env for env in pending.env_seen if env not in ids.envs]
    for chunk in _chunks(missing):
        marks = ",".join("?" * len(chunk))
        for env_id, name in conn.execute(
            f"SELECT id, name FROM envs WHERE name IN ({marks})", chunk
        ):
            ids.envs[name] = env_id
    rows = [(ids.envs[env], labels, seen) for (env, labels), seen in pending.source_seen.items()]
    conn.executemany(
        "INSERT INTO sources (env_id, labels, last_seen) VALUES (?, ?, ?) "
        "ON CONFLICT (env_id, labels) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        rows,
    )
    for env, labels in pending.source_seen:
        if (env, labels) not in ids.sources:
            row = conn.execute(
                "SELECT id FROM sources WHERE env_id = ? AND labels = ?", (ids.envs[env], labels)
            ).fetchone()
            ids.sources[(env, labels)] = row[0]


def _add_counts(table: dict[tuple, list[int]], key: tuple, counts: Sequence[int]) -> None:
    row = table.get(key)
    if row is None:
        table[key] = list(counts)
    else:
        for i, value in enumerate(counts):
            row[i] += value


_UPSERT_USAGE = (
    "INSERT INTO usage_by_source VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tier, source_id, bucket, lib_id, origin) DO UPDATE SET "
    "direct = direct + excluded.direct, transitive = transitive + excluded.transitive, "
    "upgrade = upgrade + excluded.upgrade, unknown = unknown + excluded.unknown"
)
_UPSERT_LIBRARY = (
    "INSERT INTO usage_by_library VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tier, bucket, lib_id, origin) DO UPDATE SET "
    "direct = direct + excluded.direct, transitive = transitive + excluded.transitive, "
    "upgrade = upgrade + excluded.upgrade, unknown = unknown + excluded.unknown"
)


def _write_tiers(
    conn: sqlite3.Connection, ids: _Ids, pending: Pending, tiers: Sequence[Tier], now: float
) -> None:
    lib_id = ids.libs
    env_id = ids.envs
    source_id = ids.sources
    for index, tier in enumerate(tiers):
        width = tier.width
        oldest = int(now) - tier.keep  # a bucket ending before this is already expired
        by_source: dict[tuple, list[int]] = {}
        by_library: dict[tuple, list[int]] = {}
        for (bucket, env, labels, name, origin), counts in pending.usage.items():
            start = bucket - bucket % width
            if start + width <= oldest:
                continue
            lib = lib_id[name]
            _add_counts(by_source, (index, source_id[(env, labels)], start, lib, origin), counts)
            _add_counts(by_library, (index, start, lib, origin), counts)
        conn.executemany(_UPSERT_USAGE, [(*k, *v) for k, v in by_source.items()])
        conn.executemany(_UPSERT_LIBRARY, [(*k, *v) for k, v in by_library.items()])
        versions: Counter = Counter()
        for (bucket, env, name, version), count in pending.versions.items():
            start = bucket - bucket % width
            if start + width > oldest:
                versions[(index, lib_id[name], start, env_id[env], version)] += count
        conn.executemany(
            "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tier, lib_id, bucket, env_id, version) "
            "DO UPDATE SET count = count + excluded.count",
            [(*k, v) for k, v in versions.items()],
        )
        edges: Counter = Counter()
        for (bucket, env, importer, name), count in pending.edges.items():
            start = bucket - bucket % width
            if start + width > oldest:
                edges[(index, lib_id[name], start, env_id[env], lib_id[importer])] += count
        conn.executemany(
            "INSERT INTO edges VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tier, lib_id, bucket, env_id, importer_id) "
            "DO UPDATE SET count = count + excluded.count",
            [(*k, v) for k, v in edges.items()],
        )
        reports: Counter = Counter()
        for (bucket, env, labels), count in pending.reports.items():
            start = bucket - bucket % width
            if start + width > oldest:
                reports[(index, source_id[(env, labels)], start)] += count
        conn.executemany(
            "INSERT INTO reports VALUES (?, ?, ?, ?) ON CONFLICT (tier, source_id, bucket) "
            "DO UPDATE SET count = count + excluded.count",
            [(*k, v) for k, v in reports.items()],
        )


def _write_totals(conn: sqlite3.Connection, ids: _Ids, pending: Pending) -> None:
    usage: dict[tuple, list[int]] = {}
    for (bucket, env, _labels, name, _origin), counts in pending.usage.items():
        for level, count in enumerate(counts):
            if count:
                key = (ids.envs[env], ids.libs[name], level)
                row = usage.get(key)
                if row is None:
                    usage[key] = [count, bucket]
                else:
                    row[0] += count
                    row[1] = max(row[1], bucket)
    conn.executemany(
        "INSERT INTO total_usage VALUES (?, ?, ?, ?, ?) ON CONFLICT (env_id, lib_id, level) "
        "DO UPDATE SET count = count + excluded.count, "
        "last_seen = max(last_seen, excluded.last_seen)",
        [(*k, *v) for k, v in usage.items()],
    )
    versions: dict[tuple, list[int]] = {}
    for (bucket, env, name, version), count in pending.versions.items():
        key = (ids.envs[env], ids.libs[name], version)
        row = versions.get(key)
        if row is None:
            versions[key] = [count, bucket]
        else:
            row[0] += count
            row[1] = max(row[1], bucket)
    conn.executemany(
        "INSERT INTO total_versions VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (env_id, lib_id, version) "
        "DO UPDATE SET count = count + excluded.count, "
        "last_seen = max(last_seen, excluded.last_seen)",
        [(*k, *v) for k, v in versions.items()],
    )
    reports: dict[int, list[int]] = {}
    for (bucket, env, _labels), count in pending.reports.items():
        row = reports.setdefault(ids.envs[env], [0, bucket])
        row[0] += count
        row[1] = max(row[1], bucket)
    conn.executemany(
        "INSERT INTO total_reports VALUES (?, ?, ?) ON CONFLICT (env_id) "
        "DO UPDATE SET count = count + excluded.count, "
        "last_seen = max(last_seen, excluded.last_seen)",
        [(k, *v) for k, v in reports.items()],
    )
    conn.executemany(
        "INSERT INTO datagram_results VALUES (?, ?) ON CONFLICT (reason) "
        "DO UPDATE SET count = count + excluded.count",
        [(reason, count) for reason, count in pending.results.items() if count],
    )


def _write_inventories(conn: sqlite3.Connection, ids: _Ids, pending: Pending) -> None:
    for env, (inventory_id, bucket, inventory) in pending.inventories.items():
        env_id = ids.envs[env]
        conn.execute("DELETE FROM inventory WHERE env_id = ?", (env_id,))
        conn.executemany(
            "INSERT INTO inventory VALUES (?, ?, ?)",
            [(env_id, name, version) for name, version in inventory.items()],
        )
        conn.execute(
            "UPDATE envs SET inventory_id = ?, inventory_at = ? WHERE id = ?",
            (inventory_id, bucket, env_id),
        )


def flush_pending(
    conn: sqlite3.Connection, ids: _Ids, pending: Pending, tiers: Sequence[Tier], now: float
) -> None:
    """Write ``pending`` in one transaction. On any error it rolls back, clears the id caches
    and re-raises, leaving ``pending`` intact for a retry."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _env_ids(conn, ids, pending)
        names = {key[3] for key in pending.usage}
        names.update(key[2] for key in pending.edges)
        _lib_ids(conn, ids, names)
        _write_tiers(conn, ids, pending, tiers, now)
        _write_totals(conn, ids, pending)
        _write_inventories(conn, ids, pending)
        conn.execute("COMMIT")
    except BaseException:
        ids.clear()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def sweep(conn: sqlite3.Connection, tiers: Sequence[Tier], now: float) -> None:
    """Delete what is older than each tier keeps; then totals, label sets, environments and
    library names not seen within the retention (the keep of the coarsest tier)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        sources = [row[0] for row in conn.execute("SELECT id FROM sources")]
        libs = [row[0] for row in conn.execute("SELECT id FROM libs")]
        cutoff = 0
        for index, tier in enumerate(tiers):
            cutoff = int(now) - tier.keep
            cutoff -= cutoff % tier.width
            by_source = [(index, source, cutoff) for source in sources]
            by_lib = [(index, lib, cutoff) for lib in libs]
            for table in ("usage_by_source", "reports"):
                conn.executemany(
                    f"DELETE FROM {table} WHERE tier = ? AND source_id = ? AND bucket < ?",
                    by_source,
                )
            for table in ("versions", "edges"):
                conn.executemany(
                    f"DELETE FROM {table} WHERE tier = ? AND lib_id = ? AND bucket < ?", by_lib
                )
            conn.execute(
                "DELETE FROM usage_by_library WHERE tier = ? AND bucket < ?", (index, cutoff)
            )
        for table in ("total_usage", "total_versions", "total_reports", "sources"):
            conn.execute(f"DELETE FROM {table} WHERE last_seen < ?", (cutoff,))
        old_envs = [
            (row[0],) for row in conn.execute("SELECT id FROM envs WHERE last_seen < ?", (cutoff,))
        ]
        for table, column in (("inventory", "env_id"), ("sources", "env_id"), ("envs", "id")):
            conn.executemany(f"DELETE FROM {table} WHERE {column} = ?", old_envs)
        conn.execute(
            "DELETE FROM libs WHERE id NOT IN (SELECT lib_id FROM total_usage) "
            "AND id NOT IN (SELECT importer_id FROM edges)"
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def load_admission(conn: sqlite3.Connection) -> Admission:
    """The names already counted, so caps hold across restarts."""
    admission = Admission()
    for (name,) in conn.execute("SELECT name FROM envs"):
        admission.envs.add(name)
        admission.label_sets[name] = set()
        admission.libs_per_env[name] = set()
    for env, labels in conn.execute(
        "SELECT e.name, s.labels FROM sources s JOIN envs e ON e.id = s.env_id"
    ):
        admission.label_sets[env].add(labels)
    for env, lib in conn.execute(
        "SELECT DISTINCT e.name, l.name FROM total_usage t "
        "JOIN envs e ON e.id = t.env_id JOIN libs l ON l.id = t.lib_id "
        "UNION SELECT DISTINCT e.name, l.name FROM edges x "
        "JOIN envs e ON e.id = x.env_id JOIN libs l ON l.id = x.importer_id"
    ):
        admission.libs_per_env[env].add(lib)
    admission.libs.update(row[0] for row in conn.execute("SELECT name FROM libs"))
    return admission


# -- the writer thread -------------------------------------------------------------------------

_STOP = object()
SWEEP_INTERVAL = 3600.0
_LARGE_PENDING = 200_000


class Writer:
    """The one writer: a thread fed by a queue of :class:`Batch` objects.

    ``start()`` opens the database on the calling thread (so a bad path or a database created
    with other bucket widths raises there) and starts the thread. ``submit(batch)`` never
    blocks: it returns False when the queue is full (the receiver then counts the batch's
    datagrams as ``overload``). ``flush(timeout)`` waits until everything submitted before it
    is committed. ``stop(timeout)`` writes what is pending and closes the database.
    ``clock`` gives the time used for tier cut-offs and retention (tests move it).
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        settings: StoreSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.settings = settings or StoreSettings()
        self.settings.check()
        self.tiers = self.settings.resolved_tiers()
        self.bucket_width = self.tiers[0].width
        self.clock = clock
        self.limits = Limits(
            self.settings.max_environments,
            self.settings.max_label_sets_per_env,
            self.settings.max_libraries_per_env,
            self.settings.max_libraries,
        )
        self._queue: queue.Queue[object] = queue.Queue(self.settings.queue_size)
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        #: Commits done, and the last error (None after a success); for health and tests.
        self.commits = 0
        self.last_error: str | None = None

    # public API

    def start(self) -> None:
        self._conn = connect_writer(self.path, self.settings)
        self._admission = load_admission(self._conn)
        self._thread = threading.Thread(target=self._run, name="popcon-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> bool:
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted so far is committed; False on timeout."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + timeout
        self._queue.put(_STOP)
        self._thread.join(timeout + 1.0)
        self._thread = None

    # the thread

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        pending = Pending()
        ids = _Ids()
        assembler = InventoryAssembler(
            self.settings.max_pending_inventories, self.settings.inventory_timeout
        )
        waiters: list[threading.Event] = []
        stopping = False
        last_flush = time.monotonic()
        retry_at = 0.0
        failures = 0
        next_sweep = 0.0
        while True:
            try:
                items = [self._queue.get(timeout=self.settings.commit_interval)]
            except queue.Empty:
                items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            now = self.clock()
            for item in items:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                elif isinstance(item, Batch):
                    try:
                        expand_batch(
                            pending,
                            self._admission,
                            self.limits,
                            assembler,
                            item.uses,
                            item.inventories,
                            item.results,
                            self.bucket_width,
                            now,
                        )
                    except Exception:  # a bug must not end the writer
                        log.exception("could not count a batch; it is dropped")
            tick = time.monotonic()
            due = tick - last_flush >= self.settings.commit_interval
            if (
                pending
                and tick >= retry_at
                and (due or stopping or waiters or pending.size() > _LARGE_PENDING)
            ):
                try:
                    flush_pending(conn, ids, pending, self.tiers, now)
                except Exception as error:  # locked, full disk, I/O error: retry later
                    failures += 1
                    retry_at = tick + min(30.0, 0.25 * 2**failures)
                    self._report(error, failures)
                else:
                    pending = Pending()
                    last_flush = tick
                    failures = 0
                    self.commits += 1
                    self.last_error = None
            if not pending:
                for event in waiters:
                    event.set()
                waiters.clear()
                if tick >= next_sweep and not stopping:
                    next_sweep = tick + SWEEP_INTERVAL
                    try:
                        sweep(conn, self.tiers, now)
                        self._admission = load_admission(conn)
                    except Exception as error:
                        next_sweep = tick + 60.0
                        self._report(error, 1, what="sweep old buckets")
            if stopping and (not pending or time.monotonic() >= self._stop_deadline):
                if pending:
                    log.error(
                        "stopped with %d rows not written (last error: %s)",
                        pending.size(),
                        self.last_error,
                    )
                break
            if stopping and pending:
                time.sleep(min(0.2, max(0.0, retry_at - time.monotonic())))
        conn.close()

    def _report(self, error: Exception, failures: int, what: str = "write to") -> None:
        message = f"{type(error).__name__}: {error}"
        if message != self.last_error or failures in (1, 10, 100) or failures % 1000 == 0:
            log.warning(
                "could not %s %s (%s); retrying, nothing is lost while memory lasts",
                what,
                self.path,
                message,
            )
        self.last_error = message

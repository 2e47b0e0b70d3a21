"""The collector's SQLite store: schema, caps, and the one writer thread (API stable; see below).

Design (details and figures in ``docs/collector-storage.md``):

- The receiving thread aggregates datagrams in memory and counts them into pending rows
  keyed by ids it assigns itself (``popcon.server.receive.ingest``: caps applied there, so pending
  memory stays bounded even while the database is unavailable). At most every
  ``commit_interval`` (1 s) it hands the :class:`Writer` those rows as one job, which the
  writer thread commits in one transaction, into the finest tier only.
- When a bucket of the finest tier has closed, it is *rolled up* in SQL into every coarser
  :class:`Tier` (default: 10-minute buckets kept 2 days, 1-hour buckets kept 60 days, 1-day
  buckets kept ``retention``, 400 days) and into the totals, atomically with the
  ``rolled_until`` mark (``popcon.server.storage.persist``); readers add the buckets not rolled up
  yet. A sweep deletes what each tier no longer keeps.
- Totals (per library/env/level, library/version/env, reports per env, datagram results) are
  stored, so Prometheus counters built from them are monotonic across restarts.
- A locked database or a full disk is logged and retried with back-off; the pending rows wait
  in memory. Nothing in the writer thread ends it but :meth:`Writer.stop`.

Public API (kept stable; a change would be announced here):

- :class:`StoreSettings`, :class:`Tier`, :func:`default_tiers`
- :data:`RESULT_REASONS`, :data:`DAY`, :class:`Batch` (for tools and tests)
- :class:`Writer` (``start()``, ``submit(batch)``, ``flush(timeout)``, ``stop(timeout)``,
  ``settings``, ``bucket_width``; ``make_ingestor()`` and ``submit(job)`` for the receiver)
- :func:`connect_writer`, :func:`read_tiers`, :func:`format_labels`, :func:`parse_labels`,
  :func:`integrity_check`

Changed since the first version: ``StoreSettings`` gained ``rollup_grace`` and
``busy_timeout`` (``commit_interval`` now defaults to 1 s, ``queue_size`` counts jobs); the
receiver no longer hands batches to the writer (it hands jobs), but ``submit(Batch)`` works as
before for tools and tests that run no receiver.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from popcon.protocol.decode import REJECTIONS, InventoryPart
from popcon.server.receive.ingest import (
    ORIGIN_CODES,
    Catalog,
    Ingestor,
    Limits,
    Pending,
    merge_pending,
)
from popcon.server.storage.persist import (
    TEMP_TABLES,
    has_json,
    load_catalog,
    read_rolled_until,
    roll_up,
    sweep,
    write_job,
)

log = logging.getLogger("popcon.server.storage.store")

SCHEMA_VERSION = 1
DAY = 86400
#: Count columns of the usage tables, in this order: raw record counts per level.
LEVEL_COLUMNS = ("direct", "transitive", "upgrade", "unknown")
_LEVEL_INDEX = {name: i for i, name in enumerate(LEVEL_COLUMNS)}
ORIGIN_NAMES = {code: name for name, code in ORIGIN_CODES.items()}
#: Results the store adds to the decoder's: a datagram dropped (``env_cap``, ``labels_cap``,
#: ``overload``: more inventory parts in half a second than the receiver keeps) or stored
#: without the libraries over the cap
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
            "max_pending_inventories",
            "queue_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected at least 1")
        if self.busy_timeout < 0:
            raise ValueError("busy_timeout: expected 0 or more seconds")
        if not 0 < self.commit_interval <= 1:
            raise ValueError("commit_interval: expected more than 0 and at most 1 second")


# -- batches from tools and tests ---------------------------------------------------------------


@dataclass
class Batch:
    """Datagrams decoded elsewhere, aggregated, for :meth:`Writer.submit` (tools and tests that
    run no receiver; the receiver hands jobs instead).

    ``uses`` counts identical reports per finest bucket: ``{(bucket_start, UseReport): n}``;
    ``inventories``: parts in arrival order; ``results``: datagrams per result (``ok`` or a
    rejection reason).
    """

    uses: Counter = field(default_factory=Counter)
    inventories: list[InventoryPart] = field(default_factory=list)
    results: Counter = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.uses or self.inventories or self.results)


# -- labels ------------------------------------------------------------------------------------


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
    lib_id INTEGER NOT NULL, origin INTEGER NOT NULL, version TEXT NOT NULL,
    direct INTEGER NOT NULL, transitive INTEGER NOT NULL,
    upgrade INTEGER NOT NULL, unknown INTEGER NOT NULL,
    PRIMARY KEY (tier, source_id, bucket, lib_id, origin, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_by_library (
    tier INTEGER NOT NULL, bucket INTEGER NOT NULL, lib_id INTEGER NOT NULL,
    origin INTEGER NOT NULL,
    direct INTEGER NOT NULL, transitive INTEGER NOT NULL,
    upgrade INTEGER NOT NULL, unknown INTEGER NOT NULL,
    PRIMARY KEY (tier, lib_id, bucket, origin)) WITHOUT ROWID;
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
    path: Union[str, os.PathLike[str]],
    settings: StoreSettings | None = None,
    *,
    now: float | None = None,
) -> sqlite3.Connection:
    """Open (creating if needed) the database for writing: WAL, schema, tiers checked.

    Raises ``ValueError`` when the database was created with other bucket widths (they cannot
    change afterwards; keeps and caps can), ``sqlite3.Error``/``OSError`` when it cannot be
    opened. ``now`` starts ``rolled_until`` of a new database (default: the current time).
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
            stored = [Tier(int(w), int(k)) for w, k in json.loads(row[0])]
            if [t.width for t in stored] != [t.width for t in tiers]:
                raise ValueError(
                    f"bucket widths: the database at {path} was created with tiers "
                    f"{[t.width for t in stored]} s and cannot change to "
                    f"{[t.width for t in tiers]} s; use a new --db"
                )
        start = time.time() if now is None else now
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('tiers', ?)",
            (json.dumps([[t.width, t.keep] for t in tiers]),),
        )
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('rolled_until', ?)",
            (str(int(start) - int(start) % tiers[0].width),),
        )
        conn.execute("COMMIT")
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


# -- the writer thread -------------------------------------------------------------------------

_STOP = object()
SWEEP_INTERVAL = 3600.0


@dataclass
class FlushMarker:
    """Put in the writer's queue by :meth:`Writer.flush`; ``ok`` tells whether every job
    before it was committed."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class Writer:
    """The one writer: a thread that writes the jobs (:class:`~popcon.server.receive.ingest.Pending`)
    the receiving thread hands it, rolls closed buckets up and sweeps old ones. It only runs
    SQL; each job is a few statements fed by JSON, so the GIL is free while SQLite works.

    ``start()`` opens the database on the calling thread (so a bad path or a database created
    with other bucket widths raises there), forgets names unused for the retention, loads the
    :attr:`catalog` for the receiving side and starts the thread. ``submit(job)`` never blocks
    (False when the queue is full: the caller keeps the job and merges more into it). A job
    that fails (locked database, full disk) is logged and put in :attr:`returned` for the
    receiving side to merge into its next job; the writer then waits (back-off) before the
    next attempt. ``flush(timeout)`` waits until the jobs submitted before it were handled.
    ``stop(timeout)`` writes what is queued or returned and closes. ``clock`` gives the time
    used for roll-ups and retention (tests move it).
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
        self.catalog = Catalog()
        self.returned: deque[Pending] = deque()
        self._queue: queue.Queue[object] = queue.Queue(self.settings.queue_size)
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._stop_deadline = 0.0
        self._use_json = True
        self._batch_ingestor: Ingestor | None = None
        #: Jobs committed, and the last error (None after a success); for health and tests.
        self.commits = 0
        self.last_error: str | None = None

    # public API

    def start(self) -> None:
        conn = connect_writer(self.path, self.settings, now=self.clock())
        try:
            self._use_json = has_json(conn)
            rolled_until = read_rolled_until(conn) or 0
            closed = self._closed_until()
            if closed > rolled_until:  # buckets that closed while the collector was down
                roll_up(conn, self.tiers, rolled_until, closed)
            sweep(conn, self.tiers, self.clock(), forget_names=True)
            self.catalog = load_catalog(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="popcon-writer", daemon=True)
        self._thread.start()

    def make_ingestor(self) -> Ingestor:
        """The receiving side's state, with this writer's catalog, caps and bucket width."""
        return Ingestor(
            self.catalog,
            self.limits,
            self.bucket_width,
            max_pending_inventories=self.settings.max_pending_inventories,
            inventory_timeout=self.settings.inventory_timeout,
        )

    def can_submit(self) -> bool:
        return not self._queue.full()

    def submit(self, job: Pending | Batch, timeout: float | None = None) -> bool:
        """Queue a job; without ``timeout`` never blocks. False when the queue stayed full.

        A :class:`Batch` is counted into a job on the calling thread first (with the writer's
        catalog: only while no receiver runs on this writer).
        """
        if isinstance(job, Batch):
            if self._batch_ingestor is None:
                self._batch_ingestor = self.make_ingestor()
            self._batch_ingestor.add(job.uses, job.inventories, job.results, self.clock())
            taken = self._batch_ingestor.take_job()
            if taken is None:
                return True
            job = taken
        try:
            if timeout is None:
                self._queue.put_nowait(job)
            else:
                self._queue.put(job, timeout=timeout)
        except queue.Full:
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the jobs submitted so far were handled; True if all were committed."""
        marker = FlushMarker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout) and marker.ok

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + timeout
        self._queue.put(_STOP)
        self._thread.join(timeout + 1.0)
        self._thread = None

    # the thread

    def _write(self, job: Pending, rolled_until: int) -> bool:
        assert self._conn is not None
        try:
            write_job(self._conn, job, self.tiers, rolled_until, use_json=self._use_json)
        except Exception as error:  # locked, full disk, I/O error: retried later
            self._failures += 1
            self._retry_at = time.monotonic() + min(30.0, 0.25 * 2**self._failures)
            self._report(error, self._failures)
            return False
        self._failures = 0
        self.commits += 1
        self.last_error = None
        return True

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        self._failures = 0
        self._retry_at = 0.0
        failed_since_marker = False
        stopping = False
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        rolled_until = read_rolled_until(conn) or 0
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                item = None
            if item is _STOP:
                stopping = True
            elif isinstance(item, FlushMarker):
                item.ok = not failed_since_marker and not self.returned
                failed_since_marker = False
                item.done.set()
            elif isinstance(item, Pending) and (
                # During a back-off a job goes straight back, to be merged into the next one.
                time.monotonic() < self._retry_at or not self._write(item, rolled_until)
            ):
                self.returned.append(item)
                failed_since_marker = True
            now = self.clock()
            tick = time.monotonic()
            if tick < self._retry_at or self.returned:
                pass
            elif self._closed_until() > rolled_until:
                closed = self._closed_until()
                try:
                    roll_up(conn, self.tiers, rolled_until, closed)
                except Exception as error:
                    self._failures += 1
                    self._retry_at = tick + min(30.0, 0.25 * 2**self._failures)
                    self._report(error, self._failures, what="roll up buckets in")
                else:
                    rolled_until = closed
            elif tick >= next_sweep and item is None:
                next_sweep = tick + SWEEP_INTERVAL
                try:
                    sweep(conn, self.tiers, now)
                except Exception as error:
                    next_sweep = tick + 60.0
                    self._report(error, 1, what="sweep old buckets from")
            if stopping and self._queue.empty():
                self._finish(rolled_until)
                break
        conn.close()

    def _closed_until(self) -> int:
        """The end of the last finest bucket that closed ``rollup_grace`` seconds ago."""
        closed = int(self.clock() - self.settings.rollup_grace)
        return closed - closed % self.bucket_width

    def _finish(self, rolled_until: int) -> None:
        """At stop: write what came back (nobody else will), until the stop deadline."""
        job = Pending()
        while self.returned:
            merge_pending(job, self.returned.popleft())
        while job:
            if self._write(job, rolled_until):
                return
            if time.monotonic() >= self._stop_deadline:
                log.error(
                    "stopped with %d rows not written to %s (last error: %s)",
                    job.size(),
                    self.path,
                    self.last_error,
                )
                return
            time.sleep(max(0.05, min(1.0, self._retry_at - time.monotonic())))

    def _report(self, error: Exception, failures: int, what: str = "write to") -> None:
        message = f"{type(error).__name__}: {error}"
        if message != self.last_error or failures in (1, 10, 100) or failures % 1000 == 0:
            log.warning(
                "could not %s %s (%s); will retry, nothing is lost while memory lasts",
                what,
                self.path,
                message,
            )
        self.last_error = message

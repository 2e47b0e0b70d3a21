"""The one writer: a thread that commits the receiver's aggregated rows into SQLite.

Design (details and figures in ``docs/collector-storage.md``):

- The receiving thread aggregates datagrams in memory and counts them into pending rows
  keyed by ids it assigns itself (``popcon.server.receive.ingest``: caps applied there, so
  pending memory stays bounded even while the database is unavailable). At most every
  ``commit_interval`` (1 s) it hands the :class:`Writer` those rows as one job, which the
  writer thread commits in one transaction, into the finest tier only.
- When a bucket of the finest tier has closed, it is *rolled up* in SQL into every coarser
  :class:`~popcon.server.storage.schema.Tier` (default: 10-minute buckets kept 2 days, 1-hour
  buckets kept 60 days, 1-day buckets kept ``retention``, 400 days) and into the totals,
  atomically with the ``rolled_until`` mark (``popcon.server.storage.persist``); readers add
  the buckets not rolled up yet. A sweep deletes what each tier no longer keeps.
- Totals (per library/env/level, library/version/env, reports per env, datagram results) are
  stored, so Prometheus counters built from them are monotonic across restarts.
- A locked database or a full disk is logged and retried with back-off; the pending rows wait
  in memory. Nothing in the writer thread ends it but :meth:`Writer.stop`.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from popcon.protocol.decode import InventoryPart
from popcon.server.receive.ingest import Catalog, Ingestor, Limits, Pending, merge_pending
from popcon.server.storage.persist import (
    has_json,
    load_catalog,
    read_rolled_until,
    roll_up,
    sweep,
    write_job,
)
from popcon.server.storage.schema import StoreSettings, connect_writer

log = logging.getLogger("popcon.server.storage.writer")

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

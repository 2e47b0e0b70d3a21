"""The one writer: a thread that commits the receiving side's jobs into SQLite.

Design (details and figures in ``docs/collector-storage.md``):

- The receiving side counts datagrams into pending rows keyed by ids it assigns itself, in
  the :class:`~popcon.server.storage.rows.Catalog` the writer loaded at start (caps applied
  there, so pending memory stays bounded even while the database is unavailable). At most
  every ``commit_interval`` (1 s) it hands the :class:`Writer` those rows as one job
  (:class:`~popcon.server.storage.rows.Pending`), which the writer thread commits in one
  transaction, into the finest tier only.
- When a bucket of the finest tier has closed, it is *rolled up* in SQL into every coarser
  :class:`~popcon.server.storage.schema.Tier` (default: 10-minute buckets kept 2 days, 1-hour
  buckets kept 60 days, 1-day buckets kept ``retention``, 400 days) and into the totals,
  atomically with the ``rolled_until`` mark (``popcon.server.storage.persist``); readers add
  the buckets not rolled up yet. A sweep deletes what each tier no longer keeps.
- Totals (per library/env/level, library/version/env, reports per env, datagram results) are
  stored, so Prometheus counters built from them are monotonic across restarts.
- A locked database or a full disk is logged and retried with back-off; the job comes back
  (:meth:`Writer.take_returned`) to be merged into the next one. Nothing in the writer thread
  ends it but :meth:`Writer.stop`, which says how many rows it could not write.
- One writer per database: a :class:`~popcon.server.storage.lock.WriterLock` (``flock`` on
  ``<database>.lock``, holding the pid) is taken before the database is opened and dies with
  the process that holds it.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from popcon.server.storage.lock import WriterLock
from popcon.server.storage.persist import (
    LiveSketches,
    has_json,
    load_catalog,
    read_rolled_until,
    roll_up,
    sweep,
    write_job,
)
from popcon.server.storage.rows import Catalog, Pending, merge_pending
from popcon.server.storage.schema import StoreSettings, connect_writer

log = logging.getLogger("popcon.server.storage.writer")

SWEEP_INTERVAL = 3600.0
_STOP = object()


@dataclass
class FlushMarker:
    """Put in the writer's queue by :meth:`Writer.flush`; ``ok`` tells whether every job
    before it was committed."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


def closed_until(now: float, settings: StoreSettings) -> int:
    """The end of the last finest bucket that closed ``rollup_grace`` seconds before ``now``."""
    closed = int(now - settings.rollup_grace)
    return closed - closed % settings.bucket_width


def job_rows(job: Pending) -> int:
    """The rows a job writes: usage, edges and reports, inventory entries, the environments
    and sources it marks seen, the results it counts."""
    inventory = sum(len(versions) for _id, _at, versions in job.inventories.values())
    seen = len(job.env_seen) + len(job.source_seen)
    return job.size() + inventory + seen + sum(1 for count in job.results.values() if count)


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: 0.5 s doubling up to 30 s."""
    return min(30.0, 0.25 * 2.0**failures)


def open_store(
    path: Union[str, os.PathLike[str]], settings: StoreSettings, now: float
) -> tuple[sqlite3.Connection, Catalog]:
    """Open the database for writing (raises as
    :func:`~popcon.server.storage.schema.connect_writer`), roll up the buckets that closed
    while no collector ran, forget what the retention no longer keeps (names too: no receiving
    side holds ids yet) and load the catalog of ids. The caller holds the
    :class:`~popcon.server.storage.lock.WriterLock`."""
    conn = connect_writer(path, settings, now=now)
    try:
        tiers = settings.resolved_tiers()
        rolled_until = read_rolled_until(conn) or 0
        closed = closed_until(now, settings)
        if closed > rolled_until:
            roll_up(conn, tiers, rolled_until, closed)
        sweep(conn, tiers, now, forget_names=True)
        catalog = load_catalog(conn)
    except BaseException:
        conn.close()
        raise
    return conn, catalog


class Writer:
    """The one writer: a thread that writes the jobs the receiving side hands it, rolls
    closed buckets up and sweeps old ones. It runs SQL, each job a few statements fed by JSON,
    so the GIL is free while SQLite works; only the people's sketches a job adds to are merged
    in Python, into the writer's copy of the live buckets' sketches
    (:class:`~popcon.server.storage.persist.LiveSketches`: read once, written back when
    raised). Calls go one way, from the receiving side:

    - ``start()`` takes the database's :class:`~popcon.server.storage.lock.WriterLock`
      (raises :class:`~popcon.server.storage.lock.DatabaseInUse` when another writer holds
      it) and opens the database on the calling thread (so a bad path or a database created
      with other bucket widths raises there, see :func:`open_store`), then starts the thread.
      The :attr:`catalog` it loaded is for the receiving side. The lock is held until the
      thread ends.
    - ``submit(job)`` never blocks (False when the queue is full: the caller keeps the job and
      merges more into it); with ``timeout``, waits that long for room.
    - A job that fails (locked database, full disk) is logged and kept until
      ``take_returned()``, for the receiving side to merge into its next job; the writer then
      waits (back-off) before the next attempt.
    - ``flush(timeout)`` waits until the jobs submitted before it were handled; ``stop()``
      writes what is queued or returned, closes, and returns how many rows it could not
      write (0 when everything was written).

    ``clock`` gives the time used for roll-ups and retention (tests move it);
    :attr:`last_error` is the last failure's message, None after a success.
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
        self.bucket_width = self.settings.bucket_width
        self.clock = clock
        self.last_error: str | None = None
        self._catalog: Catalog | None = None
        self._returned: deque[Pending] = deque()
        self._queue: queue.Queue[object] = queue.Queue(self.settings.queue_size)
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._use_json = True
        self._live = LiveSketches()
        self._stop_deadline = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._lock = WriterLock(self.path)
        #: The job last written, until it is written: at the end, the one not written.
        self._in_hand: Pending | None = None

    @property
    def catalog(self) -> Catalog:
        """The ids in the database, loaded by :meth:`start` (a new one at each start) for the
        one receiving side, which assigns ids in it from then on; the writer never reads it
        again."""
        if self._catalog is None:
            raise RuntimeError("the writer is not started")
        return self._catalog

    def start(self) -> None:
        self._lock.acquire()
        try:
            conn, self._catalog = open_store(self.path, self.settings, self.clock())
        except BaseException:
            self._lock.release()
            raise
        self._use_json = has_json(conn)
        self._live = LiveSketches()
        self._conn = conn
        self._in_hand = None
        self._thread = threading.Thread(target=self._run, name="popcon-writer", daemon=True)
        self._thread.start()

    def can_submit(self) -> bool:
        return not self._queue.full()

    def submit(self, job: Pending, timeout: float | None = None) -> bool:
        """Queue a job; without ``timeout`` never blocks. False when the queue stayed full."""
        try:
            if timeout is None:
                self._queue.put_nowait(job)
            else:
                self._queue.put(job, timeout=timeout)
        except queue.Full:
            return False
        return True

    def take_returned(self) -> Pending | None:
        """The jobs that came back unwritten since the last call, merged into one; None when
        none did. Safe to call from the receiving thread while the writer runs."""
        job = None
        while self._returned:
            returned = self._returned.popleft()
            if job is not None:
                merge_pending(returned, job)
            job = returned
        return job

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the jobs submitted so far were handled; True if all were committed."""
        marker = FlushMarker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout) and marker.ok

    def stop(self, timeout: float = 10.0) -> int:
        """Write what is queued or came back, trying for ``timeout`` seconds, and close.
        Returns the rows not written (0: everything handed to the writer is in the database)."""
        if self._thread is None:
            return 0
        self._stop_deadline = time.monotonic() + timeout
        self._queue.put(_STOP)
        # A last attempt may start just before the deadline and wait busy_timeout for a lock.
        self._thread.join(timeout + self.settings.busy_timeout + 1.0)
        thread, self._thread = self._thread, None
        if not thread.is_alive():
            return job_rows(self._in_hand) if self._in_hand else 0
        unwritten = self._rows_held()
        log.error(
            "the writer did not stop in %.0f s: %d rows not written to %s",
            timeout,
            unwritten,
            self.path,
        )
        return unwritten

    def _rows_held(self) -> int:
        """The rows of the jobs the writer holds (in hand, queued, returned; at most)."""
        held = 0
        for item in [self._in_hand, *list(self._queue.queue), *list(self._returned)]:
            if isinstance(item, Pending):
                held += job_rows(item)
        return held

    # the thread

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
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
                item.ok = not failed_since_marker and not self._returned
                failed_since_marker = False
                item.done.set()
            elif isinstance(item, Pending) and (
                # During a back-off a job goes straight back, to be merged into the next one.
                time.monotonic() < self._retry_at or not self._write(item, rolled_until)
            ):
                self._returned.append(item)
                failed_since_marker = True
            tick = time.monotonic()
            closed = closed_until(self.clock(), self.settings)
            if tick < self._retry_at or self._returned:
                pass
            elif closed > rolled_until:
                try:
                    roll_up(conn, self.tiers, rolled_until, closed)
                except Exception as error:
                    self._failed(error, "roll up buckets in")
                else:
                    rolled_until = closed
                    self._live.forget_before(closed)
            elif tick >= next_sweep and item is None:
                next_sweep = tick + SWEEP_INTERVAL
                try:
                    sweep(conn, self.tiers, self.clock())
                except Exception as error:
                    next_sweep = tick + 60.0
                    self._report(error, 1, "sweep old buckets from")
            if stopping and self._queue.empty():
                self._finish(rolled_until)
                break
        try:
            conn.close()
        finally:
            self._lock.release()

    def _write(self, job: Pending, rolled_until: int) -> bool:
        assert self._conn is not None
        self._in_hand = job
        try:
            write_job(
                self._conn,
                job,
                self.tiers,
                rolled_until,
                use_json=self._use_json,
                live=self._live,
            )
        except Exception as error:  # locked, full disk, I/O error: retried later
            self._failed(error, "write to")
            return False
        self._in_hand = None
        self._failures = 0
        self.last_error = None
        return True

    def _finish(self, rolled_until: int) -> None:
        """At stop: write what came back (nobody else will), until the stop deadline; what is
        not written then stays in hand."""
        job = self._in_hand = self.take_returned()
        while job:
            if self._write(job, rolled_until):
                return
            if time.monotonic() >= self._stop_deadline:
                log.error(
                    "stopped with %d rows not written to %s (last error: %s)",
                    job_rows(job),
                    self.path,
                    self.last_error,
                )
                return
            time.sleep(max(0.05, min(1.0, self._retry_at - time.monotonic())))

    def _failed(self, error: Exception, what: str) -> None:
        """A write or roll-up failed: back off before the next attempt."""
        self._failures += 1
        self._retry_at = time.monotonic() + retry_delay(self._failures)
        self._report(error, self._failures, what)

    def _report(self, error: Exception, failures: int, what: str) -> None:
        message = f"{type(error).__name__}: {error}"
        if message != self.last_error or failures in (1, 10, 100) or failures % 1000 == 0:
            log.warning(
                "could not %s %s (%s); will retry, nothing is lost while memory lasts",
                what,
                self.path,
                message,
            )
        self.last_error = message

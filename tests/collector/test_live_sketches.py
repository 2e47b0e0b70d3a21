"""The writer's copy of the live sketches (``persist.LiveSketches``): a job reads from the
database only the tier-0 sketches the copy lacks and writes back only those it raised, and the
rows stored are the ones a writer without the copy stores, through failed transactions,
roll-ups, late people and a full copy. Real SQLite files, jobs counted by the receiving side's
code from decoded ``popcon/2`` datagrams."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from datagrams import PANDAS_PROCESS, use_datagram_2
from timing import T0

from popcon.protocol.decode import make_decoder
from popcon.server.receive.ingest import Ingestor, job_of
from popcon.server.storage import persist
from popcon.server.storage.persist import LiveSketches, load_catalog, roll_up, write_job
from popcon.server.storage.rows import Pending
from popcon.server.storage.schema import StoreSettings, connect_writer, default_tiers
from popcon.server.storage.sketch import Registers

ENV = "img"
TIERS = default_tiers()
decode = make_decoder()


def _people(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


class Store:
    """A database written by :func:`write_job`, with or without a live copy, that counts the
    tier-0 sketch rows each job writes (a temporary trigger on its own connection) and the
    statements that read sketches (SQLite's trace of what the connection runs)."""

    def __init__(self, path: Path, live: LiveSketches | None) -> None:
        self.conn = connect_writer(path, now=T0)
        self.ingestor = Ingestor(load_catalog(self.conn), StoreSettings())
        self.live = live
        self.conn.execute("CREATE TEMP TABLE sketch_writes (bucket INTEGER)")
        self.conn.execute(
            "CREATE TEMP TRIGGER count_sketch_writes AFTER INSERT ON main.sketches_by_source "
            "WHEN new.tier = 0 BEGIN INSERT INTO sketch_writes VALUES (new.bucket); END"
        )
        self.sketch_reads = 0
        self.conn.set_trace_callback(self._trace)

    def _trace(self, statement: str) -> None:
        if statement.startswith("SELECT") and "registers FROM" in statement:
            self.sketch_reads += 1

    def job(self, moment: float, people: Iterable[bytes]) -> Pending:
        decoded = [(moment, decode(use_datagram_2(ENV, PANDAS_PROCESS, p))) for p in people]
        job = job_of(self.ingestor, decoded)
        assert job is not None
        return job

    def write(self, job: Pending, rolled_until: int = 0) -> tuple[int, int]:
        """Write ``job``; the statements that read sketches and the tier-0 sketch rows it
        wrote."""
        (before,) = self.conn.execute("SELECT COUNT(*) FROM sketch_writes").fetchone()
        self.sketch_reads = 0
        write_job(self.conn, job, TIERS, rolled_until, live=self.live)
        reads = self.sketch_reads
        (after,) = self.conn.execute("SELECT COUNT(*) FROM sketch_writes").fetchone()
        return reads, int(after - before)

    def sketches(self) -> list[tuple[Any, ...]]:
        return sorted(self.conn.execute("SELECT * FROM sketches_by_source").fetchall())

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def stores(tmp_path: Path) -> Any:
    """A store with a live copy and one without, written the same way."""
    made = [Store(tmp_path / "live.sqlite", LiveSketches()), Store(tmp_path / "plain.sqlite", None)]
    yield made
    for store in made:
        store.close()


def _write_both(stores: list[Store], moment: float, people: list[bytes], rolled_until: int = 0):
    return [store.write(store.job(moment, people), rolled_until) for store in stores]


def test_a_job_reads_no_sketch_the_copy_holds_and_writes_only_those_it_raised(stores) -> None:
    kept, plain = stores
    first, more = _people(2, seed=1), _people(1, seed=2)
    # pandas, numpy and python-dateutil: three sketches read (in one statement) and written.
    assert _write_both(stores, T0 + 60, first) == [(1, 3), (1, 3)]
    # The same people again: nothing rose, nothing is written; with the copy, nothing is read.
    assert _write_both(stores, T0 + 120, first) == [(0, 0), (1, 0)]
    assert _write_both(stores, T0 + 180, more) == [(0, 3), (1, 3)]
    assert kept.sketches() == plain.sketches()
    assert len(kept.live.by_key) == 3


def test_a_failed_job_empties_the_live_copy(stores) -> None:
    """A transaction that fails after its sketches were merged must leave neither the database
    nor the copy with its people: the next job merges into what was committed."""
    kept, plain = stores
    people = _people(3, seed=3)
    _write_both(stores, T0 + 60, people[:1])

    def deny_results(action: int, table: str | None, *_: Any) -> int:
        refused = action == sqlite3.SQLITE_INSERT and table == "datagram_results"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    failing = kept.job(T0 + 120, people[1:2])
    kept.conn.set_authorizer(deny_results)
    with pytest.raises(sqlite3.DatabaseError):
        kept.write(failing)
    kept.conn.set_authorizer(None)
    assert not kept.live.by_key and kept.live.held == 0
    plain.job(T0 + 120, people[1:2])  # counted the same, never written

    _write_both(stores, T0 + 180, people[2:])
    assert kept.sketches() == plain.sketches()


def test_rolled_up_buckets_leave_the_copy_and_late_people_are_merged_not_held(stores) -> None:
    kept, plain = stores
    people = _people(4, seed=4)
    _write_both(stores, T0 + 60, people[:2])
    _write_both(stores, T0 + 660, people[:1])  # the next bucket
    for store in stores:
        roll_up(store.conn, TIERS, T0, T0 + 600)
    assert {key[1] for key in kept.live.by_key} == {T0, T0 + 600}
    kept.live.forget_before(T0 + 600)
    assert {key[1] for key in kept.live.by_key} == {T0 + 600}
    assert kept.live.held == sum(sketch.size() for sketch in kept.live.by_key.values())
    # Late people for the rolled-up bucket: merged into its rows, not held.
    _write_both(stores, T0 + 120, people[2:], rolled_until=T0 + 600)
    assert {key[1] for key in kept.live.by_key} == {T0 + 600}
    _write_both(stores, T0 + 700, people[1:], rolled_until=T0 + 600)
    assert kept.sketches() == plain.sketches()
    assert (
        kept.conn.execute("SELECT * FROM sketches_by_library").fetchall()
        == plain.conn.execute("SELECT * FROM sketches_by_library").fetchall()
    )


def test_the_copy_stays_within_its_bound_and_the_sketches_stay_right(
    stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bound of a few sketches' worth: the copy drops the ones held longest, and a sketch
    dropped is read again when a job adds to it."""
    kept, plain = stores
    seven = Registers()
    for register in range(7):
        seven.add(register, 1)
    bound = 5 * seven.size()  # five sketches of seven people; each job adds to three
    monkeypatch.setattr(persist, "MAX_LIVE_SKETCH_BYTES", bound)
    people = _people(60, seed=5)
    reads_again = 0
    for step in range(12):
        moment = T0 + 60 + 600 * (step % 3) + step  # three buckets, in turn
        (reads, _writes), _plain = _write_both(
            stores, moment, people[5 * step : 5 * step + 5] + people[:2]
        )
        if step >= 3:  # a bucket written before: read only if its sketches were dropped
            reads_again += reads
        assert kept.live.held <= bound
        assert kept.live.held == sum(sketch.size() for sketch in kept.live.by_key.values())
    assert reads_again
    assert kept.sketches() == plain.sketches()

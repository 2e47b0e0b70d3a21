"""One writer per database (a second writer or collector refuses to start, a SIGKILLed holder
leaves no stale lock, readers are never blocked) and an honest stop (rows that could not be
written are counted, not hidden)."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from collectors import ingest, send_udp, start_collector_process
from datagrams import PANDAS_PROCESS, use_datagram

from popcon.server.query.connection import connect_readonly
from popcon.server.query.totals import report_totals
from popcon.server.receive.receiver import Collector
from popcon.server.storage.lock import DatabaseInUse, WriterLock
from popcon.server.storage.schema import StoreSettings
from popcon.server.storage.writer import Writer


def _processes(db: Path) -> int:
    conn = connect_readonly(db)
    try:
        return sum(row.processes for row in report_totals(conn))
    finally:
        conn.close()


def test_a_second_writer_on_a_database_refuses_naming_it_and_the_holder(store_writer) -> None:
    first = store_writer()
    with pytest.raises(DatabaseInUse) as refused:
        Writer(first.path).start()
    message = f"in use by another collector (pid {os.getpid()}); one writer per database"
    assert str(refused.value) == f"{first.path}: {message}"
    assert refused.value.strerror == message
    assert refused.value.filename == str(first.path)
    assert refused.value.pid == os.getpid()
    assert (first.path.parent / "popcon.sqlite.lock").read_text() == f"{os.getpid()}\n"
    # The first goes on writing, readers read beside it.
    ingest(first, [(first.clock(), use_datagram("img", PANDAS_PROCESS))] * 3)
    assert _processes(first.path) == 3


def test_a_stopped_writer_lets_the_next_one_start(tmp_path: Path) -> None:
    db = tmp_path / "popcon.sqlite"
    for _ in range(2):
        writer = Writer(db)
        writer.start()
        assert writer.stop() == 0
    assert (tmp_path / "popcon.sqlite.lock").read_text() == ""


def test_a_writer_that_cannot_open_the_database_releases_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "popcon.sqlite"
    db.write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        Writer(db).start()
    lock = WriterLock(db)
    lock.acquire()
    lock.release()


def test_one_lock_for_every_name_of_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "popcon.sqlite"
    (tmp_path / "link.sqlite").symlink_to(db)
    first = Writer(db)
    first.start()
    try:
        with pytest.raises(DatabaseInUse, match=r"link\.sqlite: in use by another collector"):
            Writer(tmp_path / "link.sqlite").start()
        monkeypatch.chdir(tmp_path)
        with pytest.raises(DatabaseInUse):
            Writer("popcon.sqlite").start()
    finally:
        first.stop()


def test_a_second_collector_refuses_before_binding_and_the_first_keeps_receiving(
    live_collector, tmp_path: Path
) -> None:
    first = live_collector()
    second = Collector(tmp_path / "popcon.sqlite", first.address)  # its address is taken too
    with pytest.raises(DatabaseInUse, match=rf"\(pid {os.getpid()}\); one writer per database"):
        second.start()
    send_udp(first.address, [use_datagram("img", PANDAS_PROCESS) for _ in range(4)])
    assert first.flush(10)
    assert _processes(tmp_path / "popcon.sqlite") == 4


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    db = tmp_path / "popcon.sqlite"
    proc, address = start_collector_process(db)
    try:
        with pytest.raises(DatabaseInUse) as refused:
            Writer(db).start()
        assert refused.value.pid == proc.pid
        send_udp(address, [use_datagram("img", PANDAS_PROCESS) for _ in range(2)])
        deadline = time.monotonic() + 10
        while _processes(db) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert (tmp_path / "popcon.sqlite.lock").read_text() == f"{proc.pid}\n"  # left behind
    collector = Collector(db, ("127.0.0.1", 0))
    collector.start()
    try:
        assert (tmp_path / "popcon.sqlite.lock").read_text() == f"{os.getpid()}\n"
        send_udp(collector.address, [use_datagram("img", PANDAS_PROCESS) for _ in range(3)])
        assert collector.flush(10)
    finally:
        assert collector.stop() == 0
    assert _processes(db) == 5


def test_rows_that_cannot_be_written_by_the_stop_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "popcon.sqlite"
    collector = Collector(db, ("127.0.0.1", 0), StoreSettings(busy_timeout=0))
    collector.start()
    # Another program holds SQLite's write lock until after the stop.
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        send_udp(collector.address, [use_datagram("img", PANDAS_PROCESS) for _ in range(5)])
        time.sleep(0.3)
        with caplog.at_level(logging.WARNING, logger="popcon"):
            unwritten = collector.stop(timeout=1)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # pandas' process: 3 usage rows, 2 edges, 1 report; its environment and source seen; "ok"
    assert unwritten == 3 + 2 + 1 + 2 + 1
    assert f"stopped with {unwritten} rows not written to {db}" in caplog.text
    assert "database is locked" in caplog.text
    assert _processes(db) == 0

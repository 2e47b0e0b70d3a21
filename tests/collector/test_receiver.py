"""The UDP receiver and the collector on loopback, killed under load, with a full disk."""

from __future__ import annotations

import os
import resource
import signal
import socket
import time
from pathlib import Path

import pytest
from collectors import send_udp, start_collector_process
from datagrams import PANDAS_PROCESS, inventory_datagrams, use_datagram
from timing import HOUR, FakeClock

from popcon.server.query import environments
from popcon.server.query.connection import connect_readonly
from popcon.server.query.libraries import libraries, library_detail
from popcon.server.query.totals import datagram_totals, library_process_totals, report_totals
from popcon.server.receive.receiver import Collector, parse_address
from popcon.server.storage.schema import integrity_check


def _processes(db: Path) -> int:
    conn = connect_readonly(db)
    try:
        return sum(row.processes for row in report_totals(conn))
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8137", ("127.0.0.1", 8137)),
        ("0.0.0.0", ("0.0.0.0", 9)),
        ("[::1]:8137", ("::1", 8137)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_addresses_parse(text: str, expected: tuple) -> None:
    assert parse_address(text, 9) == expected


@pytest.mark.parametrize("text", ["", ":80", "host:port", "host:70000", "[::1", "[::1]x"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text, 9)


def test_a_taken_port_fails_at_start(live_collector, tmp_path: Path) -> None:
    first = live_collector()
    second = Collector(tmp_path / "other.sqlite", first.address)
    with pytest.raises(OSError):
        second.start()


def test_datagrams_received_on_loopback_are_counted_and_stored(live_collector) -> None:
    collector = live_collector(statsd_env="legacy")
    datagrams = [use_datagram("img", PANDAS_PROCESS, labels=[("hub", "a")]) for _ in range(40)]
    datagrams += inventory_datagrams("img", [("numpy", "1.26.4"), ("scipy", "1.13.0")], parts=2)
    datagrams += [b"python_popcon.library_used.numpy:1|c", b"python_popcon.reports:1|c"]
    datagrams += [b"junk", b"popcon/9 use 0\n", b"x" * 1500]
    send_udp(collector.address, datagrams)
    assert collector.flush(20)
    assert collector.receiver.results == {
        "ok": 44,
        "unknown_format": 1,
        "version": 1,
        "too_long": 1,
    }
    now = time.time()
    conn = connect_readonly(collector.writer.path)
    rows = {r["name"]: r for r in libraries(conn, now - HOUR, now + 600, now=now)["libraries"]}
    assert rows["pandas"]["processes"] == 40
    assert rows["numpy"] == {
        "name": "numpy",
        "users": None,
        "direct_users": None,
        "processes": 41,
        "direct": 0,
        "transitive": 40,
    }
    assert datagram_totals(conn)["ok"] == 44
    unused = environments.unused(conn, now - HOUR, now + 600, env="img", now=now)
    unused_libraries = unused["environments"][0]["libraries"]
    assert [(lib["name"], lib["version"]) for lib in unused_libraries] == [("scipy", "1.13.0")]
    conn.close()


def test_signed_datagrams_only_when_the_collector_has_a_key(live_collector) -> None:
    collector = live_collector(key="s3cret")
    good = use_datagram("img", PANDAS_PROCESS, key=b"s3cret")
    send_udp(collector.address, [good, use_datagram("img", PANDAS_PROCESS), good[:-3] + b"00\n"])
    assert collector.flush(20)
    assert collector.receiver.results == {"ok": 1, "unsigned": 1, "bad_signature": 1}


def test_each_datagram_lands_in_the_bucket_it_arrived_in(live_collector) -> None:
    clock = FakeClock()
    collector = live_collector(clock=clock)
    send_udp(collector.address, [use_datagram("img", PANDAS_PROCESS) for _ in range(3)])
    assert collector.flush(20)
    clock.advance(600)
    send_udp(collector.address, [use_datagram("img", PANDAS_PROCESS) for _ in range(2)])
    assert collector.flush(20)
    conn = connect_readonly(collector.writer.path)
    detail = library_detail(conn, "pandas", clock() - 1200, clock() + 1, now=clock())
    conn.close()
    assert detail is not None
    assert [p["processes"] for p in detail["series"]][-3:] == [0, 3, 2]


def test_datagrams_that_never_repeat_are_all_counted(live_collector) -> None:
    """Past 2,048 distinct datagrams in an interval the receiver stops counting repeats by
    their bytes; counts stay exact either way."""
    collector = live_collector()
    distinct = [use_datagram("img", PANDAS_PROCESS, seq=i + 1) for i in range(6000)]
    repeated = [use_datagram("img", PANDAS_PROCESS)] * 500
    datagrams = distinct + repeated * 12
    for start in range(0, len(datagrams), 400):  # paced: no kernel drop on a busy machine
        send_udp(collector.address, datagrams[start : start + 400])
        time.sleep(0.01)
    assert collector.flush(20)
    assert collector.receiver.results == {"ok": 12000}
    conn = connect_readonly(collector.writer.path)
    totals = {(t.library, t.level): t.records for t in library_process_totals(conn)}
    assert totals[("pandas", "direct")] == 12000
    assert {t.env: t.processes for t in report_totals(conn)} == {"img": 6000}
    conn.close()


def test_stop_writes_everything_received(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "popcon.sqlite", ("127.0.0.1", 0))
    collector.start()
    send_udp(collector.address, [use_datagram("img", PANDAS_PROCESS) for _ in range(25)])
    time.sleep(0.3)  # in the socket or the receiver, not yet handed over
    collector.stop()
    assert _processes(tmp_path / "popcon.sqlite") == 25


def _send_paced(address, rate: float, seconds: float, log: list) -> None:
    """Distinct processes at ``rate``/s; ``log`` gets (time after send, total sent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            env = f"img{sent % 5}"
            libs = [(f"lib{sent % 300}", "1.0", "direct", "env"), *PANDAS_PROCESS[1:]]
            sock.sendto(use_datagram(env, libs), address)
            sent += 1
        log.append((time.monotonic(), sent))
        time.sleep(0.002)
    sock.close()


@pytest.mark.slow
def test_a_sigkilled_collector_loses_at_most_two_seconds_and_restarts_intact(
    tmp_path: Path,
) -> None:
    db = tmp_path / "popcon.sqlite"
    total_kept = 0
    for _round in range(2):
        proc, address = start_collector_process(db)
        log: list = []
        _send_paced(address, 3000, 4.0, log)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sent_by = max(n for t, n in log if t <= killed_at - 2.0)
        sent = log[-1][1]
        assert integrity_check(db) == "ok"
        stored = _processes(db) - total_kept
        assert sent_by <= stored <= sent, (sent_by, stored, sent)
        total_kept += stored
    # A collector started on the killed one's database goes on counting.
    collector = Collector(db, ("127.0.0.1", 0))
    collector.start()
    try:
        send_udp(collector.address, [use_datagram("img0", PANDAS_PROCESS) for _ in range(10)])
        assert collector.flush(20)
    finally:
        collector.stop()
    assert _processes(db) == total_kept + 10
    assert integrity_check(db) == "ok"


@pytest.mark.slow
def test_a_full_disk_is_logged_and_retried_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "popcon.sqlite"
    proc, address = start_collector_process(db)
    try:
        send_udp(address, [use_datagram("img", PANDAS_PROCESS) for _ in range(5)])
        deadline = time.monotonic() + 10
        while _processes(db) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        files = [db, db.with_name(db.name + "-wal")]
        full = max(f.stat().st_size for f in files if f.exists())
        # The disk is "full": no file of the collector may grow any more.
        hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (full, hard))
        batch = [
            use_datagram(f"env{i}", [(f"lib{i}-{j}", "1.0", "direct", "env") for j in range(20)])
            for i in range(300)
        ]
        send_udp(address, batch)
        time.sleep(4)
        assert proc.poll() is None  # still running
        assert _processes(db) == 5  # nothing new could be written
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        deadline = time.monotonic() + 40
        while _processes(db) < 305 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes(db) == 305
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "could not write to" in err and ("full" in err or "I/O" in err), err
    assert integrity_check(db) == "ok"

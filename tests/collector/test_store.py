"""The store: schema, counting, roll-ups, late rows, retention, caps, inventories, locks."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter

import pytest
from collectors import ingest, send_udp
from datagrams import PANDAS_PROCESS, inventory_datagrams, use_datagram
from timing import DAY, HOUR, T0

from popcon.server.query.connection import connect_readonly
from popcon.server.query.environments import environments
from popcon.server.query.libraries import libraries
from popcon.server.query.totals import (
    datagram_totals,
    library_process_totals,
    library_version_totals,
    report_totals,
)
from popcon.server.receive.ingest import Ingestor, job_of
from popcon.server.storage.persist import load_catalog, read_rolled_until, roll_up, write_job
from popcon.server.storage.schema import (
    ROLLED_ROWS,
    StoreSettings,
    Tier,
    connect_writer,
    default_tiers,
    integrity_check,
)


def _libraries(writer, start, end, **filters) -> dict:
    conn = connect_readonly(writer.path)
    try:
        answer = libraries(conn, start, end, now=writer.clock(), **filters)
    finally:
        conn.close()
    return {row["name"]: row for row in answer["libraries"]}


def _wait_rolled(writer, until: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(writer.path)
        try:
            if (read_rolled_until(conn) or 0) >= until:
                return
        finally:
            conn.close()
        time.sleep(0.05)
    raise AssertionError(f"the writer did not roll up to {until}")


def test_default_tiers_roll_10_minutes_into_hours_then_days() -> None:
    assert default_tiers() == (Tier(600, 2 * DAY), Tier(3600, 60 * DAY), Tier(DAY, 400 * DAY))
    assert default_tiers(3600, 30 * DAY) == (Tier(3600, 30 * DAY), Tier(DAY, 30 * DAY))
    assert default_tiers(600, 1 * DAY)[-1] == Tier(DAY, DAY)


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        (StoreSettings(bucket_width=7), "bucket_width"),
        (StoreSettings(bucket_width=700), "bucket_width"),
        (StoreSettings(retention=10), "retention"),
        (StoreSettings(max_environments=0), "max_environments"),
        (StoreSettings(commit_interval=2.0), "commit_interval"),
        (StoreSettings(tiers=(Tier(600, DAY), Tier(900, DAY))), "tiers"),
    ],
)
def test_a_setting_that_cannot_work_is_named(settings: StoreSettings, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:"):
        settings.check()


def test_the_database_is_in_wal_mode_and_keeps_its_bucket_widths(tmp_path) -> None:
    path = tmp_path / "popcon.sqlite"
    conn = connect_writer(path, now=T0)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    connect_writer(path, StoreSettings(retention=30 * DAY), now=T0).close()  # keeps may change
    with pytest.raises(ValueError, match="bucket widths"):
        connect_writer(path, StoreSettings(bucket_width=300), now=T0)


def test_processes_direct_and_transitive_are_counted_per_protocol(store_writer) -> None:
    writer = store_writer()
    now = writer.clock()
    datagrams = [use_datagram("img", PANDAS_PROCESS) for _ in range(4)]
    # A fifth process imports numpy itself after pandas pulled it in: transitive, then upgrade.
    datagrams.append(use_datagram("img", PANDAS_PROCESS))
    datagrams.append(use_datagram("img", [("numpy", "1.26.4", "upgrade", "env")], seq=1))
    ingest(writer, [(now, d) for d in datagrams])
    rows = _libraries(writer, now - 6 * HOUR, now + 1)
    assert rows["pandas"] == {
        "name": "pandas",
        "users": None,
        "direct_users": None,
        "processes": 5,
        "direct": 5,
        "transitive": 0,
    }
    assert rows["numpy"] == {
        "name": "numpy",
        "users": None,
        "direct_users": None,
        "processes": 5,
        "direct": 1,
        "transitive": 4,
    }
    assert rows["python-dateutil"]["transitive"] == 5


def test_a_batch_from_a_tool_is_stored_like_received_datagrams(store_writer) -> None:
    from popcon.protocol.decode import make_decoder

    writer = store_writer()
    report = make_decoder()(use_datagram("img", PANDAS_PROCESS))
    bucket = int(writer.clock()) - int(writer.clock()) % 600
    job = job_of(Ingestor(writer.catalog, writer.settings), [(bucket, report)] * 3)
    assert job is not None
    assert writer.submit(job)
    assert writer.flush(10)
    assert _libraries(writer, bucket - HOUR, bucket + 600)["pandas"]["processes"] == 3


def test_sqlite_without_json_functions_stores_the_same_rows(tmp_path) -> None:
    from popcon.protocol.decode import make_decoder

    decode = make_decoder()
    first = [use_datagram("img", PANDAS_PROCESS, labels=[("hub", "a")]) for _ in range(3)]
    first += inventory_datagrams("img", [("numpy", "1.26.4"), ("pandas", "2.2.2")], parts=2)
    first.append(b"not a datagram")
    later = [use_datagram("img", PANDAS_PROCESS, seq=1), use_datagram("other", PANDAS_PROCESS)]

    def stored(use_json: bool) -> dict:
        conn = connect_writer(tmp_path / f"json-{use_json}.sqlite", now=T0)
        tiers = default_tiers()
        ingestor = Ingestor(load_catalog(conn), StoreSettings())
        job = job_of(ingestor, [(T0 + 60, decode(d)) for d in first])
        write_job(conn, job, tiers, read_rolled_until(conn) or 0, use_json=use_json)
        roll_up(conn, tiers, T0, T0 + 600)
        # Rows of the bucket just rolled up (late: through the temporary tables) and the next.
        timed = [(T0 + 120, decode(d)) for d in later] + [(T0 + 700, decode(d)) for d in later]
        job = job_of(ingestor, timed)
        write_job(conn, job, tiers, T0 + 600, use_json=use_json)
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        rows = {table: sorted(conn.execute(f"SELECT * FROM {table}")) for table in tables}
        # A random token of each database (late rows here renew it): not a stored row.
        rows["meta"] = [row for row in rows["meta"] if row[0] != ROLLED_ROWS]
        conn.close()
        return rows

    with_json = stored(True)
    assert with_json == stored(False)
    assert {row[1] for row in with_json["libs"]} == {"pandas", "numpy", "python-dateutil"}
    assert len(with_json["inventory"]) == 2
    edges = Counter()
    for row in with_json["edges"]:
        edges[row[0]] += row[-1]
    # Two edges per process: 3 + 2 + 2 processes in tier 0; the rolled-up and late ones above.
    assert (edges[0], edges[1], edges[2]) == (14, 10, 10)


def test_closed_buckets_roll_up_into_hours_days_and_totals(store_writer, fake_clock) -> None:
    writer = store_writer()
    start = fake_clock()
    ingest(writer, [(start + 60, use_datagram("img", PANDAS_PROCESS)) for _ in range(3)])
    ingest(writer, [(start + 700, use_datagram("img", PANDAS_PROCESS)) for _ in range(2)])
    fake_clock.advance(20 * 60)
    before = _libraries(writer, start - 6 * HOUR, fake_clock())
    month_before = _libraries(writer, start - 30 * DAY, fake_clock())
    assert before["pandas"]["processes"] == month_before["pandas"]["processes"] == 5
    _wait_rolled(writer, int(start) + 600)
    assert _libraries(writer, start - 6 * HOUR, fake_clock()) == before
    assert _libraries(writer, start - 30 * DAY, fake_clock()) == month_before
    conn = connect_readonly(writer.path)
    tiers = {
        row[0]: row[1]
        for row in conn.execute(
            "SELECT tier, SUM(direct) FROM usage_by_library GROUP BY tier ORDER BY tier"
        )
    }
    # The first 10-minute bucket is rolled up (3 processes); the second is still live.
    assert tiers == {0: 3, 1: 3, 2: 3}
    totals = {(t.library, t.level): t.records for t in library_process_totals(conn)}
    assert totals[("pandas", "direct")] == 5  # rolled-up total + live bucket
    assert {t.env: t.processes for t in report_totals(conn)} == {"img": 5}
    conn.close()


def test_rows_arriving_after_their_bucket_rolled_up_are_still_counted(
    store_writer, fake_clock
) -> None:
    writer = store_writer()
    start = fake_clock()
    fake_clock.advance(HOUR)
    _wait_rolled(writer, int(start) + HOUR - 600)
    late = [(start + 30, use_datagram("img", PANDAS_PROCESS)) for _ in range(4)]
    ingest(writer, late)
    assert _libraries(writer, start - DAY, fake_clock())["pandas"]["processes"] == 4
    assert _libraries(writer, start - 30 * DAY, fake_clock())["pandas"]["processes"] == 4
    conn = connect_readonly(writer.path)
    totals = {(t.library, t.level): t.records for t in library_process_totals(conn)}
    versions = {(t.library, t.version): t.processes for t in library_version_totals(conn)}
    conn.close()
    assert totals[("pandas", "direct")] == 4
    assert versions[("numpy", "1.26.4")] == 4


def test_each_tier_keeps_its_buckets_only_as_long_as_it_should(
    store_writer, fake_clock, tmp_path
) -> None:
    path = tmp_path / "retention.sqlite"
    writer = store_writer(path=path)
    start = fake_clock()
    ingest(writer, [(start + 60, use_datagram("img", PANDAS_PROCESS)) for _ in range(2)])
    writer.stop()

    def count(tier: int) -> int:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(
                "SELECT COUNT(*) FROM usage_by_source WHERE tier = ?", (tier,)
            ).fetchone()[0]
        finally:
            conn.close()

    fake_clock.advance(3 * DAY)  # past the 2 days of 10-minute buckets
    store_writer(path=path).stop()
    assert (count(0), count(1) > 0, count(2) > 0) == (0, True, True)
    answer = _libraries(writer, start, start + HOUR)
    assert answer["pandas"]["processes"] == 2  # answered from the hourly tier
    fake_clock.advance(60 * DAY)
    store_writer(path=path).stop()
    assert (count(0), count(1), count(2) > 0) == (0, 0, True)
    fake_clock.advance(400 * DAY)
    store_writer(path=path).stop()
    assert (count(0), count(1), count(2)) == (0, 0, 0)
    conn = connect_readonly(path)
    assert environments(conn, now=fake_clock()) == []
    assert library_process_totals(conn) == []
    assert conn.execute("SELECT COUNT(*) FROM libs").fetchone()[0] == 0
    conn.close()
    assert integrity_check(path) == "ok"


def test_caps_bound_environments_label_sets_and_libraries(
    store_writer, fake_clock, tmp_path
) -> None:
    path = tmp_path / "caps.sqlite"
    settings = StoreSettings(
        max_environments=2, max_label_sets_per_env=2, max_libraries_per_env=3, max_libraries=4
    )
    writer = store_writer(settings, path=path)
    now = fake_clock()
    lib = [("numpy", "1.0", "direct", "env")]
    datagrams = [
        use_datagram("a", lib),
        use_datagram("b", lib),
        use_datagram("c", lib),  # a third environment: dropped
        use_datagram("a", lib, labels=[("hub", "x")]),
        use_datagram("a", lib, labels=[("hub", "y")]),  # a third label set of a: dropped
        use_datagram("b", [(f"junk{i}", "1", "direct", "env") for i in range(5)]),
    ]
    ingest(writer, [(now, d) for d in datagrams])
    conn = connect_readonly(path)
    results = datagram_totals(conn)
    assert (results["ok"], results["env_cap"], results["labels_cap"]) == (3, 1, 1)
    assert results["library_cap"] == 1
    names = {row[0] for row in conn.execute("SELECT name FROM libs")}
    assert names == {"numpy", "junk0", "junk1"}  # b holds numpy + 2 junk: its cap of 3
    conn.close()
    writer.stop()
    # The caps hold across a restart.
    writer = store_writer(settings, path=path)
    ingest(
        writer,
        [
            (fake_clock(), use_datagram("d", lib)),
            (fake_clock(), use_datagram("b", [("junk4", "1", "direct", "env")])),
        ],
    )
    conn = connect_readonly(path)
    results = datagram_totals(conn)
    assert (results["env_cap"], results["library_cap"]) == (2, 2)
    conn.close()


def test_an_inventory_replaces_the_previous_one_once_all_its_parts_arrived(
    store_writer, fake_clock
) -> None:
    writer = store_writer()
    now = fake_clock()
    old = inventory_datagrams("img", [("numpy", "1.0"), ("scipy", "1.0")], inventory_id="00000001")
    ingest(writer, [(now, d) for d in old])
    new = inventory_datagrams(
        "img", [(f"lib{i}", "1") for i in range(6)], inventory_id="00000002", parts=3
    )
    other = inventory_datagrams("img", [("x", "1")], inventory_id="00000003", parts=2)
    # Parts out of order, interleaved with an inventory whose second part never arrives.
    ingest(writer, [(now, new[2]), (now, other[0]), (now, new[0])])

    def inventory() -> tuple:
        conn = connect_readonly(writer.path)
        try:
            env = environments(conn, now=fake_clock())[0]
            names = [r[0] for r in conn.execute("SELECT name FROM inventory ORDER BY name")]
            return env["inventory_id"], env["inventory_size"], names
        finally:
            conn.close()

    assert inventory() == ("00000001", 2, ["numpy", "scipy"])
    ingest(writer, [(now, new[1])])
    assert inventory() == ("00000002", 6, [f"lib{i}" for i in range(6)])


def test_a_locked_database_is_retried_and_nothing_is_lost_or_doubled(
    live_collector, caplog
) -> None:
    collector = live_collector(StoreSettings(busy_timeout=0.1))
    blocker = sqlite3.connect(collector.writer.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    caplog.set_level(logging.WARNING, logger="popcon.server.storage.writer")
    try:
        send_udp(collector.address, [use_datagram("img", PANDAS_PROCESS) for _ in range(7)])
        deadline = time.monotonic() + 10
        while collector.writer.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "locked" in (collector.writer.last_error or "")
        assert not collector.flush(1.0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert collector.flush(30)
    assert collector.writer.last_error is None
    assert any("database is locked" in r.getMessage() for r in caplog.records)
    now = time.time()
    conn = connect_readonly(collector.writer.path)
    rows = libraries(conn, now - HOUR, now + 600, now=now)["libraries"]
    assert {r["name"]: r["processes"] for r in rows}["pandas"] == 7
    assert datagram_totals(conn)["ok"] == 7
    conn.close()


def test_flush_waits_for_the_writer_thread(store_writer) -> None:
    writer = store_writer()
    done = []
    thread = threading.Thread(target=lambda: done.append(writer.flush(5)))
    thread.start()
    thread.join(6)
    assert done == [True]

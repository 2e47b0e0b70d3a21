"""The caps under floods: every stored dimension bounded (rows counted in SQLite), each cap hit
counted and logged at most once a minute, real names that report after a flood counted (the
reserves beyond full caps), and junk holding no place for more than a day."""

from __future__ import annotations

import logging
import sqlite3
import time

from collectors import ingest
from datagrams import use_datagram
from timing import DAY, HOUR, MINUTE

from popcon.server.query.connection import connect_readonly
from popcon.server.query.totals import datagram_totals
from popcon.server.storage.persist import read_rolled_until
from popcon.server.storage.rows import PROMOTE_BURST
from popcon.server.storage.schema import StoreSettings


def _rows(writer, sql: str) -> int:
    conn = sqlite3.connect(writer.path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _results(writer) -> dict:
    conn = connect_readonly(writer.path)
    try:
        return datagram_totals(conn)
    finally:
        conn.close()


def _rolled_until(writer) -> int:
    conn = sqlite3.connect(writer.path)
    try:
        return read_rolled_until(conn) or 0
    finally:
        conn.close()


def _roll_up(writer, fake_clock) -> None:
    """Move the clock past the present bucket and wait until the writer rolled it up."""
    fake_clock.advance(600 + 15)
    until = int(fake_clock()) - 15
    until -= until % 600
    deadline = time.monotonic() + 10
    while _rolled_until(writer) < until:
        assert time.monotonic() < deadline, "the writer did not roll up"
        time.sleep(0.05)


def _numpy(version: str, env: str = "img", importer: str = "") -> bytes:
    lib = ("numpy", version, "transitive" if importer else "direct", "env")
    return use_datagram(env, [(*lib, importer) if importer else lib])


def test_a_flood_of_unique_versions_keeps_32_per_library_and_environment(
    store_writer, fake_clock, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="popcon.server.receive.ingest")
    writer = store_writer()
    now = fake_clock()
    ingest(writer, [(now, _numpy(f"1.{i}")) for i in range(1000)])
    ingest(writer, [(now + 60, _numpy(f"2.{i}")) for i in range(100)])  # the same bucket
    ingest(writer, [(now + 60, _numpy("1.0"))])  # a version already counted
    _roll_up(writer, fake_clock)
    results = _results(writer)
    assert (results["ok"], results["version_cap"]) == (33, 1100 - 32)
    assert _rows(writer, "SELECT COUNT(DISTINCT version) FROM usage_by_source") == 32
    assert _rows(writer, "SELECT COUNT(*) FROM total_versions") == 32
    lines = [r.getMessage() for r in caplog.records if "version_cap" in r.getMessage()]
    assert len(lines) == 1 and "max_versions_per_library" in lines[0]
    # A day later the flood's versions are released (their totals too) for new ones.
    fake_clock.advance(DAY)
    ingest(writer, [(fake_clock(), _numpy(f"3.{i}")) for i in range(100)])
    _roll_up(writer, fake_clock)
    assert _results(writer)["version_cap"] == 1100 - 32 + 100 - 32
    assert _rows(writer, "SELECT COUNT(*) FROM total_versions") == 32
    assert _rows(writer, "SELECT COUNT(*) FROM total_versions WHERE version LIKE '3.%'") == 32
    assert len([r for r in caplog.records if "version_cap" in r.getMessage()]) == 2


def test_versions_beyond_the_first_of_each_library_share_a_pool(store_writer, fake_clock) -> None:
    writer = store_writer(StoreSettings(max_versions=10))
    now = fake_clock()
    ingest(
        writer,
        [
            (now, use_datagram("img", [(f"lib{n}", f"1.{i}", "direct", "env")]))
            for n in range(20)
            for i in range(5)
        ],
    )
    _roll_up(writer, fake_clock)
    # One version of each library always (20), more from the pool of 10.
    assert _rows(writer, "SELECT COUNT(*) FROM total_versions") == 30
    assert _results(writer)["version_cap"] == 100 - 30


def test_a_flood_of_unique_importers_keeps_a_bounded_number_per_library_and_environment(
    store_writer, fake_clock
) -> None:
    assert StoreSettings().max_importers_per_library == 1000
    writer = store_writer(StoreSettings(max_importers_per_library=32))
    now = fake_clock()
    ingest(writer, [(now, _numpy("1.0", importer=f"importer{i}")) for i in range(500)])
    fake_clock.advance(HOUR)
    ingest(writer, [(fake_clock(), _numpy("1.0", importer=f"late{i}")) for i in range(50)])
    _roll_up(writer, fake_clock)
    edges = "SELECT COUNT(DISTINCT importer_id) FROM edges WHERE tier = {}"
    assert _rows(writer, edges.format(0)) == 32
    assert _rows(writer, edges.format(2)) == 32  # the day's bucket: the same 32
    results = _results(writer)
    # The records are counted; only the edges over the cap are left out.
    assert (results["ok"], results["importer_cap"]) == (550 - 518, 518)
    assert _rows(writer, "SELECT SUM(transitive) FROM usage_by_source WHERE tier = 0") == 550


def _flood_filling_the_caps(writer, moment: float, copies: int = 1) -> None:
    """The first names fill the caps; the rest, each sent ``copies`` times, are refused."""
    real = [(moment, use_datagram("real", [("numpy", "1.0", "direct", "env")]))]
    junk_envs = [
        (moment, use_datagram(f"junk-env-{i}", [("numpy", "1.0", "direct", "env")]))
        for i in range(50)
    ]
    junk_libs = [
        (moment, use_datagram("real", [(f"junk-lib-{i}", "1", "direct", "env")])) for i in range(50)
    ]
    junk_labels = [
        (moment, use_datagram("real", [("numpy", "1.0", "direct", "env")], labels=[("k", str(i))]))
        for i in range(50)
    ]
    ingest(
        writer, real + [junk for junk in junk_envs + junk_libs + junk_labels for _ in range(copies)]
    )


SMALL = StoreSettings(
    max_environments=3, max_label_sets_per_env=2, max_libraries_per_env=3, max_libraries=5
)
SCIPY_NOTEBOOK = "quay.io/jupyter/scipy-notebook:2026-11-30"


def _real_data(moment: float) -> list[tuple[float, bytes]]:
    """A real environment, a new library and a new label set of the known environment."""
    return [
        (moment, use_datagram(SCIPY_NOTEBOOK, [("numpy", "2.1", "direct", "env")])),
        (moment, use_datagram("real", [("scipy", "1.14", "direct", "env")])),
        (moment, use_datagram("real", [("numpy", "1.0", "direct", "env")], labels=[("hub", "a")])),
    ]


def _counted(writer) -> tuple[int, int, int]:
    """Processes counted of the real environment, of the new library and of the new label
    set (in the finest buckets)."""
    counted = (
        "SELECT COALESCE(SUM(u.direct), 0) FROM usage_by_source u "
        "JOIN sources s ON s.id = u.source_id JOIN envs e ON e.id = s.env_id "
        "JOIN libs l ON l.id = u.lib_id WHERE u.tier = 0 AND "
    )
    return (
        _rows(writer, counted + f"e.name = '{SCIPY_NOTEBOOK}'"),
        _rows(writer, counted + "l.name = 'scipy'"),
        _rows(writer, counted + "s.labels = 'hub=a'"),
    )


def _check_the_flood_is_bounded(writer, copies: int = 1) -> None:
    assert _rows(writer, "SELECT COUNT(*) FROM envs") == 3
    assert _rows(writer, "SELECT COUNT(*) FROM sources") == 3 + 1
    assert _rows(writer, "SELECT COUNT(*) FROM libs") == 3
    results = _results(writer)
    refused = (results["env_cap"], results["library_cap"], results["labels_cap"])
    assert refused == (48 * copies, 48 * copies, 49 * copies)


def test_a_real_environment_reporting_after_a_flood_of_unique_names_is_counted(
    store_writer, fake_clock
) -> None:
    writer = store_writer(SMALL)
    _flood_filling_the_caps(writer, fake_clock())
    _check_the_flood_is_bounded(writer)
    start = fake_clock() + HOUR
    ingest(writer, _real_data(start))  # seen once, as each name of the flood: refused
    assert _counted(writer) == (0, 0, 0)
    for minutes in (10, 20, 30):  # it reports again: each counted, in a reserve place
        ingest(writer, _real_data(start + minutes * MINUTE))
    assert _counted(writer) == (3, 3, 3)
    # One reserve place beyond each cap (cap // 16, at least one); the flood's names stay
    # refused, and what was counted before the flood still counts.
    assert _rows(writer, "SELECT COUNT(*) FROM envs") == 3 + 1
    assert _rows(writer, "SELECT COUNT(*) FROM sources") == 3 + 1 + 2
    assert _rows(writer, "SELECT COUNT(*) FROM libs") == 3 + 1
    results = _results(writer)
    assert (results["env_cap"], results["library_cap"], results["labels_cap"]) == (49, 49, 50)


def test_a_flood_of_names_sent_twice_turns_over_the_reserve_at_its_pace_only(
    store_writer, fake_clock
) -> None:
    writer = store_writer(SMALL)
    moment = fake_clock()
    _flood_filling_the_caps(writer, moment, copies=2)
    # Each junk name returned (its second datagram): PROMOTE_BURST of each kind passed through
    # the one reserve place; the rest stay refused, so the names stored stay bounded.
    assert _rows(writer, "SELECT COUNT(*) FROM envs") == 3 + PROMOTE_BURST
    # (label sets: those of the reserve, and one of each environment that passed through it)
    assert _rows(writer, "SELECT COUNT(*) FROM sources") == 3 + 1 + 2 * PROMOTE_BURST
    assert _rows(writer, "SELECT COUNT(*) FROM libs") == 3 + PROMOTE_BURST
    results = _results(writer)
    refused = (results["env_cap"], results["library_cap"], results["labels_cap"])
    assert refused == tuple(2 * (n - PROMOTE_BURST) for n in (48, 48, 49))
    # The next bucket (the pace allows again): a real environment reporting twice is counted.
    later = moment + 10 * MINUTE
    ingest(writer, _real_data(later) * 2)
    assert _counted(writer) == (2, 2, 2)
    ingest(writer, [(later, use_datagram("real", [("numpy", "1.0", "direct", "env")]))])
    numpy_in_real = "SELECT SUM(direct) FROM usage_by_source u JOIN sources s ON s.id = "
    numpy_in_real += "u.source_id WHERE s.labels = '' AND u.lib_id = 1 AND s.env_id = 1"
    assert _rows(writer, numpy_in_real) == 2  # before the flood and now: its place holds


def test_real_data_after_a_flood_and_a_restart_is_counted_when_it_reports_again(
    store_writer, fake_clock, tmp_path
) -> None:
    path = tmp_path / "flooded.sqlite"
    writer = store_writer(SMALL, path=path)
    _flood_filling_the_caps(writer, fake_clock())
    _check_the_flood_is_bounded(writer)
    writer.stop()
    fake_clock.advance(12 * HOUR)
    writer = store_writer(SMALL, path=path)  # the caps hold across the restart
    ingest(writer, _real_data(fake_clock()))
    assert _counted(writer) == (0, 0, 0)
    ingest(writer, _real_data(fake_clock() + 10 * MINUTE))
    assert _counted(writer) == (1, 1, 1)
    writer.stop()
    writer = store_writer(SMALL, path=path)  # and what took a reserve place keeps it
    ingest(writer, _real_data(fake_clock() + 20 * MINUTE))
    assert _counted(writer) == (2, 2, 2)


def test_junk_holds_a_place_a_day_at_most(store_writer, fake_clock) -> None:
    writer = store_writer(SMALL)
    _flood_filling_the_caps(writer, fake_clock())
    ingest(writer, _real_data(fake_clock() + DAY))  # the flood's names were released
    assert _counted(writer) == (1, 1, 1)
    assert _rows(writer, "SELECT COUNT(*) FROM envs") == 4  # released names keep their ids

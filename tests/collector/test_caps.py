"""The caps under floods: every stored dimension bounded (rows counted in SQLite), each cap hit
counted and logged at most once a minute, and junk holding no place for more than a day."""

from __future__ import annotations

import logging
import sqlite3
import time

from collectors import ingest
from datagrams import use_datagram
from timing import DAY, HOUR

from popcon.server.query.connection import connect_readonly
from popcon.server.query.totals import datagram_totals
from popcon.server.storage.persist import read_rolled_until
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


def _flood_filling_the_caps(writer, moment: float) -> None:
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
    ingest(writer, real + junk_envs + junk_libs + junk_labels)


SMALL = StoreSettings(
    max_environments=3, max_label_sets_per_env=2, max_libraries_per_env=3, max_libraries=5
)
SCIPY_NOTEBOOK = "quay.io/jupyter/scipy-notebook:2026-11-30"


def _real_data(moment: float) -> list[tuple[float, bytes]]:
    return [
        (moment, use_datagram(SCIPY_NOTEBOOK, [("numpy", "2.1", "direct", "env")])),
        (moment, use_datagram("real", [("scipy", "1.14", "direct", "env")])),
    ]


def _counted(writer) -> tuple[bool, bool]:
    env = _rows(writer, f"SELECT COUNT(*) FROM envs WHERE name = '{SCIPY_NOTEBOOK}'")
    lib = _rows(
        writer,
        "SELECT COUNT(*) FROM usage_by_source u JOIN libs l ON l.id = u.lib_id "
        "WHERE l.name = 'scipy' AND u.tier = 0",
    )
    return bool(env), bool(lib)


def _check_the_flood_is_bounded(writer) -> None:
    assert _rows(writer, "SELECT COUNT(*) FROM envs") == 3
    assert _rows(writer, "SELECT COUNT(*) FROM sources") == 3 + 1
    assert _rows(writer, "SELECT COUNT(*) FROM libs") == 3
    results = _results(writer)
    assert (results["env_cap"], results["library_cap"], results["labels_cap"]) == (48, 48, 49)


def test_real_data_after_a_flood_filling_the_caps_is_counted_within_a_day(
    store_writer, fake_clock
) -> None:
    writer = store_writer(SMALL)
    _flood_filling_the_caps(writer, fake_clock())
    _check_the_flood_is_bounded(writer)
    for hours in (1, 12, 22):  # real data within the day: still refused, "real" stays
        moment = fake_clock() + hours * HOUR
        ingest(writer, _real_data(moment))
        assert _counted(writer) == (False, False)
    ingest(writer, _real_data(fake_clock() + DAY))
    assert _counted(writer) == (True, True)
    assert _rows(writer, "SELECT COUNT(*) FROM envs") == 4  # released names keep their ids


def test_real_data_after_a_flood_and_a_restart_is_counted_within_a_day(
    store_writer, fake_clock, tmp_path
) -> None:
    path = tmp_path / "flooded.sqlite"
    writer = store_writer(SMALL, path=path)
    start = fake_clock()
    _flood_filling_the_caps(writer, start)
    _check_the_flood_is_bounded(writer)
    writer.stop()
    fake_clock.advance(12 * HOUR)
    writer = store_writer(SMALL, path=path)
    ingest(writer, _real_data(fake_clock()))  # the caps hold across the restart
    assert _counted(writer) == (False, False)
    writer.stop()
    fake_clock.advance(12 * HOUR)
    writer = store_writer(SMALL, path=path)
    ingest(writer, _real_data(fake_clock()))
    assert _counted(writer) == (True, True)

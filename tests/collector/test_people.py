"""Distinct people through the real store: popcon/2 datagrams decoded, counted by the receiving
side's code, written by the writer, rolled up, and answered by the queries (``users``,
``direct_users``, the programs, ``min_users``), and what the database keeps of a person."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from collectors import by_name, ingest, send_udp
from datagrams import (
    PANDAS_PROCESS,
    person_of,
    statsd_datagram,
    use_datagram,
    use_datagram_2,
)
from timing import DAY, HOUR, MINUTE, T0, FakeClock, wait_until

from popcon.protocol.decode import make_decoder
from popcon.server.query.answers import (
    libraries_answer,
    library_answer,
    programs_answer,
    user_installed_answer,
)
from popcon.server.query.connection import connect_readonly
from popcon.server.query.kept import Kept
from popcon.server.query.kept import _Kept as Kept_
from popcon.server.query.libraries import libraries, library_detail
from popcon.server.query.programs import programs
from popcon.server.receive.ingest import Ingestor, job_of
from popcon.server.storage.persist import load_catalog, read_rolled_until, roll_up, write_job
from popcon.server.storage.schema import StoreSettings, connect_writer, default_tiers
from popcon.server.storage.sketch import MAX_ENCODED
from popcon.server.storage.upkeep import backup_database

#: Where the clock of these tests stands when a writer starts: data arrives after it, in
#: buckets not rolled up yet (unless a test says otherwise).
START = T0 + 30 * MINUTE
ENV = "img"
RESEARCH = (("hub", "research"),)
TEACHING = (("hub", "teaching"),)
#: A single-user server's program and what its machinery imports (not people's code).
JUPYTER_LAB = ("jupyterlab", "4.2.0", "env")
SERVER_IMPORTS = [
    ("tornado", "6.4", "program", "env", "jupyter-server"),
    ("jupyter-server", "2.14.0", "program", "env"),
]


def _people(count: int, seed: int = 0) -> list[bytes]:
    """``count`` people: each a random 32-byte secret, as a recorder keeps per user."""
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


@pytest.fixture
def writer(store_writer, fake_clock: FakeClock) -> Any:
    fake_clock.now = START
    return store_writer()


@contextmanager
def _reading(writer: Any) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the writer's database, as the faces open one."""
    conn = connect_readonly(writer.path)
    try:
        yield conn
    finally:
        conn.close()


def _rows(writer: Any, since: float = 6 * HOUR, **kwargs: Any) -> dict[Any, dict[str, Any]]:
    """The libraries answer of the ``since`` seconds up to the writer's clock (its bucket
    included), by name."""
    now = writer.clock()
    with _reading(writer) as conn:
        answer = libraries(conn, now - since, now + 1, now=now, **kwargs)
    return by_name(answer["libraries"])


def _at(moment: float, datagrams: Sequence[bytes]) -> list[tuple[float, bytes]]:
    return [(moment, data) for data in datagrams]


# -- people, not processes ---------------------------------------------------------------------


def test_users_count_people_not_processes(writer) -> None:
    heavy, *others = _people(3)
    datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, heavy) for _ in range(100)]
    datagrams += [use_datagram_2(ENV, PANDAS_PROCESS, person) for person in others]
    ingest(writer, _at(START + 60, datagrams))
    rows = _rows(writer)
    assert rows["pandas"] == {
        "name": "pandas",
        "users": 3,
        "direct_users": 3,
        "processes": 102,
        "direct": 102,
        "transitive": 0,
    }
    assert (rows["numpy"]["users"], rows["numpy"]["processes"]) == (3, 102)
    assert (rows["python-dateutil"]["users"], rows["python-dateutil"]["transitive"]) == (3, 102)


def test_one_person_with_100_processes_counts_one(writer) -> None:
    (person,) = _people(1, seed=5)
    requests = [("requests", "2.32.3", "direct", "env")]
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, requests, person)] * 100))
    assert _rows(writer)["requests"]["users"] == 1
    assert _rows(writer)["requests"]["processes"] == 100


def test_rows_are_ordered_by_users_then_processes(writer) -> None:
    people = _people(4, seed=1)
    cron = [use_datagram_2(ENV, [("requests", "2.32.3", "direct", "env")], people[0])] * 50
    students = [use_datagram_2(ENV, [("polars", "1.0", "direct", "env")], p) for p in people]
    ingest(writer, _at(START + 60, cron + students))
    now = writer.clock()
    with _reading(writer) as conn:
        answer = libraries(conn, now - HOUR, now + 1, now=now)
    assert [(r["name"], r["users"], r["processes"]) for r in answer["libraries"]] == [
        ("polars", 4, 4),
        ("requests", 1, 50),
    ]


def test_direct_users_are_the_people_whose_own_code_imported_it(writer) -> None:
    people = _people(5, seed=2)
    datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, person) for person in people]
    # Two of them import numpy themselves: one in a process of its own, one later in the
    # process where pandas pulled it in (an upgrade record, seq 1).
    datagrams.append(use_datagram_2(ENV, [("numpy", "1.26.4", "direct", "env")], people[0]))
    datagrams.append(use_datagram_2(ENV, [("numpy", "1.26.4", "upgrade", "env")], people[1], seq=1))
    ingest(writer, _at(START + 60, datagrams))
    numpy = _rows(writer)["numpy"]
    assert (numpy["users"], numpy["direct_users"]) == (5, 2)
    assert (numpy["processes"], numpy["direct"], numpy["transitive"]) == (6, 2, 4)
    direct_only = _rows(writer, level="direct")["numpy"]
    assert (direct_only["users"], direct_only["processes"]) == (2, 2)
    transitive_only = _rows(writer, level="transitive")["numpy"]
    assert transitive_only["users"] == 5
    assert _rows(writer)["python-dateutil"]["users"] == 5
    assert _rows(writer)["pandas"]["direct_users"] == 5


def test_no_direct_use_by_known_people_is_zero_direct_users_not_unknown(writer) -> None:
    """numpy came only through pandas, for people who are all known: nobody imported it
    directly, which is 0 people, not "unknown" (unknown is for senders without people)."""
    people = _people(3, seed=25)
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, PANDAS_PROCESS, p) for p in people]))
    numpy = _rows(writer)["numpy"]
    assert (numpy["users"], numpy["direct"]) == (3, 0)
    assert numpy["direct_users"] == 0


def test_the_detail_of_a_library_counts_people_per_version_environment_and_point(writer) -> None:
    people = _people(4, seed=3)
    old = [("numpy", "1.26.4", "direct", "env")]
    new = [("numpy", "2.1.0", "direct", "env")]
    datagrams = [use_datagram_2("img:a", old, p) for p in people[:3] for _ in range(2)]
    datagrams += [use_datagram_2("img:b", new, p) for p in people[2:]]
    ingest(writer, _at(START + 60, datagrams))
    ingest(writer, _at(START + 700, [use_datagram_2("img:b", new, people[3])]))
    now = START + 20 * MINUTE
    with _reading(writer) as conn:
        detail = library_detail(conn, "numpy", START - HOUR, now, now=now)
    assert detail is not None
    assert (detail["users"], detail["direct_users"]) == (4, 4)
    assert {v["version"]: v["users"] for v in detail["versions"]} == {"1.26.4": 3, "2.1.0": 2}
    assert {e["env"]: e["users"] for e in detail["environments"]} == {"img:a": 3, "img:b": 2}
    points = [(p["users"], p["processes"]) for p in detail["series"]][-2:]
    assert points == [(4, 8), (1, 1)]


# -- windows, roll-ups, restarts ---------------------------------------------------------------


def test_a_window_merges_people_across_buckets(writer) -> None:
    a, b, c = _people(3, seed=4)
    lib = [("scipy", "1.14.1", "direct", "env")]
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, a)]))
    ingest(writer, _at(START + 700, [use_datagram_2(ENV, lib, a), use_datagram_2(ENV, lib, b)]))
    ingest(writer, _at(START + 3 * HOUR, [use_datagram_2(ENV, lib, a)]))
    ingest(writer, _at(START + 4 * HOUR, [use_datagram_2(ENV, lib, c)]))
    writer.clock.now = START + 5 * HOUR
    scipy = _rows(writer)["scipy"]
    assert (scipy["users"], scipy["processes"]) == (3, 5)
    now = writer.clock()
    with _reading(writer) as conn:
        first_hour = by_name(libraries(conn, START, START + HOUR, now=now)["libraries"])
    assert (first_hour["scipy"]["users"], first_hour["scipy"]["processes"]) == (2, 3)


def test_people_of_different_days_merge_and_the_same_person_counts_once(
    store_writer, fake_clock, tmp_path: Path
) -> None:
    """Days apart, the window is answered from the coarser tiers the roll-ups made."""
    fake_clock.now = START
    path = tmp_path / "days.sqlite"
    a, b = _people(2, seed=6)
    lib = [("pandas", "2.2.2", "direct", "env")]
    for person in (a, b, a):
        writer = store_writer(path=path)
        ingest(writer, _at(fake_clock() + 60, [use_datagram_2(ENV, lib, person)]))
        writer.stop()
        fake_clock.advance(DAY)
    writer = store_writer(path=path)
    week = _rows(writer, since=7 * DAY)["pandas"]
    month = _rows(writer, since=30 * DAY)["pandas"]
    assert (week["users"], week["processes"]) == (month["users"], month["processes"]) == (2, 3)


def test_roll_ups_keep_the_people(store_writer, fake_clock, tmp_path: Path) -> None:
    fake_clock.now = START
    path = tmp_path / "rolled.sqlite"
    writer = store_writer(path=path)
    people = _people(7, seed=7)
    datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, p, program=JUPYTER_LAB) for p in people]
    datagrams += [use_datagram_2(ENV, PANDAS_PROCESS, people[0])] * 5
    ingest(writer, _at(START + 60, datagrams))
    ingest(writer, _at(START + 700, [use_datagram_2(ENV, PANDAS_PROCESS, people[1])]))
    fake_clock.now = START + 20 * MINUTE
    before = _rows(writer, since=HOUR)
    assert (before["pandas"]["users"], before["pandas"]["processes"]) == (7, 13)
    writer.stop()

    def tier_rows(tier: int) -> int:
        conn = sqlite3.connect(path)
        try:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM sketches_by_source WHERE tier = ?", (tier,)
            ).fetchone()
        finally:
            conn.close()
        return int(count)

    def answered() -> tuple[dict[Any, dict[str, Any]], list[dict[str, Any]]]:
        now = fake_clock()
        conn = connect_readonly(path)
        try:
            rows = libraries(conn, START, START + HOUR, now=now)
            progs = programs(conn, START, START + HOUR, now=now)
        finally:
            conn.close()
        return by_name(rows["libraries"]), progs["programs"]

    for days, tier in ((3, 1), (60, 2)):  # past the 10-minute buckets, then the hourly ones
        fake_clock.now = START + days * DAY
        store_writer(path=path).stop()  # rolls up and sweeps at start
        assert tier_rows(0) == 0 and tier_rows(tier) > 0
        rows, progs = answered()
        assert (rows["pandas"]["users"], rows["pandas"]["processes"]) == (7, 13)
        assert rows["numpy"]["users"] == rows["python-dateutil"]["users"] == 7
        assert rows["pandas"]["direct_users"] == 7
        assert [(p["name"], p["users"], p["processes"]) for p in progs] == [("jupyterlab", 7, 7)]


def _wait_rolled(writer: Any, until: int) -> None:
    """Wait (10 s at most) for the running writer to roll its buckets up to ``until``."""

    def rolled() -> bool:
        with _reading(writer) as conn:
            return (read_rolled_until(conn) or 0) >= until

    wait_until(rolled, timeout=10, interval=0.05, what=f"the roll-up to {until}")


def test_a_running_writer_rolls_people_up_into_every_tier(writer, fake_clock) -> None:
    a, b, c = _people(3, seed=8)
    lib = [("pandas", "2.2.2", "direct", "env")]
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, p) for p in (a, b)]))
    ingest(writer, _at(START + 700, [use_datagram_2(ENV, lib, p) for p in (b, c)]))
    fake_clock.advance(20 * MINUTE)
    _wait_rolled(writer, START + 600)
    with _reading(writer) as conn:
        tiers = {tier for (tier,) in conn.execute("SELECT tier FROM sketches_by_library")}
    assert tiers == {0, 1, 2}
    assert _rows(writer, since=6 * HOUR)["pandas"]["users"] == 3  # rolled + live, 10 minutes
    assert _rows(writer, since=30 * DAY)["pandas"]["users"] == 3  # a daily bucket + live
    assert _rows(writer, since=7 * DAY)["pandas"]["users"] == 3  # an hourly bucket + live


def test_people_arriving_after_their_bucket_rolled_up_are_merged_in(writer, fake_clock) -> None:
    a, b = _people(2, seed=9)
    lib = [("pandas", "2.2.2", "direct", "env")]
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, a)]))
    fake_clock.advance(HOUR)
    _wait_rolled(writer, START + HOUR - 600)
    # Late: b, and a again, for the bucket rolled up already.
    ingest(writer, _at(START + 90, [use_datagram_2(ENV, lib, b), use_datagram_2(ENV, lib, a)]))
    for since in (6 * HOUR, 7 * DAY, 30 * DAY):
        pandas = _rows(writer, since=since)["pandas"]
        assert (pandas["users"], pandas["processes"]) == (2, 3), since


def test_answers_keeping_what_is_rolled_up_equal_answers_read_afresh(
    writer, fake_clock, tmp_path: Path
) -> None:
    """Answers keep what they read of the rolled-up buckets (``popcon.server.query.kept``):
    as the writer rolls up more, and when records arrive late for buckets rolled up, every
    answer (6 hours, 7 and 30 days) equals the one read from a copy of the database, of which
    nothing is kept."""
    people = _people(13, seed=21)
    lib = [("pandas", "2.2.2", "direct", "env"), ("numpy", "2.0.0", "transitive", "env", "pandas")]
    copies = iter(range(100))

    def answers() -> dict[float, dict[Any, dict[str, Any]]]:
        now = writer.clock()
        copy = tmp_path / f"copy-{next(copies)}.sqlite"
        backup_database(writer.path, copy)
        found = {}
        with _reading(writer) as conn:
            for since in (6 * HOUR, 7 * DAY, 30 * DAY):
                kept = libraries(conn, now - since, now + 1, now=now)
                afresh = connect_readonly(copy)
                try:
                    assert kept == libraries(afresh, now - since, now + 1, now=now), since
                finally:
                    afresh.close()
                found[since] = by_name(kept["libraries"])
        return found

    def token() -> str:
        with _reading(writer) as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'rolled_rows'").fetchone()[0]

    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, p) for p in people[:3]]))
    assert {since: rows["pandas"]["users"] for since, rows in answers().items()} == {
        6 * HOUR: 3,
        7 * DAY: 3,
        30 * DAY: 3,
    }
    for step, advance in enumerate((20 * MINUTE, 2 * HOUR, 23 * HOUR), start=1):
        fake_clock.advance(advance)
        _wait_rolled(writer, int(fake_clock()) // 600 * 600 - 600)
        moment = fake_clock()
        newcomers = people[3 * step : 3 * step + 3]
        ingest(writer, _at(moment, [use_datagram_2(ENV, lib, p) for p in [*newcomers, people[0]]]))
        month = answers()[30 * DAY]
        assert (month["pandas"]["users"], month["pandas"]["processes"]) == (
            3 * step + 3,
            4 * step + 3,
        )
        assert month["numpy"]["users"] == 3 * step + 3
    before = token()
    ingest(writer, _at(START + 90, [use_datagram_2(ENV, lib, people[12])]))  # late
    assert token() != before
    month = answers()[30 * DAY]
    assert (month["pandas"]["users"], month["pandas"]["processes"]) == (13, 16)


def test_a_kept_answer_older_than_the_finest_buckets_is_read_afresh(
    store_writer, fake_clock, tmp_path: Path
) -> None:
    """A window reaching into the future stays the same window for days; once the finest tier
    no longer holds the buckets rolled up since its value was kept, the answer is read afresh
    instead of missing their people."""
    path = tmp_path / "kept.sqlite"
    a, b, c = _people(3, seed=22)
    lib = [("pandas", "2.2.2", "direct", "env")]

    def month_users() -> Any:
        now = fake_clock()
        with _reading(writer) as conn:
            rows = libraries(conn, START - 10 * DAY, START + 20 * DAY, now=now)
        return by_name(rows["libraries"])["pandas"]["users"]

    fake_clock.now = START
    writer = store_writer(path=path)
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, p) for p in (a, b)]))
    fake_clock.advance(20 * MINUTE)
    _wait_rolled(writer, START + 600)
    assert month_users() == 2  # kept
    writer.stop()
    fake_clock.now = START + DAY
    writer = store_writer(path=path)
    ingest(writer, _at(fake_clock() + 60, [use_datagram_2(ENV, lib, c)]))
    writer.stop()
    fake_clock.now = START + 4 * DAY
    writer = store_writer(path=path)  # rolls up, and sweeps the finest buckets of day 1
    writer.stop()
    assert month_users() == 3


def test_what_answers_keep_is_bounded() -> None:
    """Past its budget, the least recently used values are dropped; one larger than the whole
    budget is not kept."""
    kept = Kept_(100)
    kept.put("a", Kept("a", 0, 60))
    kept.put("b", Kept("b", 0, 30))
    assert kept.get("a") is not None  # now the most recently used
    kept.put("c", Kept("c", 0, 30))
    assert (kept.get("b"), kept.size()) == (None, 90)
    kept.put("d", Kept("d", 0, 101))
    assert kept.get("d") is None and kept.size() == 90
    kept.put("a", Kept("a", 0, 10))
    assert kept.size() == 40


def test_a_restarted_store_keeps_its_sketches(store_writer, fake_clock, tmp_path: Path) -> None:
    fake_clock.now = START
    path = tmp_path / "restart.sqlite"
    a, b, c = _people(3, seed=10)
    lib = [("pandas", "2.2.2", "direct", "env")]
    writer = store_writer(path=path)
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, p) for p in (a, b)]))
    assert _rows(writer)["pandas"]["users"] == 2
    writer.stop()
    writer = store_writer(path=path)
    assert _rows(writer)["pandas"]["users"] == 2
    # The same bucket, after the restart: b again and c are merged into the stored sketch.
    ingest(writer, _at(START + 120, [use_datagram_2(ENV, lib, p) for p in (b, c)]))
    assert _rows(writer)["pandas"]["users"] == 3
    writer.stop()
    writer = store_writer(path=path)
    pandas = _rows(writer)["pandas"]
    assert (pandas["users"], pandas["processes"]) == (3, 4)


def test_a_job_given_back_keeps_its_people_for_the_next_one(writer) -> None:
    """A job the writer could not write is merged into the next (as after a locked
    database): the people of both are written, each once."""
    decode = make_decoder()
    a, b, c = _people(3, seed=29)
    lib = [("pandas", "2.2.2", "direct", "env")]
    ingestor = Ingestor(writer.catalog, writer.settings)
    first = job_of(ingestor, [(START + 60, decode(use_datagram_2(ENV, lib, p))) for p in (a, b)])
    assert first is not None
    ingestor.give_back(first)
    second = job_of(ingestor, [(START + 90, decode(use_datagram_2(ENV, lib, p))) for p in (b, c)])
    assert second is not None
    assert writer.submit(second, timeout=10)
    assert writer.flush(20), writer.last_error
    pandas = _rows(writer)["pandas"]
    assert (pandas["users"], pandas["processes"]) == (3, 4)


def test_people_sent_over_udp_to_a_live_collector_are_counted(live_collector) -> None:
    collector = live_collector()
    people = _people(6, seed=11)
    datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, p) for p in people for _ in range(3)]
    send_udp(collector.address, datagrams)
    assert collector.flush(20)
    assert collector.receiver.results == {"ok": 18}
    now = time.time()
    conn = connect_readonly(collector.writer.path)
    try:
        rows = by_name(libraries(conn, now - HOUR, now + 600, now=now)["libraries"])
    finally:
        conn.close()
    assert (rows["pandas"]["users"], rows["pandas"]["processes"]) == (6, 18)
    assert rows["numpy"]["users"] == 6


# -- unknown people ----------------------------------------------------------------------------


def test_popcon_1_and_statsd_senders_have_unknown_users_never_zero(writer) -> None:
    ingest(writer, _at(START + 60, [use_datagram(ENV, PANDAS_PROCESS)] * 3))
    ingest(writer, _at(START + 60, [statsd_datagram("requests", reports=True)] * 2))
    rows = _rows(writer)
    for name in ("pandas", "numpy", "python-dateutil", "requests"):
        assert rows[name]["users"] is None, name
        assert rows[name]["direct_users"] is None, name
        assert rows[name]["processes"] > 0
    now = writer.clock()
    with _reading(writer) as conn:
        detail = library_detail(conn, "requests", START - HOUR, now + 1, now=now)
    assert detail is not None
    assert (detail["users"], detail["direct_users"]) == (None, None)
    assert all(point["users"] is None for point in detail["series"])
    assert [e["users"] for e in detail["environments"]] == [None]


def test_processes_without_a_person_have_unknown_users(writer) -> None:
    datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, None, program=JUPYTER_LAB)] * 4
    ingest(writer, _at(START + 60, datagrams))
    rows = _rows(writer)
    assert (rows["pandas"]["users"], rows["pandas"]["processes"]) == (None, 4)
    assert rows["numpy"]["users"] is None
    now = writer.clock()
    with _reading(writer) as conn:
        progs = programs(conn, START, now + 1, now=now)["programs"]
    assert [(p["name"], p["users"], p["processes"]) for p in progs] == [("jupyterlab", None, 4)]


def test_known_people_are_counted_beside_senders_of_unknown_people(writer) -> None:
    """Unknown people add nobody: the count is of the people known (and the statsd
    environment alone stays unknown)."""
    people = _people(2, seed=12)
    lib = [("requests", "2.32.3", "direct", "env")]
    datagrams = [use_datagram_2(ENV, lib, p) for p in people]
    datagrams += [use_datagram_2(ENV, lib, None), use_datagram(ENV, [lib[0][:4]])]
    datagrams.append(statsd_datagram("requests"))
    ingest(writer, _at(START + 60, datagrams))
    requests = _rows(writer)["requests"]
    assert (requests["users"], requests["processes"]) == (2, 5)
    assert _rows(writer, env="statsd")["requests"]["users"] is None
    assert _rows(writer, env=ENV)["requests"]["users"] == 2
    assert _rows(writer, level="unknown")["requests"]["users"] is None


# -- programs ----------------------------------------------------------------------------------


def _notebook_people(writer: Any) -> list[bytes]:
    """Three people, each with a single-user server (jupyterlab, whose machinery imports
    tornado and jupyter-server) and a cell importing pandas; one also runs pip twice."""
    people = _people(3, seed=13)
    datagrams = []
    for person in people:
        datagrams.append(use_datagram_2(ENV, SERVER_IMPORTS, person, program=JUPYTER_LAB))
        datagrams.append(use_datagram_2(ENV, PANDAS_PROCESS, person))
    pip = ("pip", "24.0", "env")
    datagrams += [use_datagram_2(ENV, [], people[0], program=pip)] * 2
    ingest(writer, _at(START + 60, datagrams))
    return people


def test_by_default_libraries_only_the_programs_imported_are_left_out(writer) -> None:
    _notebook_people(writer)
    rows = _rows(writer)
    assert set(rows) == {"pandas", "numpy", "python-dateutil"}
    assert all(row["users"] == 3 for row in rows.values())
    assert "program" not in rows["pandas"] and "program_users" not in rows["pandas"]


def test_with_programs_the_programs_imports_and_their_people_are_included(writer) -> None:
    _notebook_people(writer)
    rows = _rows(writer, programs=True)
    assert set(rows) == {"pandas", "numpy", "python-dateutil", "tornado", "jupyter-server"}
    tornado = rows["tornado"]
    assert (tornado["users"], tornado["program_users"], tornado["direct_users"]) == (3, 3, 0)
    assert (tornado["processes"], tornado["program"], tornado["direct"]) == (3, 3, 0)
    assert (rows["pandas"]["users"], rows["pandas"]["program_users"]) == (3, 0)
    now = writer.clock()
    with _reading(writer) as conn:
        answer = libraries_answer(
            conn, {"since": "6h", "include": "programs"}, now=now + 1, min_count=1, min_users=1
        )
        default = libraries_answer(conn, {"since": "6h"}, now=now + 1, min_count=1, min_users=1)
    assert answer["include"] == ["programs"] and default["include"] == []
    assert {row["name"] for row in answer["libraries"]} == set(rows)
    assert {row["name"] for row in default["libraries"]} == {"pandas", "numpy", "python-dateutil"}


def test_the_programs_answer_lists_programs_by_users_and_processes(writer) -> None:
    _notebook_people(writer)
    no_person = use_datagram_2(ENV, [], None, program=("pytest", "8.2.0", "env"))
    ingest(writer, _at(START + 60, [no_person] * 9))
    now = writer.clock()
    with _reading(writer) as conn:
        progs = programs(conn, START, now + 1, now=now)["programs"]
    assert [(p["name"], p["users"], p["processes"]) for p in progs] == [
        ("jupyterlab", 3, 3),
        ("pip", 1, 2),
        ("pytest", None, 9),
    ]
    assert progs[0]["versions"] == [{"version": "4.2.0", "users": 3, "processes": 3}]


def test_a_library_people_claimed_from_the_program_counts_as_theirs(writer) -> None:
    """The program's machinery imported numpy first; a cell of each person then imports it
    (``claimed``): it is people's code's, directly, by those people."""
    people = _people(2, seed=14)
    first = [("numpy", "1.26.4", "program", "env")]
    claimed = [("numpy", "1.26.4", "claimed", "env")]
    datagrams = []
    for person in people:
        datagrams.append(use_datagram_2(ENV, first, person, program=JUPYTER_LAB))
        datagrams.append(use_datagram_2(ENV, claimed, person, seq=1))
    # A third person's server only: its program used numpy, nobody's code did.
    (server_only,) = _people(1, seed=15)
    datagrams.append(use_datagram_2(ENV, first, server_only, program=JUPYTER_LAB))
    ingest(writer, _at(START + 60, datagrams))
    numpy = _rows(writer)["numpy"]
    assert (numpy["users"], numpy["direct_users"]) == (2, 2)
    assert (numpy["processes"], numpy["direct"]) == (2, 2)
    with_programs = _rows(writer, programs=True)["numpy"]
    assert (with_programs["users"], with_programs["program_users"]) == (3, 3)
    assert (with_programs["processes"], with_programs["program"]) == (3, 1)


# -- privacy: min_users ------------------------------------------------------------------------


def test_min_users_hides_the_counts_of_rows_fewer_people_used(writer) -> None:
    people = _people(3, seed=16)
    datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, p) for p in people]
    datagrams += [use_datagram_2(ENV, [("requests", "2.32.3", "direct", "env")], people[0])] * 20
    datagrams += [use_datagram(ENV, [("six", "1.16.0", "direct", "env")])] * 4
    ingest(writer, _at(START + 60, datagrams))
    now = writer.clock() + 1
    with _reading(writer) as conn:
        shown = libraries_answer(conn, {"since": "6h"}, now=now, min_count=1, min_users=3)
        open_answer = libraries_answer(conn, {"since": "6h"}, now=now, min_count=1, min_users=1)
        strict = libraries_answer(conn, {"since": "6h"}, now=now, min_count=1, min_users=4)
    rows = by_name(shown["libraries"])
    assert shown["min_users"] == 3
    assert (rows["pandas"]["users"], rows["pandas"]["processes"]) == (3, 3)
    hidden = "fewer than 3 people"
    assert rows["requests"]["users"] == rows["requests"]["processes"] == hidden
    assert rows["requests"]["direct"] == rows["requests"]["direct_users"] == hidden
    assert 20 not in rows["requests"].values() and 1 not in rows["requests"].values()
    # Unknown people: min_count alone decides.
    assert (rows["six"]["users"], rows["six"]["processes"]) == (None, 4)
    assert by_name(open_answer["libraries"])["requests"]["processes"] == 20
    assert by_name(strict["libraries"])["pandas"]["processes"] == "fewer than 4 people"
    # Hidden rows reveal nothing by their place: after every row shown with people.
    names = [row["name"] for row in shown["libraries"]]
    assert names.index("requests") > max(names.index(n) for n in ("pandas", "numpy"))


def test_an_origin_filter_does_not_lift_min_users(writer) -> None:
    """The sketches have no origin, so with ``origin`` the users are unknown; the people of
    the row without the filter are still at most that few, and its counts stay hidden."""
    (person,) = _people(1, seed=27)
    lib = [("requests", "2.32.3", "direct", "env")]
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, person)] * 20))
    now = writer.clock() + 1
    with _reading(writer) as conn:
        for params in ({"since": "6h"}, {"since": "6h", "origin": "env"}):
            answer = libraries_answer(conn, params, now=now, min_count=1, min_users=3)
            requests = by_name(answer["libraries"])["requests"]
            assert requests["processes"] == "fewer than 3 people", params


def test_min_users_hides_user_installed_libraries_of_few_people(writer) -> None:
    """A library from one person's user site (pip install --user), 20 processes: the cell
    min_count hides when small is hidden by min_users as well."""
    people = _people(3, seed=28)
    mine = [("mytool", "0.3", "direct", "user")]
    shared = [("polars", "1.0", "direct", "user")]
    datagrams = [use_datagram_2(ENV, mine, people[0])] * 20
    datagrams += [use_datagram_2(ENV, shared, p) for p in people]
    ingest(writer, _at(START + 60, datagrams))
    now = writer.clock() + 1
    with _reading(writer) as conn:
        answer = user_installed_answer(conn, {"since": "6h"}, now=now, min_count=1, min_users=3)
    rows = by_name(answer["libraries"])
    assert rows["polars"]["processes"] == 3
    assert rows["mytool"]["processes"] == "fewer than 3 people"


def test_min_users_hides_direct_counts_of_few_direct_people(writer) -> None:
    people = _people(4, seed=17)
    datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, p) for p in people]
    datagrams.append(use_datagram_2(ENV, [("numpy", "1.26.4", "direct", "env")], people[0]))
    ingest(writer, _at(START + 60, datagrams))
    now = writer.clock() + 1
    with _reading(writer) as conn:
        answer = libraries_answer(conn, {"since": "6h"}, now=now, min_count=1, min_users=2)
    numpy = by_name(answer["libraries"])["numpy"]
    assert (numpy["users"], numpy["processes"], numpy["transitive"]) == (4, 5, 4)
    assert numpy["direct"] == numpy["direct_users"] == "fewer than 2 people"


def test_min_users_hides_programs_fewer_people_ran(writer) -> None:
    _notebook_people(writer)
    now = writer.clock() + 1
    with _reading(writer) as conn:
        answer = programs_answer(conn, {"since": "6h"}, now=now, min_count=1, min_users=2)
    rows = by_name(answer["programs"])
    assert (rows["jupyterlab"]["users"], rows["jupyterlab"]["processes"]) == (3, 3)
    assert rows["pip"]["users"] == rows["pip"]["processes"] == "fewer than 2 people"
    assert rows["pip"]["versions"][0]["processes"] == "fewer than 2 people"
    assert answer["min_users"] == 2


# -- filters -----------------------------------------------------------------------------------


def test_filters_by_environment_and_labels_apply_to_users(writer) -> None:
    people = _people(5, seed=18)
    datagrams = [use_datagram_2("img:a", PANDAS_PROCESS, p, labels=RESEARCH) for p in people[:3]]
    datagrams += [use_datagram_2("img:b", PANDAS_PROCESS, p, labels=TEACHING) for p in people[2:]]
    datagrams += [use_datagram_2("img:b", PANDAS_PROCESS, people[4], labels=RESEARCH)] * 3
    ingest(writer, _at(START + 60, datagrams))
    assert _rows(writer)["pandas"]["users"] == 5
    assert _rows(writer, env="img:a")["pandas"]["users"] == 3
    assert _rows(writer, env="img:b")["pandas"]["users"] == 3
    research = _rows(writer, labels=[("hub", "research")])["pandas"]
    assert (research["users"], research["processes"]) == (4, 6)
    assert _rows(writer, labels=[("hub", "teaching")])["pandas"]["users"] == 3
    both = _rows(writer, env="img:b", labels=[("hub", "research")])["pandas"]
    assert (both["users"], both["processes"]) == (1, 3)
    assert _rows(writer, env="img:c") == {}
    # The sketches keep the records' origin: an origin filter counts its people.
    assert _rows(writer, origin="env")["pandas"]["users"] == 5
    assert "pandas" not in _rows(writer, origin="user")


# -- what is stored ----------------------------------------------------------------------------


def _blobs(path: Path) -> list[tuple[str, int, bytes]]:
    conn = sqlite3.connect(path)
    try:
        return [
            (table, tier, blob)
            for table in ("sketches_by_source", "sketches_by_library")
            for tier, blob in conn.execute(f"SELECT tier, registers FROM {table}")
        ]
    finally:
        conn.close()


def test_stored_sketches_are_bounded_however_many_people(store_writer, writer, fake_clock) -> None:
    people = _people(8000, seed=19)
    lib = [("numpy", "2.1.0", "direct", "env")]
    ingest(writer, _at(START + 60, [use_datagram_2(ENV, lib, p) for p in people[:5000]]))
    ingest(writer, _at(START + 120, [use_datagram_2(ENV, lib, p) for p in people[3000:]]))
    numpy = _rows(writer)["numpy"]
    assert abs(numpy["users"] - 8000) <= 240 and numpy["processes"] == 10000
    writer.stop()
    fake_clock.advance(HOUR)
    store_writer(path=writer.path).stop()  # rolls the bucket up into every tier
    blobs = _blobs(writer.path)
    assert {(table, tier) for table, tier, _blob in blobs} == {
        ("sketches_by_source", 0),
        ("sketches_by_source", 1),
        ("sketches_by_source", 2),
        ("sketches_by_library", 0),
        ("sketches_by_library", 1),
        ("sketches_by_library", 2),
    }
    assert max(len(blob) for _table, _tier, blob in blobs) <= MAX_ENCODED == 16385
    assert {blob[:1] for _table, _tier, blob in blobs} == {b"D"}  # dense: at the bound
    conn = sqlite3.connect(writer.path)
    try:
        (too_long,) = conn.execute(
            "SELECT COUNT(*) FROM (SELECT registers FROM sketches_by_source UNION ALL "
            "SELECT registers FROM sketches_by_library) WHERE length(registers) > ?",
            (MAX_ENCODED,),
        ).fetchone()
    finally:
        conn.close()
    assert too_long == 0


def _table_contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in tables}
    finally:
        conn.close()


def test_nothing_stored_is_a_persons_secret_or_field(
    store_writer, fake_clock, tmp_path: Path
) -> None:
    fake_clock.now = START
    people = _people(20, seed=20)
    names = ["pandas", "numpy", "python-dateutil", "jupyterlab", "tornado", "jupyter-server"]
    sent = {person_of(p, name) for p in people for name in names}
    secrets = [(p, p.hex()) for p in people]
    path = tmp_path / "private.sqlite"
    writer = store_writer(path=path)
    datagrams = [use_datagram_2(ENV, SERVER_IMPORTS, p, program=JUPYTER_LAB) for p in people]
    datagrams += [use_datagram_2(ENV, PANDAS_PROCESS, p, labels=RESEARCH) for p in people]
    ingest(writer, _at(START + 60, datagrams))
    fake_clock.advance(HOUR)  # rolled up too
    writer.stop()
    store_writer(path=path).stop()
    contents = _table_contents(path)
    assert contents["sketches_by_library"] and contents["sketches_by_source"]
    found = []
    for table, rows in contents.items():
        for row in rows:
            for value in row:
                if isinstance(value, str):
                    hits = [f for f in sent if f in value] + [h for _b, h in secrets if h in value]
                elif isinstance(value, bytes):
                    hits = [b.hex() for b, h in secrets if b in value or h.encode() in value]
                    hits += [f for f in sent if f.encode() in value]
                else:
                    continue
                if hits:
                    found.append((table, value[:40], hits[:3]))
    assert found == []


def test_the_rows_stored_do_not_grow_with_the_people(store_writer, fake_clock, tmp_path) -> None:
    """Fifty people or one person's fifty processes: the same rows in every table (only the
    sketches' registers differ), so nothing is kept per person."""
    fake_clock.now = START
    counts = []
    for label, people in (("one", _people(1, seed=21) * 50), ("many", _people(50, seed=22))):
        path = tmp_path / f"{label}.sqlite"
        writer = store_writer(path=path)
        datagrams = [use_datagram_2(ENV, PANDAS_PROCESS, p, program=JUPYTER_LAB) for p in people]
        ingest(writer, _at(START + 60, datagrams))
        writer.stop()
        counts.append({table: len(rows) for table, rows in _table_contents(path).items()})
    assert counts[0] == counts[1]


def _one_persons_library_importing_numpy(writer: Any) -> float:
    """Three people import numpy 2.1.0; a fourth person's own library (mylib) imports numpy
    1.26.4 in 20 processes. Returns the "now" of the answers."""
    people = _people(4, seed=23)
    numpy = [("numpy", "2.1.0", "direct", "env")]
    datagrams = [use_datagram_2(ENV, numpy, p) for p in people[:3]]
    mine = [("mylib", "0.1", "direct", "user"), ("numpy", "1.26.4", "transitive", "env", "mylib")]
    datagrams += [use_datagram_2(ENV, mine, people[3])] * 20
    ingest(writer, _at(START + 60, datagrams))
    return float(writer.clock() + 1)


def _numpy_answer(writer: Any, now: float, **kwargs: Any) -> dict[str, Any]:
    with _reading(writer) as conn:
        answer = library_answer(
            conn, "numpy", {"since": "6h"}, now=now, min_count=1, min_users=3, **kwargs
        )
    assert answer is not None
    return answer


HIDDEN_3 = "fewer than 3 people"


def test_min_users_hides_the_versions_and_environments_fewer_people_used(writer) -> None:
    now = _one_persons_library_importing_numpy(writer)
    detail = _numpy_answer(writer, now)
    assert (detail["users"], detail["processes"]) == (4, 23)
    versions = by_name(detail["versions"], "version")
    assert (versions["2.1.0"]["users"], versions["2.1.0"]["processes"]) == (3, 3)
    assert versions["1.26.4"]["users"] == versions["1.26.4"]["processes"] == HIDDEN_3
    assert [(e["env"], e["users"]) for e in detail["environments"]] == [(ENV, 4)]
    with _reading(writer) as conn:
        answer = libraries_answer(conn, {"since": "6h"}, now=now, min_count=1, min_users=3)
    assert by_name(answer["libraries"])["mylib"]["processes"] == HIDDEN_3


def test_min_users_hides_the_other_versions_row_of_few_people(writer) -> None:
    """The versions the dashboard does not list are summed in one row: one person's 20
    processes there are the cell hidden in the version's own row."""
    now = _one_persons_library_importing_numpy(writer)
    folded = _numpy_answer(writer, now, versions={"2.1.0"})
    assert by_name(folded["versions"], "version")["other versions"]["processes"] == HIDDEN_3


def test_min_users_hides_the_importers_of_few_people(writer) -> None:
    """mylib, one person's, imported numpy in 20 processes: hidden in mylib's own row, so
    hidden in numpy's importers too."""
    now = _one_persons_library_importing_numpy(writer)
    importers = by_name(_numpy_answer(writer, now)["importers"], "importer")
    assert importers["mylib"]["processes"] == HIDDEN_3


def test_sqlite_without_json_functions_stores_the_same_sketches(tmp_path: Path) -> None:
    """The writer's two ways of merging a job's people into the stored sketches (one JSON
    statement, or row by row) give the same rows: a bucket merged twice, rolled up, then late
    people for it, and the next bucket."""
    decode = make_decoder()
    people = _people(6, seed=24)
    first = [use_datagram_2(ENV, PANDAS_PROCESS, p, program=JUPYTER_LAB) for p in people[:3]]
    again = [use_datagram_2(ENV, PANDAS_PROCESS, p) for p in people[2:4]]
    late = [use_datagram_2(ENV, PANDAS_PROCESS, p, labels=RESEARCH) for p in people[3:]]

    def stored(use_json: bool) -> tuple[dict[str, list[tuple[Any, ...]]], Any]:
        path = tmp_path / f"json-{use_json}.sqlite"
        conn = connect_writer(path, now=T0)
        tiers = default_tiers()
        ingestor = Ingestor(load_catalog(conn), StoreSettings())
        for datagrams in (first, again):
            job = job_of(ingestor, [(T0 + 60, decode(d)) for d in datagrams])
            assert job is not None
            write_job(conn, job, tiers, read_rolled_until(conn) or 0, use_json=use_json)
        roll_up(conn, tiers, T0, T0 + 600)
        timed = [(T0 + 120, decode(d)) for d in late] + [(T0 + 700, decode(d)) for d in late]
        job = job_of(ingestor, timed)
        assert job is not None
        write_job(conn, job, tiers, T0 + 600, use_json=use_json)
        conn.close()
        reader = connect_readonly(path)
        try:
            day = by_name(libraries(reader, T0, T0 + DAY, now=T0 + DAY)["libraries"])
            month = by_name(libraries(reader, T0 - 29 * DAY, T0 + DAY, now=T0 + DAY)["libraries"])
        finally:
            reader.close()
        tables = _table_contents(path)
        sketches = {name: sorted(rows) for name, rows in tables.items() if "sketch" in name}
        return sketches, (day["pandas"]["users"], month["pandas"]["users"])

    with_json, without_json = stored(True), stored(False)
    assert with_json == without_json
    assert with_json[1] == (6, 6)


def _as_schema_1(path: Path) -> None:
    """Make the database at ``path`` what popcon's schema 1 stored: usage tables without the
    ``program`` and ``claimed`` columns, no sketches of people, no programs."""
    conn = sqlite3.connect(path)
    try:
        for table, columns, key in (
            ("usage_by_source", "tier, source_id, bucket, lib_id, origin, version", None),
            ("usage_by_library", "tier, bucket, lib_id, origin", "tier, lib_id, bucket, origin"),
        ):
            kept = f"{columns}, direct, transitive, upgrade, unknown"
            typed = ", ".join(
                f"{c} {'TEXT' if c == 'version' else 'INTEGER'} NOT NULL" for c in kept.split(", ")
            )
            conn.execute(
                f"CREATE TABLE old_{table} ({typed}, PRIMARY KEY ({key or columns})) WITHOUT ROWID"
            )
            conn.execute(f"INSERT INTO old_{table} SELECT {kept} FROM {table}")
            conn.execute(f"DROP TABLE {table}")
            conn.execute(f"ALTER TABLE old_{table} RENAME TO {table}")
        for table in ("sketches_by_source", "sketches_by_library", "programs"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.commit()
    finally:
        conn.close()


def test_a_database_of_schema_1_keeps_its_counts_and_gains_people(
    store_writer, fake_clock, tmp_path: Path
) -> None:
    fake_clock.now = START
    path = tmp_path / "schema1.sqlite"
    writer = store_writer(path=path)
    scipy = [("scipy", "1.14.1", "direct", "env")]
    ingest(writer, _at(START + 60, [use_datagram(ENV, scipy)] * 4))
    writer.stop()
    _as_schema_1(path)
    writer = store_writer(path=path)
    people = _people(2, seed=26)
    ingest(writer, _at(START + 120, [use_datagram_2(ENV, PANDAS_PROCESS, p) for p in people]))
    ingest(writer, _at(START + 180, [use_datagram_2(ENV, scipy, people[0])]))
    rows = _rows(writer)
    assert (rows["pandas"]["users"], rows["pandas"]["processes"]) == (2, 2)
    assert (rows["scipy"]["users"], rows["scipy"]["processes"]) == (1, 5)
    writer.stop()
    fake_clock.advance(3 * DAY)
    writer = store_writer(path=path)
    rows = _rows(writer, since=4 * DAY)
    assert (rows["pandas"]["users"], rows["scipy"]["processes"]) == (2, 5)

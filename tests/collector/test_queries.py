"""Read-only answers: windows and tiers, filters, detail, unused, user-installed, totals."""

from __future__ import annotations

import sqlite3

import pytest
from collectors import ingest
from datagrams import PANDAS_PROCESS, inventory_datagrams, use_datagram
from timing import DAY, HOUR, T0

from popcon.server.query.connection import connect_readonly
from popcon.server.query.environments import environments, unused, user_installed
from popcon.server.query.libraries import libraries, library_detail
from popcon.server.query.params import QueryError
from popcon.server.query.totals import (
    datagram_totals,
    library_process_totals,
    library_version_totals,
    report_totals,
)
from popcon.server.storage.schema import RESULT_REASONS

RESEARCH = [("hub", "research"), ("zone", "eu")]
TEACHING = [("hub", "teaching")]
NOW = T0 + 40 * DAY + 12 * HOUR


@pytest.fixture
def sample(store_writer, fake_clock):
    """Two environments over 40 days; the clock stands at NOW."""
    fake_clock.now = NOW
    writer = store_writer()
    timed = []
    for _ in range(5):  # an hour ago, in img:a (research)
        timed.append((NOW - HOUR, use_datagram("img:a", PANDAS_PROCESS, labels=RESEARCH)))
    for _ in range(3):  # an hour ago, in img:b: numpy directly, from the user site
        timed.append(
            (
                NOW - HOUR,
                use_datagram("img:b", [("numpy", "2.0.0", "direct", "user")], labels=TEACHING),
            )
        )
    timed.append(
        (NOW - HOUR, use_datagram("img:b", [("polars", "1.0", "direct", "user")], labels=TEACHING))
    )
    # 10 days ago: scipy in img:a; 35 days ago: matplotlib in img:a.
    timed += [
        (
            NOW - 10 * DAY,
            use_datagram("img:a", [("scipy", "1.13.0", "direct", "env")], labels=RESEARCH),
        )
    ] * 2
    timed += [
        (
            NOW - 35 * DAY,
            use_datagram("img:a", [("matplotlib", "3.9.0", "direct", "env")], labels=RESEARCH),
        )
    ]
    # One process of img:a imports numpy itself later on: upgrade.
    timed.append(
        (
            NOW - HOUR,
            use_datagram("img:a", [("numpy", "1.26.4", "upgrade", "env")], seq=2, labels=RESEARCH),
        )
    )
    dists = [
        ("pandas", "2.2.2"),
        ("numpy", "1.26.4"),
        ("python-dateutil", "2.9.0"),
        ("scipy", "1.13.0"),
        ("matplotlib", "3.9.0"),
        ("tqdm", "4.66.0"),
    ]
    timed += [(NOW - 2 * HOUR, d) for d in inventory_datagrams("img:a", dists, parts=2)]
    timed += [(NOW - 2 * HOUR, b"junk"), (NOW - 2 * HOUR, b"popcon/1 use 0\n")]
    ingest(writer, timed)
    conn = connect_readonly(writer.path)
    yield conn
    conn.close()


def _names(answer: dict) -> dict:
    return {row["name"]: row for row in answer["libraries"]}


@pytest.mark.parametrize(
    ("since", "step", "start"),
    [
        (6 * HOUR, 600, "2026-12-12T06:00:00Z"),
        (24 * HOUR, 600, "2026-12-11T12:00:00Z"),
        (7 * DAY, 3600, "2026-12-05T12:00:00Z"),
        (30 * DAY, DAY, "2026-11-12T00:00:00Z"),
    ],
)
def test_a_window_is_answered_at_a_resolution_fitting_its_length(
    sample, since, step, start
) -> None:
    answer = libraries(sample, NOW - since, NOW, now=NOW)
    assert (answer["step"], answer["from"], answer["until"]) == (
        step,
        start,
        "2026-12-12T12:00:00Z",
    )


def test_libraries_are_sorted_by_processes_with_direct_and_transitive(sample) -> None:
    answer = libraries(sample, NOW - 6 * HOUR, NOW, now=NOW)
    assert answer["libraries"] == [
        {
            "name": "numpy",
            "users": None,
            "direct_users": None,
            "processes": 8,
            "direct": 4,
            "transitive": 4,
        },
        {
            "name": "pandas",
            "users": None,
            "direct_users": None,
            "processes": 5,
            "direct": 5,
            "transitive": 0,
        },
        {
            "name": "python-dateutil",
            "users": None,
            "direct_users": None,
            "processes": 5,
            "direct": 0,
            "transitive": 5,
        },
        {
            "name": "polars",
            "users": None,
            "direct_users": None,
            "processes": 1,
            "direct": 1,
            "transitive": 0,
        },
    ]
    month = _names(libraries(sample, NOW - 30 * DAY, NOW, now=NOW))
    assert month["scipy"]["processes"] == 2 and "matplotlib" not in month
    assert "matplotlib" in _names(libraries(sample, NOW - 40 * DAY, NOW, now=NOW))


def test_filters_restrict_what_is_counted(sample) -> None:
    window = (sample, NOW - 6 * HOUR, NOW)
    assert set(_names(libraries(*window, env="img:b", now=NOW))) == {"numpy", "polars"}
    by_label = libraries(*window, labels=[("hub", "research")], now=NOW)
    assert _names(by_label)["numpy"]["processes"] == 5
    assert (
        libraries(*window, labels=[("hub", "research"), ("zone", "us")], now=NOW)["libraries"] == []
    )
    direct = _names(libraries(*window, level="direct", now=NOW))
    assert direct["numpy"] == {
        "name": "numpy",
        "users": None,
        "direct_users": None,
        "processes": 4,
        "direct": 4,
        "transitive": 0,
    }
    assert "python-dateutil" not in direct
    transitive = _names(libraries(*window, level="transitive", now=NOW))
    assert transitive["numpy"]["processes"] == 4
    assert set(_names(libraries(*window, origin="user", now=NOW))) == {"numpy", "polars"}
    assert libraries(*window, env="nowhere", now=NOW)["libraries"] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"level": "sideways"}, "^level:"), ({"origin": "site"}, "^origin:")],
)
def test_bad_filters_are_refused_with_a_reason(sample, kwargs, message) -> None:
    with pytest.raises(QueryError, match=message):
        libraries(sample, NOW - HOUR, NOW, now=NOW, **kwargs)


def test_an_empty_window_is_refused(sample) -> None:
    with pytest.raises(QueryError, match=r"^from:"):
        libraries(sample, NOW, NOW - HOUR, now=NOW)


def test_library_detail_has_series_versions_importers_and_environments(sample) -> None:
    detail = library_detail(sample, "numpy", NOW - 3 * HOUR, NOW, now=NOW)
    assert detail is not None
    assert detail["step"] == 600
    assert len(detail["series"]) == 18
    assert sum(point["processes"] for point in detail["series"]) == 8
    assert detail["series"][12] == {
        "time": "2026-12-12T11:00:00Z",
        "users": None,
        "processes": 8,
        "direct": 4,
        "transitive": 4,
    }
    assert detail["versions"] == [
        {"version": "1.26.4", "users": None, "processes": 5},
        {"version": "2.0.0", "users": None, "processes": 3},
    ]
    assert detail["importers"] == [
        {"importer": "pandas", "users": None, "importer_users": None, "processes": 5}
    ]
    assert detail["environments"] == [
        {"env": "img:a", "users": None, "processes": 5, "direct": 1, "transitive": 4},
        {"env": "img:b", "users": None, "processes": 3, "direct": 3, "transitive": 0},
    ]
    only_b = library_detail(sample, "numpy", NOW - 3 * HOUR, NOW, env="img:b", now=NOW)
    assert only_b is not None and only_b["importers"] == [] and len(only_b["environments"]) == 1
    hourly = library_detail(sample, "numpy", NOW - 6 * HOUR, NOW, step=HOUR, now=NOW)
    assert hourly is not None and hourly["step"] == HOUR and len(hourly["series"]) == 6
    assert library_detail(sample, "nothing-like-it", NOW - HOUR, NOW, now=NOW) is None
    # Ten-minute steps are not kept for 39 days back: the step widens to what is kept.
    old = library_detail(sample, "scipy", NOW - 39 * DAY, NOW, step=600, now=NOW)
    assert old is not None and old["step"] == DAY and len(old["series"]) == 40
    assert sum(point["processes"] for point in old["series"]) == 2


#: What ``unused`` says of a library whose inventory's dist line does not say why.
NOT_SAID = {"why": "unknown", "tool": False, "required_by": [], "needed_by": [], "removable": None}


def test_unused_lists_installed_libraries_no_process_imported(sample) -> None:
    month = unused(sample, NOW - 30 * DAY, NOW, now=NOW)
    assert month["environments"] == [
        {
            "env": "img:a",
            "inventory_id": "0badcafe",
            "inventory_at": "2026-12-12T10:00:00Z",
            "reasons_known": False,
            "libraries": [
                {"name": "matplotlib", "version": "3.9.0", **NOT_SAID},
                {"name": "tqdm", "version": "4.66.0", **NOT_SAID},
            ],
        }
    ]
    week = unused(sample, NOW - 7 * DAY, NOW, env="img:a", now=NOW)
    assert [r["name"] for r in week["environments"][0]["libraries"]] == [
        "matplotlib",
        "scipy",
        "tqdm",
    ]
    assert unused(sample, NOW - 7 * DAY, NOW, env="img:b", now=NOW)["environments"] == []


def test_user_installed_lists_user_site_libraries_missing_from_the_inventory(sample) -> None:
    answer = user_installed(sample, NOW - 30 * DAY, NOW, now=NOW)
    assert answer["libraries"] == [
        {
            "name": "numpy",
            "env": "img:b",
            "users": None,
            "processes": 3,
            "versions": [{"version": "2.0.0", "users": None, "processes": 3}],
            "env_has_inventory": False,
        },
        {
            "name": "polars",
            "env": "img:b",
            "users": None,
            "processes": 1,
            "versions": [{"version": "1.0", "users": None, "processes": 1}],
            "env_has_inventory": False,
        },
    ]


def test_environments_list_labels_last_seen_and_inventory(sample) -> None:
    envs = {row["env"]: row for row in environments(sample, now=NOW)}
    assert envs["img:a"]["labels"] == [{"hub": "research", "zone": "eu"}]
    assert envs["img:a"]["inventory_size"] == 6
    assert envs["img:a"]["last_seen"] == "2026-12-12T11:00:00Z"
    assert envs["img:a"]["first_seen"] == "2026-11-07T12:00:00Z"
    assert envs["img:a"]["processes"] == 8 and envs["img:a"]["py"] == "3.11"
    assert envs["img:b"]["inventory_at"] is None and envs["img:b"]["processes"] == 4


def test_datagram_totals_name_every_result(sample) -> None:
    totals = datagram_totals(sample)
    assert list(totals) == list(RESULT_REASONS)
    assert (totals["ok"], totals["unknown_format"], totals["missing_env"]) == (15, 1, 1)


def test_totals_for_prometheus_never_go_down(store_writer, fake_clock, tmp_path) -> None:
    path = tmp_path / "totals.sqlite"
    seen = []

    def snapshot() -> tuple:
        conn = connect_readonly(path)
        try:
            return (
                {(t.library, t.env, t.level): t.records for t in library_process_totals(conn)},
                {(t.library, t.version, t.env): t.processes for t in library_version_totals(conn)},
                {t.env: t.processes for t in report_totals(conn)},
            )
        finally:
            conn.close()

    for step in range(4):
        writer = store_writer(path=path)
        ingest(
            writer,
            [(fake_clock() + 10, use_datagram("img", PANDAS_PROCESS)) for _ in range(step + 1)],
        )
        seen.append(snapshot())
        fake_clock.advance(25 * HOUR)  # buckets close and roll up; the writer restarts
        writer.stop()
    for earlier, later in zip(seen, seen[1:]):
        for table_before, table_after in zip(earlier, later):
            assert all(table_after[key] >= count for key, count in table_before.items())
    assert seen[-1][0][("pandas", "img", "direct")] == 1 + 2 + 3 + 4
    assert seen[-1][1][("numpy", "1.26.4", "img")] == 10
    assert seen[-1][2] == {"img": 10}


def test_readers_cannot_write(sample) -> None:
    with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only"):
        sample.execute("DELETE FROM libs")


def test_a_missing_database_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no popcon database"):
        connect_readonly(tmp_path / "none.sqlite")

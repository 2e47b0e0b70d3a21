"""Totals since each series began, for the Prometheus counters of ``/metrics``.

Each total is the stored total of the rolled-up buckets (the ``total_*`` tables, which only
grow and survive restarts) plus the finest buckets not rolled up yet, so a counter read from
here never goes down (``docs/collector-storage.md``).
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from popcon.server.query.connection import snapshot
from popcon.server.query.sql import ALL_SOURCES, SUMS
from popcon.server.storage.schema import LEVEL_COLUMNS, RESULT_REASONS

_LIVE = f"u.tier = 0 AND u.{ALL_SOURCES} AND u.bucket >= ?"


class LibraryTotal(NamedTuple):
    library: str
    env: str
    level: str  # one of LEVEL_COLUMNS
    records: int  # raw records of that level (one per process)


class VersionTotal(NamedTuple):
    library: str
    version: str  # "-" when unknown
    env: str
    processes: int  # direct + transitive + unknown + program records


class ReportTotal(NamedTuple):
    env: str
    processes: int  # seq 0 datagrams and statsd ``reports`` lines


def library_process_totals(conn: sqlite3.Connection) -> list[LibraryTotal]:
    """Raw record totals per (library, env, level) since the library was first seen in the env
    (within the retention). Processes = direct + transitive + unknown + program (not upgrade
    or claimed)."""
    totals: dict[tuple[str, str, int], int] = {}
    with snapshot(conn) as rolled:
        for lib, env, level, count in conn.execute(
            "SELECT l.name, e.name, t.level, t.count FROM total_usage t "
            "JOIN libs l ON l.id = t.lib_id JOIN envs e ON e.id = t.env_id"
        ):
            totals[(lib, env, level)] = count
        for lib, env, *counts in conn.execute(
            f"SELECT l.name, e.name, {SUMS} FROM usage_by_source u "
            "JOIN sources s ON s.id = u.source_id JOIN envs e ON e.id = s.env_id "
            f"JOIN libs l ON l.id = u.lib_id WHERE {_LIVE} GROUP BY e.id, l.id",
            (rolled,),
        ):
            for level, count in enumerate(counts):
                if count:
                    totals[(lib, env, level)] = totals.get((lib, env, level), 0) + count
    return [
        LibraryTotal(lib, env, LEVEL_COLUMNS[level], count)
        for (lib, env, level), count in sorted(totals.items())
    ]


def library_version_totals(conn: sqlite3.Connection) -> list[VersionTotal]:
    """Processes (direct + transitive + unknown + program records) per (library, version,
    env)."""
    totals: dict[tuple[str, str, str], int] = {}
    with snapshot(conn) as rolled:
        for lib, version, env, count in conn.execute(
            "SELECT l.name, t.version, e.name, t.count FROM total_versions t "
            "JOIN libs l ON l.id = t.lib_id JOIN envs e ON e.id = t.env_id"
        ):
            totals[(lib, version, env)] = count
        for lib, version, env, count in conn.execute(
            "SELECT l.name, u.version, e.name, "
            "SUM(u.direct + u.transitive + u.unknown + u.program) "
            "FROM usage_by_source u JOIN sources s ON s.id = u.source_id "
            "JOIN envs e ON e.id = s.env_id JOIN libs l ON l.id = u.lib_id "
            f"WHERE {_LIVE} GROUP BY e.id, l.id, u.version",
            (rolled,),
        ):
            if count:
                totals[(lib, version, env)] = totals.get((lib, version, env), 0) + count
    return [VersionTotal(*key, count) for key, count in sorted(totals.items())]


def report_totals(conn: sqlite3.Connection) -> list[ReportTotal]:
    """Processes per env (``popcon_reports_total``)."""
    totals: dict[str, int] = {}
    with snapshot(conn) as rolled:
        for env, count in conn.execute(
            "SELECT e.name, t.count FROM total_reports t JOIN envs e ON e.id = t.env_id"
        ):
            totals[env] = count
        for env, count in conn.execute(
            "SELECT e.name, SUM(u.count) FROM reports u JOIN sources s ON s.id = u.source_id "
            f"JOIN envs e ON e.id = s.env_id WHERE {_LIVE} GROUP BY e.id",
            (rolled,),
        ):
            totals[env] = totals.get(env, 0) + count
    return [ReportTotal(env, count) for env, count in sorted(totals.items())]


def datagram_totals(conn: sqlite3.Connection) -> dict[str, int]:
    """Datagrams per result since the database was created: every reason of
    ``schema.RESULT_REASONS`` (0 when never seen), ``ok`` first."""
    totals = dict.fromkeys(RESULT_REASONS, 0)
    for reason, count in conn.execute("SELECT reason, count FROM datagram_results"):
        totals[reason] = count
    return totals

"""The answer about programs: which programs processes ran (``prog`` records: a console script
or ``python -m`` of an installed distribution), by how many people and processes.

Like :mod:`~.libraries`, it takes a read-only connection and returns JSON-ready dicts with
**raw** counts.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from popcon.server.query.connection import snapshot
from popcon.server.query.libraries import by_users
from popcon.server.query.people import RUNS, Kinds, gather, kinds_where, merge_into, users
from popcon.server.query.sql import SKETCH_TABLES, Labels, source_ids, usage_statements
from popcon.server.query.window import answered_span

#: The table of programs' processes, per label set (there is no per-library one).
PROGRAM_TABLES = ("programs", "programs")


def programs(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    *,
    env: str | None = None,
    labels: Labels | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Programs run in ``[start, end)``, most users (then processes) first.

    ``{"from", "until", "step", "programs": [{"name", "users", "processes", "versions":
    [{"version", "users", "processes"}]}]}``; ``users`` None where unknown.
    """
    with snapshot(conn) as rolled:
        counted = answered_span(conn, start, end, now)
        sources = source_ids(conn, env, labels)
        counts: dict[int, dict[str, int]] = {}
        for statement in usage_statements(
            counted,
            rolled,
            select="lib_id, version, SUM(count)",
            sources=sources,
            by_source=True,
            group_by="lib_id, version",
            tables=PROGRAM_TABLES,
        ):
            for prog_id, version, count in conn.execute(statement):
                versions = counts.setdefault(prog_id, {})
                versions[version] = versions.get(version, 0) + count
        people: dict[tuple[Any, ...], Kinds] = {}
        totals: dict[int, Kinds] = {}
        if counts:
            people = gather(
                conn,
                usage_statements(
                    counted,
                    rolled,
                    select="lib_id, version, kind, registers",
                    sources=sources,
                    by_source=True,
                    where=kinds_where(RUNS),
                    tables=SKETCH_TABLES,
                ),
                key_of=2,
            )
            for (prog_id, _version), sketches in people.items():
                merge_into(totals, prog_id, sketches)
        names = dict(conn.execute("SELECT id, name FROM libs")) if counts else {}
    rows = []
    for prog_id, versions in counts.items():
        name = names.get(prog_id)
        if name is None:
            continue
        version_rows: list[dict[str, Any]] = [
            {
                "version": version,
                "users": users(people.get((prog_id, version)), RUNS),
                "processes": count,
            }
            for version, count in versions.items()
        ]
        version_rows.sort(key=lambda r: (-int(r["processes"]), str(r["version"])))
        rows.append(
            {
                "name": name,
                "users": users(totals.get(prog_id), RUNS),
                "processes": sum(versions.values()),
                "versions": version_rows,
            }
        )
    rows.sort(key=by_users)
    return {**counted.window, "step": counted.width, "programs": rows}

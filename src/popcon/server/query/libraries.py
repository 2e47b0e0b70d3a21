"""The answers about libraries: which were used in a window (``top``), and one in detail.

Both take a read-only connection (:func:`~.connection.connect_readonly`) and a window as epoch
seconds, and return JSON-ready dicts with **raw** counts (:mod:`~.counting`); hiding small
counts is the output layer's (:mod:`~.privacy`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from popcon.protocol import UNKNOWN
from popcon.server.query.connection import snapshot
from popcon.server.query.counting import check_level, origin_code, parts, parts_of
from popcon.server.query.params import QueryError, ceil_to, floor_to, iso
from popcon.server.query.sql import SUMS, Labels, edges, source_ids, usage, usage_statements
from popcon.server.query.window import (
    MAX_POINTS,
    answered_span,
    check_window,
    series_tier,
    span,
    utcnow,
)
from popcon.server.storage.schema import read_tiers


def libraries(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    *,
    env: str | None = None,
    labels: Labels | None = None,
    level: str | None = None,
    origin: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Libraries used in ``[start, end)``, most processes first.

    ``{"from", "until", "step", "libraries": [{"name", "processes", "direct", "transitive"}]}``;
    ``step`` is the bucket width the window was counted in. Filters: ``env`` (name), ``labels``
    (pairs that must all match), ``level`` (direct/transitive/unknown), ``origin`` (env/user).
    """
    check_level(level)
    code = origin_code(origin)
    with snapshot(conn) as rolled:
        counted = answered_span(conn, start, end, now)
        sources = source_ids(conn, env, labels)
        statements = usage_statements(
            counted,
            rolled,
            select=f"lib_id, {SUMS}",
            sources=sources,
            where=f"origin = {code}" if code is not None else "",
            group_by="lib_id",
        )
        sums: dict[int, list[int]] = {}
        for statement in statements:
            for lib_id, *counts in conn.execute(statement):
                row = sums.get(lib_id)
                if row is None:
                    sums[lib_id] = counts
                else:
                    for i, value in enumerate(counts):
                        row[i] += value
        names = dict(conn.execute("SELECT id, name FROM libs")) if sums else {}
    ranked = []
    for lib_id, (d, t, u, k) in sums.items():
        direct = d + u
        transitive = t - u if t > u else 0
        if level is not None:
            counts = parts(d, t, u, k, level)
            direct, transitive, k = counts["direct"], counts["transitive"], 0
            if level == UNKNOWN:
                k = counts["processes"]
        processes = direct + transitive + k
        name = names.get(lib_id)
        if processes and name is not None:
            ranked.append((-processes, name, direct, transitive))
    ranked.sort()
    result = [
        {"name": name, "processes": -negative, "direct": direct, "transitive": transitive}
        for negative, name, direct, transitive in ranked
    ]
    return {**counted.window, "step": counted.width, "libraries": result}


def library_detail(
    conn: sqlite3.Connection,
    name: str,
    start: float,
    end: float,
    *,
    step: int | None = None,
    env: str | None = None,
    now: float | None = None,
) -> dict[str, Any] | None:
    """One library in ``[start, end)``; ``None`` when the library is not known at all.

    ``{"name", "from", "until", "step", "series": [{"time", "processes", "direct",
    "transitive"}], "versions": [{"version", "processes"}], "importers": [{"importer",
    "processes"}], "environments": [{"env", "processes", "direct", "transitive"}]}``.
    ``series`` has one point per ``step`` seconds (zeros included; ``time`` is the start of
    the step); ``step`` defaults to the bucket width used and is widened to a multiple of it
    when the window is older than finer buckets are kept. ``importers``: the distributions
    whose code imported it (transitive records). ``env`` restricts everything to one
    environment.
    """
    check_window(start, end)
    now = utcnow() if now is None else now
    with snapshot(conn) as rolled:
        row = conn.execute("SELECT id FROM libs WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        lib_id = int(row[0])
        tiers = read_tiers(conn)
        index, step = series_tier(tiers, start, end, now, step)
        counted = span(tiers, index, start, end, now)
        first, last = floor_to(counted.low, step), ceil_to(counted.high, step)
        if (last - first) // step > MAX_POINTS:
            raise QueryError(f"step: the window would have more than {MAX_POINTS} points")
        sources = source_ids(conn, env, None)
        env_id = None
        if env is not None:
            found = conn.execute("SELECT id FROM envs WHERE name = ?", (env,)).fetchone()
            env_id = int(found[0]) if found else -1
        lib_where = f"lib_id = {lib_id}"

        points: dict[int, list[int]] = {}
        for bucket, d, t, u, k in conn.execute(
            f"SELECT bucket, {SUMS} FROM ("
            + usage(counted, rolled, columns="bucket", sources=sources, where=lib_where)
            + ") GROUP BY bucket"
        ):
            sums = points.setdefault(floor_to(bucket, step), [0, 0, 0, 0])
            for i, value in enumerate((d, t, u, k)):
                sums[i] += value
        series = [
            {"time": iso(moment), **parts_of(points.get(moment, (0, 0, 0, 0)))}
            for moment in range(first, last, step)
        ]

        by_source = usage(
            counted,
            rolled,
            columns="source_id, version",
            sources=sources,
            by_source=True,
            where=lib_where,
        )
        versions: dict[str, list[int]] = {}
        per_env: dict[str, list[int]] = {}
        for source_env, version, d, t, u, k in conn.execute(
            f"SELECT e.name, x.version, {SUMS} FROM ({by_source}) AS x "
            "JOIN sources s ON s.id = x.source_id JOIN envs e ON e.id = s.env_id "
            "GROUP BY e.id, x.version"
        ):
            for table, key in ((versions, version), (per_env, source_env)):
                sums = table.setdefault(key, [0, 0, 0, 0])
                for i, value in enumerate((d, t, u, k)):
                    sums[i] += value

        edge_where = lib_where + ("" if env_id is None else f" AND env_id = {env_id}")
        importers: list[dict[str, Any]] = [
            {"importer": importer, "processes": count}
            for importer, count in conn.execute(
                "SELECT l.name, x.n FROM (SELECT importer_id, SUM(count) AS n FROM ("
                + edges(counted, rolled, edge_where)
                + ") GROUP BY importer_id) AS x JOIN libs l ON l.id = x.importer_id"
            )
        ]
    version_rows: list[dict[str, Any]] = [
        {"version": version, "processes": parts_of(sums)["processes"]}
        for version, sums in versions.items()
    ]
    version_rows.sort(key=lambda r: (-r["processes"], r["version"]))
    importers.sort(key=lambda r: (-r["processes"], r["importer"]))
    environments: list[dict[str, Any]] = [
        {"env": env_name, **parts_of(sums)} for env_name, sums in per_env.items()
    ]
    environments.sort(key=lambda r: (-r["processes"], r["env"]))
    return {
        "name": name,
        **counted.window,
        "step": step,
        "series": series,
        "versions": version_rows,
        "importers": importers,
        "environments": environments,
    }

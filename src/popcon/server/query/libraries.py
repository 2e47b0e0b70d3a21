"""The answers about libraries: which were used in a window (``top``), and one in detail.

Both take a read-only connection (:func:`~.connection.connect_readonly`) and a window as epoch
seconds, and return JSON-ready dicts with **raw** counts (:mod:`~.counting`); hiding small
counts is the output layer's (:mod:`~.privacy`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from popcon.protocol import DIRECT, PROGRAM, TRANSITIVE, UNKNOWN
from popcon.server.query.connection import snapshot
from popcon.server.query.counting import check_level, origin_code, parts, parts_of
from popcon.server.query.kept import rolled_part, sources_key
from popcon.server.query.params import QueryError, ceil_to, floor_to, iso
from popcon.server.query.people import (
    PEOPLE,
    WITH_PROGRAMS,
    Kinds,
    WindowPeople,
    gather,
    kinds_where,
    merge_into,
    users,
    window_people,
)
from popcon.server.query.sql import (
    SKETCH_TABLES,
    SUMS,
    Labels,
    edges,
    source_ids,
    usage,
    usage_statements,
)
from popcon.server.query.window import (
    MAX_POINTS,
    Span,
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
    programs: bool = False,
) -> dict[str, Any]:
    """Libraries people's code used in ``[start, end)``, most users (then processes) first.

    ``{"from", "until", "step", "libraries": [{"name", "users", "direct_users", "processes",
    "direct", "transitive"}]}``; ``step`` is the bucket width the window was counted in;
    ``users`` (people whose code used it, directly or not) and ``direct_users`` are None where
    unknown (no record of the row carried a person). ``programs``: the programs' own imports
    too (``processes`` and ``users`` then count them; rows gain ``program`` and
    ``program_users``). Filters: ``env`` (name), ``labels`` (pairs that must all match),
    ``level`` (direct/transitive/unknown: no people), ``origin`` (env/user).
    """
    check_level(level)
    code = origin_code(origin)
    with snapshot(conn) as rolled:
        counted = answered_span(conn, start, end, now)
        sources = source_ids(conn, env, labels)
        where = f"origin = {code}" if code is not None else ""

        def statements(part: Span, rolled_in: int) -> list[str]:
            return usage_statements(
                part,
                rolled_in,
                select=f"lib_id, {SUMS}",
                sources=sources,
                where=where,
                group_by="lib_id",
            )

        def read(onto: Sums | None, statements: list[str]) -> Sums:
            return summed(conn, statements, onto)

        kept, unrolled = rolled_part(
            conn,
            counted,
            rolled,
            question=("sums", where, sources_key(sources)),
            statements=statements,
            read=read,
            size=lambda sums: len(sums) * SUMS_BYTES,
            now=now,
        )
        sums = summed(conn, unrolled, kept)
        with_programs = programs and level is None
        kinds = {None: PEOPLE, DIRECT: (DIRECT,), TRANSITIVE: (TRANSITIVE,)}.get(level, PEOPLE)
        if with_programs:
            kinds = WITH_PROGRAMS
        asked = [kinds]
        if level != TRANSITIVE:
            asked.append((DIRECT,))
        if with_programs:
            asked.append((PROGRAM,))
        kind_sets = list(dict.fromkeys(asked))
        people = WindowPeople.nobody(kind_sets)
        if level != UNKNOWN and sums:
            people = window_people(
                conn,
                counted,
                rolled,
                kind_sets=kind_sets,
                select="lib_id, kind, registers",
                sources=sources,
                where=kinds_where(WITH_PROGRAMS if programs else PEOPLE, origin),
                now=now,
            )
        names = dict(conn.execute("SELECT id, name FROM libs")) if sums else {}
    ranked = []
    for lib_id, (d, t, u, k, p, c) in sums.items():
        counts = parts(d, t, u, k, p, c, level, programs=programs)
        name = names.get(lib_id)
        if not counts["processes"] or name is None:
            continue
        row: dict[str, Any] = {
            "name": name,
            "users": people.users((lib_id,), kinds),
            "direct_users": people.users((lib_id,), (DIRECT,)) if level != TRANSITIVE else None,
            **counts,
        }
        if programs:
            row["program_users"] = people.users((lib_id,), (PROGRAM,)) if with_programs else None
        ranked.append(row)
    ranked.sort(key=by_users)
    return {**counted.window, "step": counted.width, "libraries": ranked}


#: A library's sums of counts (``lib_id``: the six sums of :data:`~.sql.SUMS`).
Sums = dict[int, list[int]]
#: About the bytes of one library's sums.
SUMS_BYTES = 250


def summed(conn: sqlite3.Connection, statements: list[str], onto: Sums | None = None) -> Sums:
    """The sums of ``statements`` (``lib_id`` and :data:`~.sql.SUMS`) added to ``onto``
    (which stays as it is)."""
    sums: Sums = dict(onto) if onto is not None else {}
    for statement in statements:
        for lib_id, *counts in conn.execute(statement):
            had = sums.get(lib_id)
            sums[lib_id] = counts if had is None else [a + b for a, b in zip(had, counts)]
    return sums


def by_users(row: dict[str, Any]) -> tuple[int, int, str]:
    """The order of answers' rows: most users, then most processes, then by name (unknown
    users after every known count)."""
    known = row.get("users")
    return (-(known if isinstance(known, int) else -1), -int(row["processes"]), str(row["name"]))


def library_detail(
    conn: sqlite3.Connection,
    name: str,
    start: float,
    end: float,
    *,
    step: int | None = None,
    env: str | None = None,
    now: float | None = None,
    programs: bool = False,
) -> dict[str, Any] | None:
    """One library in ``[start, end)``; ``None`` when the library is not known at all.

    ``{"name", "from", "until", "step", "users", "direct_users", "series": [{"time",
    "users", "processes", "direct", "transitive"}], "versions": [{"version", "users",
    "processes"}], "importers": [{"importer", "users", "importer_users", "processes"}],
    "environments": [{"env", "users", "processes", "direct", "transitive"}]}``; ``users`` None
    where unknown (always for importers: no sketch is kept per importer; ``importer_users``
    are the people of the importing library, a bound of the edge's). ``programs``: the
    programs' own imports counted too (rows gain ``program``).
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

        kinds = WITH_PROGRAMS if programs else PEOPLE
        sketch_where = f"{lib_where} AND {kinds_where(kinds)}"
        points: dict[int, list[int]] = {}
        for bucket, *counts in conn.execute(
            f"SELECT bucket, {SUMS} FROM ("
            + usage(counted, rolled, columns="bucket", sources=sources, where=lib_where)
            + ") GROUP BY bucket"
        ):
            sums = points.setdefault(floor_to(bucket, step), [0] * 6)
            for i, value in enumerate(counts):
                sums[i] += value
        point_people: dict[object, Kinds] = {}
        for (bucket,), sketches in gather(
            conn,
            usage_statements(
                counted,
                rolled,
                select="bucket, kind, registers",
                sources=sources,
                where=sketch_where,
                tables=SKETCH_TABLES,
            ),
        ).items():
            merge_into(point_people, floor_to(bucket, step), sketches)
        series = [
            {
                "time": iso(moment),
                "users": users(point_people.get(moment), kinds),
                **parts_of(points.get(moment, (0,) * 6), programs=programs),
            }
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
        for source_env, version, *counts in conn.execute(
            f"SELECT e.name, x.version, {SUMS} FROM ({by_source}) AS x "
            "JOIN sources s ON s.id = x.source_id JOIN envs e ON e.id = s.env_id "
            "GROUP BY e.id, x.version"
        ):
            for table, key in ((versions, version), (per_env, source_env)):
                sums = table.setdefault(key, [0] * 6)
                for i, value in enumerate(counts):
                    sums[i] += value
        env_of = dict(
            conn.execute("SELECT s.id, e.name FROM sources s JOIN envs e ON e.id = s.env_id")
        )
        version_people: dict[object, Kinds] = {}
        env_people: dict[object, Kinds] = {}
        everyone: dict[object, Kinds] = {}
        for (source_id, version), sketches in gather(
            conn,
            usage_statements(
                counted,
                rolled,
                select="source_id, version, kind, registers",
                sources=sources,
                by_source=True,
                where=sketch_where,
                tables=SKETCH_TABLES,
            ),
            key_of=2,
        ).items():
            merge_into(version_people, version, sketches)
            merge_into(env_people, env_of.get(source_id), sketches)
            merge_into(everyone, None, sketches)

        edge_where = lib_where + ("" if env_id is None else f" AND env_id = {env_id}")
        edge_rows = conn.execute(
            "SELECT x.importer_id, l.name, x.n FROM (SELECT importer_id, SUM(count) AS n FROM ("
            + edges(counted, rolled, edge_where)
            + ") GROUP BY importer_id) AS x JOIN libs l ON l.id = x.importer_id"
        ).fetchall()
        importer_people: dict[tuple[Any, ...], Kinds] = {}
        if edge_rows:
            ids = ",".join(str(int(row[0])) for row in edge_rows)
            importer_people = gather(
                conn,
                usage_statements(
                    counted,
                    rolled,
                    select="lib_id, kind, registers",
                    sources=sources,
                    where=f"lib_id IN ({ids}) AND {kinds_where(kinds)}",
                    tables=SKETCH_TABLES,
                ),
            )
        importers: list[dict[str, Any]] = [
            {
                "importer": importer,
                "users": None,
                "importer_users": users(importer_people.get((importer_id,)), kinds),
                "processes": count,
            }
            for importer_id, importer, count in edge_rows
        ]
    version_rows: list[dict[str, Any]] = [
        {
            "version": version,
            "users": users(version_people.get(version), kinds),
            "processes": parts_of(sums, programs=programs)["processes"],
        }
        for version, sums in versions.items()
    ]
    version_rows.sort(key=lambda r: (-r["processes"], r["version"]))
    importers.sort(key=lambda r: (-r["processes"], r["importer"]))
    environments: list[dict[str, Any]] = [
        {
            "env": env_name,
            "users": users(env_people.get(env_name), kinds),
            **parts_of(sums, programs=programs),
        }
        for env_name, sums in per_env.items()
    ]
    environments.sort(key=lambda r: (-r["processes"], r["env"]))
    return {
        "name": name,
        **counted.window,
        "step": step,
        "users": users(everyone.get(None), kinds),
        "direct_users": users(everyone.get(None), (DIRECT,)),
        "series": series,
        "versions": version_rows,
        "importers": importers,
        "environments": environments,
    }

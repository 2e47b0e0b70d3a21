"""Read-only answers from the collector's SQLite database (API stable; see below).

Every function takes a read-only connection from :func:`connect_readonly` (``mode=ro`` URI;
one per thread, or ``check_same_thread=False`` with external locking) and plain values, and
returns JSON-ready dicts and lists with **raw** counts: hiding counts below ``min_count`` is
done by the output layer (``popcon.server.query.privacy``). No function reads the clock: windows
are passed in as epoch seconds (``start``/``end``, e.g. from ``params.parse_window``), and
where "now" matters it is a parameter.

Public API (kept stable; a change would be announced here):

- :func:`connect_readonly` (path) -> sqlite3.Connection
- :func:`bucket_width` (conn) -> int, the finest bucket width in seconds
- :func:`libraries` (conn, start, end, *, env, labels, level, origin, now)
  -> ``{"from", "until", "step", "libraries": [{"name", "processes", "direct", "transitive"}]}``
- :func:`library_detail` (conn, name, start, end, *, step, env, now)
  -> ``{"name", "from", "until", "step", "series": [{"time", "processes", "direct",
  "transitive"}], "versions": [{"version", "processes"}], "importers": [{"importer",
  "processes"}], "environments": [{"env", "processes", "direct", "transitive"}]}`` or ``None``
- :func:`unused` (conn, start, end, *, env, now)
  -> ``{"from", "until", "environments": [{"env", "inventory_id", "inventory_at",
  "libraries": [{"name", "version"}]}]}``
- :func:`user_installed` (conn, start, end, *, env, now)
  -> ``{"from", "until", "libraries": [{"name", "env", "processes", "versions",
  "env_has_inventory"}]}``
- :func:`environments` (conn) -> ``[{"env", "labels", "first_seen", "last_seen", "py",
  "inventory_size", "inventory_id", "inventory_at", "processes"}]``
- totals for Prometheus counters (monotonic across restarts, as they are stored):
  :func:`library_process_totals`, :func:`library_version_totals`, :func:`report_totals`,
  :func:`datagram_totals`.

Times in answers are ISO-8601 UTC strings (``2026-11-26T14:40:00Z``). ``from``/``until`` in an
answer are the window actually counted: the asked window widened to whole buckets of the
resolution used (see ``docs/collector-storage.md``: a 30-day window is answered from daily
buckets, a 6-hour window from 10-minute buckets).

Counting (``docs/protocol.md``), from the raw record counts d(irect), t(ransitive),
u(pgrade) and k (unknown: statsd lines) of a library in the window:
``direct`` = d + u (processes that used it from user code), ``transitive`` = max(0, t - u)
(processes that used it only through other libraries), ``processes`` = direct + transitive + k
= d + max(t, u) + k: each process once per library, also when its upgrade record falls in the
window and its transitive record before it.

``level`` filters keep one of those parts: ``direct``, ``transitive`` or ``unknown``.
``user_installed`` rows carry ``env_has_inventory``: False when the environment never sent an
inventory (then "absent from the inventory" cannot be checked and every user-site library is
listed).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Union
from urllib.parse import quote

from popcon.server.query.params import iso
from popcon.server.storage.schema import (
    LEVEL_COLUMNS,
    ORIGIN_CODES,
    RESULT_REASONS,
    Tier,
    parse_labels,
    read_tiers,
)

Labels = Sequence[tuple[str, str]]


class QueryError(ValueError):
    """A query that cannot be answered as asked; ``str()`` is a one-line reason."""


class LibraryTotal(NamedTuple):
    library: str
    env: str
    level: str  # "direct", "transitive", "upgrade" or "unknown" (raw record counts)
    count: int


class VersionTotal(NamedTuple):
    library: str
    version: str  # "-" when unknown
    env: str
    count: int  # processes (direct + transitive + unknown records)


class ReportTotal(NamedTuple):
    env: str
    count: int  # processes (seq 0 datagrams and statsd ``reports`` lines)


def connect_readonly(path: Union[str, os.PathLike[str]]) -> sqlite3.Connection:
    """A read-only connection (``file:...?mode=ro``); raises ``FileNotFoundError`` if no DB."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no popcon database at {path}")
    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    conn = sqlite3.connect(
        uri, uri=True, check_same_thread=False, timeout=10.0, isolation_level=None
    )
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: a month of daily rows stays cached
    return conn


def bucket_width(conn: sqlite3.Connection) -> int:
    """The width of the finest time bucket in seconds (default 600)."""
    return read_tiers(conn)[0].width


def utcnow() -> float:
    """The one clock seam of this module (used only when a caller passes no ``now``)."""
    return time.time()


# -- windows and tiers -------------------------------------------------------------------------

#: A window is answered from the finest tier that still holds its start and covers it in at
#: most this many buckets (6 h and 24 h: 10 minutes; 7 d: 1 hour; 30 d: 1 day).
MAX_BUCKETS = 200
#: Most points a time series may have.
MAX_POINTS = 10_000


def _floor(value: float, width: int) -> int:
    return int(value // width) * width


def _ceil(value: float, width: int) -> int:
    return -int(-value // width) * width


def _holds(tier: Tier, start: float, now: float) -> bool:
    """Whether ``tier`` still has buckets back to ``start``."""
    return start >= _floor(now - tier.keep, tier.width)


def choose_tier(tiers: Sequence[Tier], start: float, end: float, now: float) -> int:
    """Index of the tier a window ``[start, end)`` is answered from."""
    for index, tier in enumerate(tiers):
        if _holds(tier, start, now) and (end - start) / tier.width <= MAX_BUCKETS:
            return index
    for index, tier in enumerate(tiers):
        if _holds(tier, start, now):
            return index
    return len(tiers) - 1


def _span(tiers: Sequence[Tier], index: int, start: float, end: float, now: float):
    """The buckets counted ``[low, high)`` and the window to report (never past ``now``)."""
    width = tiers[index].width
    low, high = _floor(start, width), _ceil(end, width)
    if high == low:
        high = low + width
    shown = high if high <= now else max(min(end, high), _ceil(now, tiers[0].width))
    return low, high, {"from": iso(low), "until": iso(min(shown, high))}


def _check_window(start: float, end: float) -> None:
    if not end > start:
        raise QueryError("from: must be earlier than until")


def _source_ids(
    conn: sqlite3.Connection, env: str | None, labels: Labels | None
) -> list[int] | None:
    """Sources matching the filters; None when there is no filter (all sources)."""
    if env is None and not labels:
        return None
    wanted = dict(labels or ())
    sql = "SELECT s.id, s.labels FROM sources s JOIN envs e ON e.id = s.env_id"
    rows = conn.execute(sql + " WHERE e.name = ?", (env,)) if env is not None else conn.execute(sql)
    found = []
    for source_id, text in rows:
        have = parse_labels(text)
        if all(have.get(key) == value for key, value in wanted.items()):
            found.append(source_id)
    return found


def _in(column: str, values: Sequence[int]) -> str:
    return f"{column} IN ({','.join(str(int(v)) for v in values) or '-1'})"


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[int]:
    """One read transaction (a consistent snapshot under WAL); yields ``rolled_until``."""
    if conn.in_transaction:
        yield _rolled_until(conn)
        return
    conn.execute("BEGIN")
    try:
        yield _rolled_until(conn)
    finally:
        conn.execute("COMMIT")


def _rolled_until(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'rolled_until'").fetchone()
    return int(row[0]) if row is not None else 0


_ALL_SOURCES = "source_id IN (SELECT id FROM sources)"
#: Seeks library by library through ``usage_by_library`` (keyed tier, library, bucket), so rows
#: come grouped by library and summing them needs no sort.
_ALL_LIBS = "lib_id IN (SELECT id FROM libs)"


def _usage(
    index: int,
    low: int,
    high: int,
    rolled: int,
    *,
    columns: str,
    sources: Sequence[int] | None = None,
    by_source: bool = False,
    where: str = "",
) -> str:
    """SQL for the usage rows (``columns``, direct, transitive, upgrade, unknown) of buckets
    ``[low, high)`` at tier ``index``: what that tier holds, plus the tier-0 buckets not rolled
    up yet (at or after ``rolled``). ``by_source`` (or ``sources``) reads per label set, which
    ``columns`` may then use (``source_id``, ``version``); else the per-library table."""
    levels = "direct, transitive, upgrade, unknown"
    extra = f" AND {where}" if where else ""
    source_filter = _in("source_id", sources) if sources is not None else _ALL_SOURCES
    parts = []
    if sources is None and not by_source:
        top = high if index else min(high, rolled)
        parts.append(
            f"SELECT {columns}, {levels} FROM usage_by_library WHERE tier = {index} "
            f"AND {_ALL_LIBS} AND bucket >= {low} AND bucket < {top}{extra}"
        )
        live = True
    else:
        parts.append(
            f"SELECT {columns}, {levels} FROM usage_by_source WHERE tier = {index} "
            f"AND {source_filter} AND bucket >= {low} AND bucket < {high}{extra}"
        )
        live = index > 0
    if live and max(low, rolled) < high:
        parts.append(
            f"SELECT {columns}, {levels} FROM usage_by_source WHERE tier = 0 "
            f"AND {source_filter} AND bucket >= {max(low, rolled)} AND bucket < {high}{extra}"
        )
    return " UNION ALL ".join(parts)


def _usage_parts(
    index: int, low: int, high: int, rolled: int, *, sources: Sequence[int] | None, where: str
) -> list[str]:
    """:func:`_usage` for ``columns="lib_id"`` as separate statements (what the tier holds,
    then the live buckets), each summed by library: the first streams without a sort."""
    stored_top = high if index else min(high, rolled)
    extra = f" AND {where}" if where else ""
    sums = "lib_id, SUM(direct), SUM(transitive), SUM(upgrade), SUM(unknown)"
    statements = []
    if sources is None:
        statements.append(
            f"SELECT {sums} FROM usage_by_library WHERE tier = {index} AND {_ALL_LIBS} "
            f"AND bucket >= {low} AND bucket < {stored_top}{extra} GROUP BY lib_id"
        )
        live_low = max(low, rolled)
        source_filter = _ALL_SOURCES
    else:
        statements.append(
            f"SELECT {sums} FROM usage_by_source WHERE tier = {index} "
            f"AND {_in('source_id', sources)} AND bucket >= {low} AND bucket < {high}{extra} "
            "GROUP BY lib_id"
        )
        live_low = max(low, rolled) if index > 0 else high
        source_filter = _in("source_id", sources)
    if live_low < high:
        statements.append(
            f"SELECT {sums} FROM usage_by_source WHERE tier = 0 AND {source_filter} "
            f"AND bucket >= {live_low} AND bucket < {high}{extra} GROUP BY lib_id"
        )
    return statements


def _edges(index: int, low: int, high: int, rolled: int, where: str) -> str:
    """SQL for edge rows (importer_id, count) like :func:`_usage`."""
    parts = [
        f"SELECT importer_id, count FROM edges WHERE tier = {index} AND {where} "
        f"AND bucket >= {low} AND bucket < {high}"
    ]
    if index > 0 and max(low, rolled) < high:
        parts.append(
            f"SELECT importer_id, count FROM edges WHERE tier = 0 AND {where} "
            f"AND bucket >= {max(low, rolled)} AND bucket < {high}"
        )
    return " UNION ALL ".join(parts)


_SUMS = "SUM(direct), SUM(transitive), SUM(upgrade), SUM(unknown)"


def _parts(d: int, t: int, u: int, k: int, level: str | None = None) -> dict[str, int]:
    """``processes``/``direct``/``transitive`` from raw record counts (see module docstring)."""
    direct = d + u
    transitive = max(0, t - u)
    if level == "direct":
        transitive = k = 0
    elif level == "transitive":
        direct = k = 0
    elif level == "unknown":
        direct = transitive = 0
    elif level is not None:
        raise QueryError(f"level: expected direct, transitive or unknown, got {level!r}")
    return {"processes": direct + transitive + k, "direct": direct, "transitive": transitive}


def _origin_code(origin: str | None) -> int | None:
    if origin is None:
        return None
    if origin not in ORIGIN_CODES:
        raise QueryError(f"origin: expected env or user, got {origin!r}")
    return ORIGIN_CODES[origin]


_SUMS = "SUM(direct) AS d, SUM(transitive) AS t, SUM(upgrade) AS u, SUM(unknown) AS k"


# -- answers -----------------------------------------------------------------------------------


def _prepare(conn: sqlite3.Connection, start: float, end: float, now: float | None):
    _check_window(start, end)
    now = utcnow() if now is None else now
    tiers = read_tiers(conn)
    index = choose_tier(tiers, start, end, now)
    low, high, window = _span(tiers, index, start, end, now)
    return now, tiers, index, low, high, window


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
    _parts(0, 0, 0, 0, level)  # checks level
    origin_code = _origin_code(origin)
    with _snapshot(conn) as rolled:
        now, tiers, index, low, high, window = _prepare(conn, start, end, now)
        sources = _source_ids(conn, env, labels)
        where = f"origin = {origin_code}" if origin_code is not None else ""
        sums: dict[int, list[int]] = {}
        for statement in _usage_parts(index, low, high, rolled, sources=sources, where=where):
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
            counts = _parts(d, t, u, k, level)
            direct, transitive, k = counts["direct"], counts["transitive"], 0
            if level == "unknown":
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
    return {**window, "step": tiers[index].width, "libraries": result}


def _detail_tier(
    tiers: Sequence[Tier], start: float, end: float, now: float, step: int | None
) -> tuple[int, int]:
    """(tier index, step) for a time series: the coarsest tier whose width divides ``step``
    and that holds the window start; without ``step``, the tier :func:`choose_tier` picks."""
    if step is None:
        index = choose_tier(tiers, start, end, now)
        return index, tiers[index].width
    if step <= 0:
        raise QueryError("step: expected a positive duration")
    fitting = [i for i, t in enumerate(tiers) if step % t.width == 0 and _holds(t, start, now)]
    if fitting:
        return fitting[-1], step
    index = choose_tier(tiers, start, end, now)
    width = tiers[index].width
    return index, max(width, _ceil(step, width))


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
    _check_window(start, end)
    now = utcnow() if now is None else now
    with _snapshot(conn) as rolled:
        row = conn.execute("SELECT id FROM libs WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        lib_id = int(row[0])
        tiers = read_tiers(conn)
        index, step = _detail_tier(tiers, start, end, now, step)
        low, high, window = _span(tiers, index, start, end, now)
        first, last = _floor(low, step), _ceil(high, step)
        if (last - first) // step > MAX_POINTS:
            raise QueryError(f"step: the window would have more than {MAX_POINTS} points")
        sources = _source_ids(conn, env, None)
        env_id = None
        if env is not None:
            found = conn.execute("SELECT id FROM envs WHERE name = ?", (env,)).fetchone()
            env_id = int(found[0]) if found else -1
        lib_where = f"lib_id = {lib_id}"

        points: dict[int, list[int]] = {}
        for bucket, d, t, u, k in conn.execute(
            f"SELECT bucket, {_SUMS} FROM ("
            + _usage(index, low, high, rolled, columns="bucket", sources=sources, where=lib_where)
            + ") GROUP BY bucket"
        ):
            sums = points.setdefault(_floor(bucket, step), [0, 0, 0, 0])
            for i, value in enumerate((d, t, u, k)):
                sums[i] += value
        series = [
            {"time": iso(moment), **_parts(*points.get(moment, (0, 0, 0, 0)))}
            for moment in range(first, last, step)
        ]

        by_source = _usage(
            index,
            low,
            high,
            rolled,
            columns="source_id, version",
            sources=sources,
            by_source=True,
            where=lib_where,
        )
        versions: dict[str, list[int]] = {}
        per_env: dict[str, list[int]] = {}
        for source_env, version, d, t, u, k in conn.execute(
            f"SELECT e.name, x.version, {_SUMS} FROM ({by_source}) AS x "
            "JOIN sources s ON s.id = x.source_id JOIN envs e ON e.id = s.env_id "
            "GROUP BY e.id, x.version"
        ):
            for table, key in ((versions, version), (per_env, source_env)):
                sums = table.setdefault(key, [0, 0, 0, 0])
                for i, value in enumerate((d, t, u, k)):
                    sums[i] += value

        edge_where = lib_where + ("" if env_id is None else f" AND env_id = {env_id}")
        importers = [
            {"importer": importer, "processes": count}
            for importer, count in conn.execute(
                "SELECT l.name, x.n FROM (SELECT importer_id, SUM(count) AS n FROM ("
                + _edges(index, low, high, rolled, edge_where)
                + ") GROUP BY importer_id) AS x JOIN libs l ON l.id = x.importer_id"
            )
        ]
    version_rows = [
        {"version": version, "processes": _parts(*sums)["processes"]}
        for version, sums in versions.items()
    ]
    version_rows.sort(key=lambda r: (-r["processes"], r["version"]))
    importers.sort(key=lambda r: (-r["processes"], r["importer"]))
    environments = [{"env": env_name, **_parts(*sums)} for env_name, sums in per_env.items()]
    environments.sort(key=lambda r: (-r["processes"], r["env"]))
    return {
        "name": name,
        **window,
        "step": step,
        "series": series,
        "versions": version_rows,
        "importers": importers,
        "environments": environments,
    }


def unused(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    *,
    env: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Installed in an environment's latest inventory, imported by none of its processes in
    ``[start, end)``.

    ``{"from", "until", "environments": [{"env", "inventory_id", "inventory_at",
    "libraries": [{"name", "version"}]}]}``, one entry per environment that has an inventory
    (only ``env`` when given; an unknown ``env`` gives an empty list). Libraries by name.
    """
    with _snapshot(conn) as rolled:
        _now, _tiers, index, low, high, window = _prepare(conn, start, end, now)
        sql = "SELECT id, name, inventory_id, inventory_at FROM envs WHERE inventory_id IS NOT NULL"
        envs = (
            conn.execute(sql + " AND name = ?", (env,)) if env is not None else conn.execute(sql)
        ).fetchall()
        answer = []
        for env_id, env_name, inventory_id, inventory_at in sorted(envs, key=lambda r: r[1]):
            sources = [
                r[0] for r in conn.execute("SELECT id FROM sources WHERE env_id = ?", (env_id,))
            ]
            used = {
                name
                for (name,) in conn.execute(
                    "SELECT l.name FROM (SELECT DISTINCT lib_id FROM ("
                    + _usage(index, low, high, rolled, columns="lib_id", sources=sources)
                    + ")) AS x JOIN libs l ON l.id = x.lib_id"
                )
            }
            installed = conn.execute(
                "SELECT name, version FROM inventory WHERE env_id = ? ORDER BY name", (env_id,)
            )
            answer.append(
                {
                    "env": env_name,
                    "inventory_id": inventory_id,
                    "inventory_at": iso(inventory_at),
                    "libraries": [
                        {"name": name, "version": version}
                        for name, version in installed
                        if name not in used
                    ],
                }
            )
    return {**window, "environments": answer}


def user_installed(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    *,
    env: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Libraries imported from user sites (origin ``user``) in ``[start, end)`` that are not in
    their environment's inventory: candidates to add to the image.

    ``{"from", "until", "libraries": [{"name", "env", "processes", "versions",
    "env_has_inventory"}]}``, most processes first; ``versions``: ``[{"version",
    "processes"}]`` seen for that library in that environment from user sites.
    """
    with _snapshot(conn) as rolled:
        _now, _tiers, index, low, high, window = _prepare(conn, start, end, now)
        sources = _source_ids(conn, env, None)
        rows = conn.execute(
            f"SELECT e.id, e.name, e.inventory_id IS NOT NULL, l.name, x.version, {_SUMS} FROM ("
            + _usage(
                index,
                low,
                high,
                rolled,
                columns="source_id, lib_id, version",
                sources=sources,
                by_source=True,
                where=f"origin = {ORIGIN_CODES['user']}",
            )
            + ") AS x JOIN sources s ON s.id = x.source_id JOIN envs e ON e.id = s.env_id "
            "JOIN libs l ON l.id = x.lib_id "
            "WHERE NOT EXISTS (SELECT 1 FROM inventory i WHERE i.env_id = e.id "
            "AND i.name = l.name) GROUP BY e.id, l.id, x.version"
        ).fetchall()
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for _env_id, env_name, has_inventory, name, version, d, t, u, k in rows:
        processes = _parts(d, t, u, k)["processes"]
        entry = found.setdefault(
            (env_name, name),
            {
                "name": name,
                "env": env_name,
                "processes": 0,
                "versions": [],
                "env_has_inventory": bool(has_inventory),
            },
        )
        entry["processes"] += processes
        entry["versions"].append({"version": version, "processes": processes})
    answer = list(found.values())
    for entry in answer:
        entry["versions"].sort(key=lambda r: (-r["processes"], r["version"]))
    answer.sort(key=lambda r: (-r["processes"], r["name"], r["env"]))
    return {**window, "libraries": answer}


def environments(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every environment: ``[{"env", "labels": [{key: value}, ...], "first_seen",
    "last_seen", "py", "inventory_size", "inventory_id", "inventory_at", "processes"}]``.

    Times are bucket starts (ISO-8601; ``inventory_at`` None without an inventory);
    ``labels`` lists each label set seen; ``processes`` is the stored total of processes.
    """
    with _snapshot(conn):
        labels: dict[int, list[dict[str, str]]] = {}
        for env_id, text in conn.execute("SELECT env_id, labels FROM sources ORDER BY labels"):
            labels.setdefault(env_id, []).append(parse_labels(text))
        processes = {row.env: row.count for row in report_totals(conn)}
        rows = conn.execute(
            "SELECT e.id, e.name, e.first_seen, e.last_seen, e.py, e.inventory_id, "
            "e.inventory_at, (SELECT COUNT(*) FROM inventory i WHERE i.env_id = e.id) "
            "FROM envs e ORDER BY e.name"
        ).fetchall()
    answer = []
    for row in rows:
        env_id, name, first_seen, last_seen, py, inventory_id, inventory_at, size = row
        answer.append(
            {
                "env": name,
                "labels": labels.get(env_id, []),
                "first_seen": iso(first_seen),
                "last_seen": iso(last_seen),
                "py": py,
                "inventory_size": size,
                "inventory_id": inventory_id,
                "inventory_at": iso(inventory_at) if inventory_at is not None else None,
                "processes": processes.get(name, 0),
            }
        )
    return answer


# -- totals for Prometheus ---------------------------------------------------------------------

_LIVE = f"u.tier = 0 AND u.{_ALL_SOURCES} AND u.bucket >= ?"


def library_process_totals(conn: sqlite3.Connection) -> list[LibraryTotal]:
    """Raw record totals per (library, env, level) since the library was first seen in the env
    (within the retention). Processes = direct + transitive + unknown (not upgrade)."""
    totals: dict[tuple[str, str, int], int] = {}
    with _snapshot(conn) as rolled:
        for lib, env, level, count in conn.execute(
            "SELECT l.name, e.name, t.level, t.count FROM total_usage t "
            "JOIN libs l ON l.id = t.lib_id JOIN envs e ON e.id = t.env_id"
        ):
            totals[(lib, env, level)] = count
        for lib, env, *counts in conn.execute(
            f"SELECT l.name, e.name, {_SUMS} FROM usage_by_source u "
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
    """Processes (direct + transitive + unknown records) per (library, version, env)."""
    totals: dict[tuple[str, str, str], int] = {}
    with _snapshot(conn) as rolled:
        for lib, version, env, count in conn.execute(
            "SELECT l.name, t.version, e.name, t.count FROM total_versions t "
            "JOIN libs l ON l.id = t.lib_id JOIN envs e ON e.id = t.env_id"
        ):
            totals[(lib, version, env)] = count
        for lib, version, env, count in conn.execute(
            "SELECT l.name, u.version, e.name, SUM(u.direct + u.transitive + u.unknown) "
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
    with _snapshot(conn) as rolled:
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
    ``store.RESULT_REASONS`` (0 when never seen), ``ok`` first."""
    totals = dict.fromkeys(RESULT_REASONS, 0)
    for reason, count in conn.execute("SELECT reason, count FROM datagram_results"):
        totals[reason] = count
    return totals


__all__ = [
    "LibraryTotal",
    "QueryError",
    "ReportTotal",
    "VersionTotal",
    "bucket_width",
    "choose_tier",
    "connect_readonly",
    "datagram_totals",
    "environments",
    "libraries",
    "library_detail",
    "library_process_totals",
    "library_version_totals",
    "report_totals",
    "unused",
    "user_installed",
    "utcnow",
]

"""The SQL the answers share: usage and edge rows of a :class:`~.window.Span`, source filters.

A tier holds its own buckets once they are rolled up; the finest buckets not rolled up yet (at
or after ``rolled``, from :func:`~.connection.snapshot`) are read from tier 0 as well, so an
answer counts everything received. Ids and bucket edges are integers the query layer made
itself, written into the SQL as literals; names from the caller are always bound parameters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from popcon.server.query.window import Span
from popcon.server.storage.schema import parse_labels

Labels = Sequence[tuple[str, str]]

#: Every source (lets SQLite seek ``usage_by_source`` by source).
ALL_SOURCES = "source_id IN (SELECT id FROM sources)"
#: Seeks library by library through ``usage_by_library`` (keyed tier, library, bucket), so rows
#: come grouped by library and summing them needs no sort.
ALL_LIBS = "lib_id IN (SELECT id FROM libs)"
#: The raw record counts of usage rows, summed (see :mod:`~.counting`), in the order of
#: ``schema.LEVEL_COLUMNS``.
SUMS = (
    "SUM(direct) AS d, SUM(transitive) AS t, SUM(upgrade) AS u, SUM(unknown) AS k, "
    "SUM(program) AS p, SUM(claimed) AS c"
)
_LEVELS = "direct, transitive, upgrade, unknown, program, claimed"
#: The tables of each kind of rows: per library (all sources), per source.
USAGE_TABLES = ("usage_by_library", "usage_by_source")
SKETCH_TABLES = ("sketches_by_library", "sketches_by_source")


def in_list(column: str, values: Sequence[int]) -> str:
    """``column IN (...)`` for integer ids (never true for none)."""
    return f"{column} IN ({','.join(str(int(v)) for v in values) or '-1'})"


def source_ids(
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


def usage_statements(
    span: Span,
    rolled: int,
    *,
    select: str,
    sources: Sequence[int] | None = None,
    by_source: bool = False,
    where: str = "",
    group_by: str = "",
    tables: tuple[str, str] = USAGE_TABLES,
) -> list[str]:
    """``SELECT {select}`` over the usage rows of ``span``: what its tier holds, then (when
    any) the tier-0 buckets not rolled up yet, as separate statements.

    ``by_source`` (or ``sources``) reads the rows per label set, which ``select`` may then
    use (``source_id``, ``version``); else the per-library table, which streams by library
    (summed ``group_by="lib_id"``, it needs no sort). ``where`` is one more condition.
    ``tables``: :data:`USAGE_TABLES`, or :data:`SKETCH_TABLES` for the sketches of people."""
    by_library, by_source_table = tables
    extra = f" AND {where}" if where else ""
    tail = f" GROUP BY {group_by}" if group_by else ""
    source_filter = in_list("source_id", sources) if sources is not None else ALL_SOURCES
    tier, low, high = span.tier, span.low, span.high
    if sources is None and not by_source:
        top = high if tier else min(high, rolled)
        statements = [
            f"SELECT {select} FROM {by_library} WHERE tier = {tier} "
            f"AND {ALL_LIBS} AND bucket >= {low} AND bucket < {top}{extra}{tail}"
        ]
        live = True
    else:
        statements = [
            f"SELECT {select} FROM {by_source_table} WHERE tier = {tier} "
            f"AND {source_filter} AND bucket >= {low} AND bucket < {high}{extra}{tail}"
        ]
        live = tier > 0
    live_low = max(low, rolled)
    if live and live_low < high:
        statements.append(
            f"SELECT {select} FROM {by_source_table} WHERE tier = 0 "
            f"AND {source_filter} AND bucket >= {live_low} AND bucket < {high}{extra}{tail}"
        )
    return statements


def usage(
    span: Span,
    rolled: int,
    *,
    columns: str,
    sources: Sequence[int] | None = None,
    by_source: bool = False,
    where: str = "",
) -> str:
    """One statement for the usage rows (``columns``, direct, transitive, upgrade, unknown) of
    ``span``: :func:`usage_statements` joined by ``UNION ALL``."""
    return " UNION ALL ".join(
        usage_statements(
            span,
            rolled,
            select=f"{columns}, {_LEVELS}",
            sources=sources,
            by_source=by_source,
            where=where,
        )
    )


def edges(span: Span, rolled: int, where: str) -> str:
    """One statement for the edge rows (importer_id, count) of ``span``, like :func:`usage`
    over the per-source rows."""
    tier, low, high = span.tier, span.low, span.high
    parts = [
        f"SELECT importer_id, count FROM edges WHERE tier = {tier} AND {where} "
        f"AND bucket >= {low} AND bucket < {high}"
    ]
    if tier > 0 and max(low, rolled) < high:
        parts.append(
            f"SELECT importer_id, count FROM edges WHERE tier = 0 AND {where} "
            f"AND bucket >= {max(low, rolled)} AND bucket < {high}"
        )
    return " UNION ALL ".join(parts)

"""The writer's SQL: write a job, roll closed buckets up, sweep old ones, load the catalog.

Live data goes to tier 0 only (``usage_by_source``, ``edges``, ``reports``, ``sketches_by_source``,
``programs``), which keeps a flush cheap. When a tier-0 bucket has closed (plus a grace period),
:func:`roll_up` adds it, in SQL, to ``usage_by_library``, to every coarser tier and to the totals,
then advances ``meta.rolled_until`` in the same transaction, so a crash can neither lose nor double
a bucket. Readers add the tier-0 buckets at or after ``rolled_until`` ("live" buckets) to what
coarser tiers and totals hold. Rows that arrive for a bucket already rolled up ("late": the database
was unavailable longer than the grace period) are written to tier 0 and, through temporary tables
and the same SQL, to everything derived from it. Sketches of people cannot be merged in SQL: they
are merged here (:mod:`~popcon.server.storage.sketch`, register by register), which is idempotent,
so a late sketch is merged into what derives from it as is."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TypeVar

from popcon.protocol import MAX_REQUIRES
from popcon.server.storage.rows import (
    Capped,
    Catalog,
    EnvLibraries,
    Pair,
    PairCaps,
    Pending,
    SketchKey,
)
from popcon.server.storage.schema import LEVEL_COLUMNS, Tier, renew_rolled_rows
from popcon.server.storage.sketch import Registers, encode

_SUMS = ", ".join(f"SUM({column})" for column in LEVEL_COLUMNS)
_ADD_LEVELS = ", ".join(f"{column} = {column} + excluded.{column}" for column in LEVEL_COLUMNS)
_UPSERT_USAGE = (
    "INSERT INTO {table} VALUES (0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tier, source_id, bucket, lib_id, origin, version) DO UPDATE SET " + _ADD_LEVELS
)
#: Processes that used a library at all (the programs' own imports included).
_ALL_PROCESSES = "u.direct + u.transitive + u.unknown + u.program"
_UPSERT_EDGES = (
    "INSERT INTO {table} VALUES (0, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tier, lib_id, bucket, env_id, importer_id) "
    "DO UPDATE SET count = count + excluded.count"
)
_UPSERT_REPORTS = (
    "INSERT INTO {table} VALUES (0, ?, ?, ?) "
    "ON CONFLICT (tier, source_id, bucket) DO UPDATE SET count = count + excluded.count"
)
_UPSERT_PROGRAMS = (
    "INSERT INTO {table} VALUES (0, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tier, source_id, bucket, lib_id, version) "
    "DO UPDATE SET count = count + excluded.count"
)


def read_rolled_until(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'rolled_until'").fetchone()
    return int(row[0]) if row is not None else None


def _write_catalog(conn: sqlite3.Connection, job: Pending) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO envs (id, name, first_seen, last_seen, py) VALUES (?, ?, ?, ?, '')",
        [
            (env_id, name, job.env_first.get(env_id, 0), job.env_seen.get(env_id, (0, ""))[0])
            for env_id, name in job.new_envs
        ],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO sources (id, env_id, labels, last_seen) VALUES (?, ?, ?, ?)",
        [
            (source_id, env_id, labels, job.source_seen.get(source_id, 0))
            for source_id, env_id, labels in job.new_sources
        ],
    )
    conn.executemany("INSERT OR IGNORE INTO libs (id, name) VALUES (?, ?)", job.new_libs)
    conn.executemany(
        "UPDATE envs SET py = CASE WHEN ? != '' AND ? >= last_seen THEN ? ELSE py END, "
        "last_seen = max(last_seen, ?), first_seen = min(first_seen, ?) WHERE id = ?",
        [
            (py, seen, py, seen, job.env_first.get(env_id, seen), env_id)
            for env_id, (seen, py) in job.env_seen.items()
        ],
    )
    conn.executemany(
        "UPDATE sources SET last_seen = max(last_seen, ?) WHERE id = ?",
        [(seen, source_id) for source_id, seen in job.source_seen.items()],
    )


def _forget_released(conn: sqlite3.Connection, job: Pending) -> None:
    """Delete the all-time totals of what the caps released (their buckets stay until each
    tier's keep): an environment's, a library's in an environment, a version's."""
    for table in ("total_usage", "total_versions", "total_reports"):
        conn.executemany(f"DELETE FROM {table} WHERE env_id = ?", [(e,) for e in job.released_envs])
    for table in ("total_usage", "total_versions"):
        conn.executemany(f"DELETE FROM {table} WHERE env_id = ? AND lib_id = ?", job.released_pairs)
    conn.executemany(
        "DELETE FROM total_versions WHERE env_id = ? AND lib_id = ? AND version = ?",
        [(e, lib, version) for (e, lib), version in job.released_versions],
    )


def _json_columns(groups: Sequence[int]) -> str:
    """``json_extract(value, '$[0][0]'), …`` for rows ``[[k0, k1, …], [v0, …]]`` whose
    groups have the widths ``groups``."""
    return ", ".join(
        f"json_extract(value, '$[{group}][{i}]')"
        for group, width in enumerate(groups)
        for i in range(width)
    )


#: The same upserts fed by one JSON array (one ``sqlite3_step``, the GIL released throughout,
#: instead of one GIL hand-over per row with ``executemany``).
_JSON_USAGE = (
    "INSERT INTO usage_by_source SELECT 0, "
    + _json_columns((5, len(LEVEL_COLUMNS)))
    + " FROM json_each(?) WHERE true "
    "ON CONFLICT (tier, source_id, bucket, lib_id, origin, version) DO UPDATE SET " + _ADD_LEVELS
)
_JSON_EDGES = (
    "INSERT INTO edges SELECT 0, "
    + _json_columns((4,))
    + ", json_extract(value, '$[1]') FROM json_each(?) WHERE true "
    "ON CONFLICT (tier, lib_id, bucket, env_id, importer_id) "
    "DO UPDATE SET count = count + excluded.count"
)
_JSON_REPORTS = (
    "INSERT INTO reports SELECT 0, "
    + _json_columns((2,))
    + ", json_extract(value, '$[1]') FROM json_each(?) WHERE true "
    "ON CONFLICT (tier, source_id, bucket) DO UPDATE SET count = count + excluded.count"
)


_JSON_PROGRAMS = (
    "INSERT INTO programs SELECT 0, "
    + _json_columns((4,))
    + ", json_extract(value, '$[1]') FROM json_each(?) WHERE true "
    "ON CONFLICT (tier, source_id, bucket, lib_id, version) "
    "DO UPDATE SET count = count + excluded.count"
)
#: The tier-0 sketches a job adds to, read in one statement.
_JSON_SKETCHES = (
    "SELECT s.source_id, s.bucket, s.lib_id, s.version, s.kind, s.registers "
    "FROM json_each(?) AS j CROSS JOIN sketches_by_source s ON s.tier = 0 "  # j outer
    "AND s.source_id = json_extract(j.value, '$[0]') AND s.bucket = json_extract(j.value, '$[1]') "
    "AND s.lib_id = json_extract(j.value, '$[2]') AND s.version = json_extract(j.value, '$[3]') "
    "AND s.kind = json_extract(j.value, '$[4]')"
)


def has_json(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has the JSON functions (built in since 3.38, usual before)."""
    try:
        conn.execute("SELECT json_extract('[1]', '$[0]'), (SELECT 1 FROM json_each('[]'))")
    except sqlite3.OperationalError:
        return False
    return True


def _write_tier0(
    conn: sqlite3.Connection,
    job: Pending,
    tiers: Sequence[Tier],
    rolled_until: int,
    use_json: bool,
    live: LiveSketches,
) -> bool:
    """Tier-0 rows; rows of buckets already rolled up also go to the temporary ``late_*``
    tables (emptied first). Returns whether there were any such late rows."""
    if use_json:
        if job.usage:
            conn.execute(_JSON_USAGE, (json.dumps(list(job.usage.items())),))
        if job.edges:
            conn.execute(_JSON_EDGES, (json.dumps(list(job.edges.items())),))
        if job.reports:
            conn.execute(_JSON_REPORTS, (json.dumps(list(job.reports.items())),))
        if job.programs:
            conn.execute(_JSON_PROGRAMS, (json.dumps(list(job.programs.items())),))
    else:
        conn.executemany(
            _UPSERT_USAGE.format(table="usage_by_source"),
            [(*key, *counts) for key, counts in job.usage.items()],
        )
        conn.executemany(
            _UPSERT_EDGES.format(table="edges"), [(*k, n) for k, n in job.edges.items()]
        )
        conn.executemany(
            _UPSERT_REPORTS.format(table="reports"), [(*k, n) for k, n in job.reports.items()]
        )
        conn.executemany(
            _UPSERT_PROGRAMS.format(table="programs"), [(*k, n) for k, n in job.programs.items()]
        )
    _write_sketches(conn, job.sketches, use_json, live, rolled_until)
    late_usage = [(*k, *v) for k, v in job.usage.items() if k[1] < rolled_until]
    late_edges = [(*k, n) for k, n in job.edges.items() if k[1] < rolled_until]
    late_reports = [(*k, n) for k, n in job.reports.items() if k[1] < rolled_until]
    late_programs = [(*k, n) for k, n in job.programs.items() if k[1] < rolled_until]
    late_sketches = [
        (*key, encode(_registers(registers)))
        for key, registers in job.sketches.items()
        if key[1] < rolled_until
    ]
    if late_sketches:
        _derive_sketches(conn, tiers, late_sketches)
    late_rows = bool(late_usage or late_edges or late_reports or late_programs)
    if late_rows or late_sketches:
        renew_rolled_rows(conn)
    if not late_rows:
        return False
    for table in ("late_usage", "late_edges", "late_reports", "late_programs"):
        conn.execute(f"DELETE FROM {table}")
    conn.executemany(_UPSERT_USAGE.format(table="late_usage"), late_usage)
    conn.executemany(_UPSERT_EDGES.format(table="late_edges"), late_edges)
    conn.executemany(_UPSERT_REPORTS.format(table="late_reports"), late_reports)
    conn.executemany(_UPSERT_PROGRAMS.format(table="late_programs"), late_programs)
    return True


def _registers(pairs: dict[int, int]) -> Registers:
    sketch = Registers()
    sketch.merge_registers(dict(pairs))
    return sketch


#: Bytes (as :meth:`Registers.size` estimates them) the writer's copy of the live sketches
#: holds at most; when a job takes it past that, the sketches held longest go until half is
#: left.
MAX_LIVE_SKETCH_BYTES = 32 << 20


class LiveSketches:
    """The writer's copy of tier-0 sketches of buckets not rolled up yet, as committed: a job
    then reads from the database only the sketches this copy lacks, and writes back only those
    it raised (people seen before in a bucket raise none). Only the one writer changes tier-0
    sketches while it runs (``popcon forget`` waits for its lock), so the copy stays true as
    long as every failed transaction empties it (:func:`write_job` does) and the buckets rolled
    up leave it (:meth:`forget_before`). Bounded by :data:`MAX_LIVE_SKETCH_BYTES`."""

    __slots__ = ("by_key", "held")

    def __init__(self) -> None:
        self.by_key: dict[SketchKey, Registers] = {}
        self.held = 0  # bytes, as Registers.size estimates them

    def clear(self) -> None:
        self.by_key.clear()
        self.held = 0

    def forget_before(self, bucket: int) -> None:
        """Leave out the sketches of buckets before ``bucket`` (rolled up)."""
        for key in [key for key in self.by_key if key[1] < bucket]:
            self.held -= self.by_key.pop(key).size()

    def make_room(self) -> None:
        """Past :data:`MAX_LIVE_SKETCH_BYTES`, drop the sketches held longest, down to half."""
        if self.held <= MAX_LIVE_SKETCH_BYTES:
            return
        by_key = self.by_key
        while self.held > MAX_LIVE_SKETCH_BYTES // 2:
            self.held -= by_key.pop(next(iter(by_key))).size()


def _write_sketches(
    conn: sqlite3.Connection,
    sketches: dict[SketchKey, dict[int, int]],
    use_json: bool,
    live: LiveSketches,
    rolled_until: int,
) -> None:
    """Merge a job's contributions into the tier-0 sketches: the ones ``live`` lacks are read
    (and held from then on, unless rolled up already), the ones raised written back."""
    if not sketches:
        return
    held = live.by_key
    missing = [key for key in sketches if key not in held]
    read = {key: Registers() for key in missing}
    if not missing:
        rows = []
    elif use_json:
        rows = conn.execute(_JSON_SKETCHES, (json.dumps(missing),)).fetchall()
    else:
        rows = []
        for key in missing:
            found = conn.execute(
                "SELECT source_id, bucket, lib_id, version, kind, registers "
                "FROM sketches_by_source WHERE tier = 0 AND source_id = ? AND bucket = ? "
                "AND lib_id = ? AND version = ? AND kind = ?",
                key,
            ).fetchone()
            if found is not None:
                rows.append(found)
    for source_id, bucket, lib_id, version, kind, blob in rows:
        read[(source_id, bucket, lib_id, version, kind)].merge(blob)
    raised = []
    for key, pairs in sketches.items():
        sketch = read.get(key)
        if sketch is None:
            sketch = held[key]
            before = sketch.size()
            if sketch.raise_ranks(pairs):
                raised.append((*key, encode(sketch)))
                live.held += sketch.size() - before
        else:
            if sketch.raise_ranks(pairs):
                raised.append((*key, encode(sketch)))
            if key[1] >= rolled_until:
                held[key] = sketch
                live.held += sketch.size()
    conn.executemany(
        "INSERT OR REPLACE INTO sketches_by_source VALUES (0, ?, ?, ?, ?, ?, ?)", raised
    )
    live.make_room()


def _derive_sketches(
    conn: sqlite3.Connection,
    tiers: Sequence[Tier],
    rows: Iterable[tuple[int, int, int, str, int, bytes]],
) -> None:
    """Merge tier-0 sketches ``(source, bucket, library, version, kind, registers)`` into
    ``sketches_by_library`` of every tier and ``sketches_by_source`` of every coarser one."""
    by_library: dict[tuple[int, int, int, int], Registers] = {}
    by_source: dict[tuple[int, int, int, int, str, int], Registers] = {}
    for source_id, bucket, lib_id, version, kind, blob in rows:
        for index, tier in enumerate(tiers):
            start = bucket - bucket % tier.width
            library_key = (index, lib_id, start, kind)
            sketch = by_library.get(library_key)
            if sketch is None:
                sketch = by_library[library_key] = Registers()
            sketch.merge(blob)
            if index:
                source_key = (index, source_id, start, lib_id, version, kind)
                sketch = by_source.get(source_key)
                if sketch is None:
                    sketch = by_source[source_key] = Registers()
                sketch.merge(blob)
    for index, start in {(key[0], key[2]) for key in by_library}:
        for lib_id, kind, blob in conn.execute(
            "SELECT lib_id, kind, registers FROM sketches_by_library WHERE tier = ? "
            "AND lib_id IN (SELECT id FROM libs) AND bucket = ?",
            (index, start),
        ):
            sketch = by_library.get((index, lib_id, start, kind))
            if sketch is not None:
                sketch.merge(blob)
    for index, start in {(key[0], key[2]) for key in by_source}:
        for source_id, lib_id, version, kind, blob in conn.execute(
            "SELECT source_id, lib_id, version, kind, registers FROM sketches_by_source "
            "WHERE tier = ? AND source_id IN (SELECT id FROM sources) AND bucket = ?",
            (index, start),
        ):
            sketch = by_source.get((index, source_id, start, lib_id, version, kind))
            if sketch is not None:
                sketch.merge(blob)
    conn.executemany(
        "INSERT OR REPLACE INTO sketches_by_library VALUES (?, ?, ?, ?, ?)",
        [(*key, encode(sketch)) for key, sketch in by_library.items()],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO sketches_by_source VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*key, encode(sketch)) for key, sketch in by_source.items()],
    )


def _write_inventories(conn: sqlite3.Connection, job: Pending) -> None:
    for env_id, (inventory_id, bucket, inventory) in job.inventories.items():
        conn.execute("DELETE FROM inventory WHERE env_id = ?", (env_id,))
        conn.executemany(
            "INSERT INTO inventory (env_id, name, version, requested, requires) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (
                    env_id,
                    name,
                    version,
                    None if requested is None else int(requested),
                    None if requires is None else ",".join(requires[:MAX_REQUIRES]),
                )
                for name, (version, requested, requires) in inventory.items()
            ],
        )
        conn.execute(
            "UPDATE envs SET inventory_id = ?, inventory_at = ? WHERE id = ?",
            (inventory_id, bucket, env_id),
        )


def _derive(
    conn: sqlite3.Connection,
    tiers: Sequence[Tier],
    low: int,
    high: int,
    usage: str = "usage_by_source",
    edges: str = "edges",
    reports: str = "reports",
    programs: str = "programs",
) -> None:
    """Add tier-0 rows of buckets ``[low, high)`` (from the given tables) to
    ``usage_by_library``, every coarser tier and the totals."""
    range_args = (low, high)
    sources = "AND source_id IN (SELECT id FROM sources)" if usage == "usage_by_source" else ""
    libs = "AND lib_id IN (SELECT id FROM libs)" if edges == "edges" else ""
    where = f"WHERE tier = 0 {sources} AND bucket >= ? AND bucket < ?"
    u_sources = "AND u." + sources[4:] if sources else ""
    r_sources = "AND r." + sources[4:] if sources else ""
    for index, tier in enumerate(tiers):
        width = tier.width
        start = f"bucket - bucket % {int(width)}"
        conn.execute(
            f"INSERT INTO usage_by_library SELECT {index}, {start}, lib_id, origin, {_SUMS} "
            f"FROM {usage} {where} GROUP BY 2, lib_id, origin "
            f"ON CONFLICT (tier, bucket, lib_id, origin) DO UPDATE SET {_ADD_LEVELS}",
            range_args,
        )
        if index == 0:
            continue
        conn.execute(
            f"INSERT INTO usage_by_source SELECT {index}, source_id, {start}, lib_id, origin, "
            f"version, {_SUMS} FROM {usage} {where} "
            "GROUP BY source_id, 3, lib_id, origin, version "
            "ON CONFLICT (tier, source_id, bucket, lib_id, origin, version) "
            f"DO UPDATE SET {_ADD_LEVELS}",
            range_args,
        )
        conn.execute(
            f"INSERT INTO edges SELECT {index}, lib_id, {start}, env_id, importer_id, SUM(count) "
            f"FROM {edges} WHERE tier = 0 {libs} AND bucket >= ? AND bucket < ? "
            "GROUP BY lib_id, 3, env_id, importer_id "
            "ON CONFLICT (tier, lib_id, bucket, env_id, importer_id) "
            "DO UPDATE SET count = count + excluded.count",
            range_args,
        )
        conn.execute(
            f"INSERT INTO reports SELECT {index}, source_id, {start}, SUM(count) "
            f"FROM {reports} {where} GROUP BY source_id, 3 "
            "ON CONFLICT (tier, source_id, bucket) DO UPDATE SET count = count + excluded.count",
            range_args,
        )
        conn.execute(
            f"INSERT INTO programs SELECT {index}, source_id, {start}, lib_id, version, "
            f"SUM(count) FROM {programs} {where} GROUP BY source_id, 3, lib_id, version "
            "ON CONFLICT (tier, source_id, bucket, lib_id, version) "
            "DO UPDATE SET count = count + excluded.count",
            range_args,
        )
    for level, column in enumerate(LEVEL_COLUMNS):
        conn.execute(
            f"INSERT INTO total_usage SELECT s.env_id, u.lib_id, {level}, SUM(u.{column}), "
            f"MAX(u.bucket) FROM {usage} u JOIN sources s ON s.id = u.source_id "
            f"WHERE u.tier = 0 {u_sources} AND u.bucket >= ? AND u.bucket < ? AND u."
            f"{column} > 0 GROUP BY s.env_id, u.lib_id "
            "ON CONFLICT (env_id, lib_id, level) DO UPDATE SET count = count + excluded.count, "
            "last_seen = max(last_seen, excluded.last_seen)",
            range_args,
        )
    conn.execute(
        "INSERT INTO total_versions SELECT s.env_id, u.lib_id, u.version, "
        f"SUM({_ALL_PROCESSES}), MAX(u.bucket) FROM {usage} u "
        f"JOIN sources s ON s.id = u.source_id WHERE u.tier = 0 {u_sources} AND u.bucket >= ? "
        f"AND u.bucket < ? AND {_ALL_PROCESSES} > 0 "
        "GROUP BY s.env_id, u.lib_id, u.version "
        "ON CONFLICT (env_id, lib_id, version) DO UPDATE SET count = count + excluded.count, "
        "last_seen = max(last_seen, excluded.last_seen)",
        range_args,
    )
    conn.execute(
        "INSERT INTO total_reports SELECT s.env_id, SUM(r.count), MAX(r.bucket) "
        f"FROM {reports} r JOIN sources s ON s.id = r.source_id "
        f"WHERE r.tier = 0 {r_sources} AND r.bucket >= ? AND r.bucket < ? GROUP BY s.env_id "
        "ON CONFLICT (env_id) DO UPDATE SET count = count + excluded.count, "
        "last_seen = max(last_seen, excluded.last_seen)",
        range_args,
    )


def write_job(
    conn: sqlite3.Connection,
    job: Pending,
    tiers: Sequence[Tier],
    rolled_until: int,
    *,
    use_json: bool = True,
    live: LiveSketches | None = None,
) -> None:
    """Write one job in one transaction; on any error roll back, empty ``live`` and re-raise
    (the caller gives the job back, to be merged into the next one). ``use_json``: feed the
    tier-0 upserts through one JSON array each (:func:`has_json`), else row by row. ``live``:
    the writer's copy of the live sketches (:class:`LiveSketches`); without it, every sketch
    the job adds to is read."""
    live = LiveSketches() if live is None else live
    conn.execute("BEGIN IMMEDIATE")
    try:
        _write_catalog(conn, job)
        _forget_released(conn, job)
        if _write_tier0(conn, job, tiers, rolled_until, use_json, live):
            _derive(
                conn,
                tiers,
                0,
                rolled_until,
                "late_usage",
                "late_edges",
                "late_reports",
                "late_programs",
            )
        _write_inventories(conn, job)
        conn.executemany(
            "INSERT INTO datagram_results VALUES (?, ?) ON CONFLICT (reason) "
            "DO UPDATE SET count = count + excluded.count",
            [(reason, count) for reason, count in job.results.items() if count],
        )
        conn.execute("COMMIT")
    except BaseException:
        live.clear()  # it may hold what was rolled back
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def roll_up(conn: sqlite3.Connection, tiers: Sequence[Tier], low: int, high: int) -> None:
    """Derive everything from the tier-0 buckets ``[low, high)`` and set ``rolled_until``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _derive(conn, tiers, low, high)
        _derive_sketches(
            conn,
            tiers,
            conn.execute(
                "SELECT source_id, bucket, lib_id, version, kind, registers "
                "FROM sketches_by_source WHERE tier = 0 AND source_id IN (SELECT id FROM sources) "
                "AND bucket >= ? AND bucket < ?",
                (low, high),
            ).fetchall(),
        )
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('rolled_until', ?)", (str(high),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def sweep(
    conn: sqlite3.Connection, tiers: Sequence[Tier], now: float, *, forget_names: bool = False
) -> None:
    """Delete what is older than each tier keeps, and totals not seen within the retention
    (the keep of the coarsest tier). With ``forget_names`` (only when no receiver holds ids:
    at start), also environments, label sets and library names not seen within it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cutoff = 0
        rolled_until = read_rolled_until(conn) or 0
        for index, tier in enumerate(tiers):
            cutoff = int(now) - tier.keep
            cutoff -= cutoff % tier.width
            # Tier-0 rows not rolled up yet are the only copy of their counts: never delete.
            args = (index, min(cutoff, rolled_until) if index == 0 else cutoff)
            for table in ("usage_by_source", "reports", "sketches_by_source", "programs"):
                conn.execute(
                    f"DELETE FROM {table} WHERE tier = ? AND source_id IN "
                    "(SELECT id FROM sources) AND bucket < ?",
                    args,
                )
            conn.execute(
                "DELETE FROM edges WHERE tier = ? AND lib_id IN (SELECT id FROM libs) "
                "AND bucket < ?",
                args,
            )
            for table in ("usage_by_library", "sketches_by_library"):
                conn.execute(
                    f"DELETE FROM {table} WHERE tier = ? AND lib_id IN "
                    "(SELECT id FROM libs) AND bucket < ?",
                    args,
                )
        for table in ("total_usage", "total_versions", "total_reports"):
            conn.execute(f"DELETE FROM {table} WHERE last_seen < ?", (cutoff,))
        if forget_names:
            old_envs = [
                (row[0],)
                for row in conn.execute("SELECT id FROM envs WHERE last_seen < ?", (cutoff,))
            ]
            for table, column in (("inventory", "env_id"), ("sources", "env_id"), ("envs", "id")):
                conn.executemany(f"DELETE FROM {table} WHERE {column} = ?", old_envs)
            # A label set's rows are all older than its last_seen, so none is left.
            conn.execute("DELETE FROM sources WHERE last_seen < ?", (cutoff,))
            conn.execute(
                "DELETE FROM libs WHERE id NOT IN (SELECT lib_id FROM total_usage) "
                "AND id NOT IN (SELECT importer_id FROM edges) "
                "AND id NOT IN (SELECT lib_id FROM programs) AND id NOT IN "
                "(SELECT lib_id FROM usage_by_source WHERE tier = 0 "
                "AND source_id IN (SELECT id FROM sources) AND bucket >= ?)",
                (rolled_until,),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def load_catalog(conn: sqlite3.Connection) -> Catalog:
    """Ids and names from the database, and what counts toward the caps with the last
    bucket it was seen in (the all-time totals and the tier-0 rows not rolled up yet; for
    importers, the tier-0 edges), so caps and their releases hold across restarts."""
    catalog = Catalog()
    live_rows = (
        "FROM usage_by_source u JOIN sources s ON s.id = u.source_id WHERE u.tier = 0 "
        "AND u.bucket >= COALESCE((SELECT CAST(value AS INTEGER) FROM meta "
        "WHERE key = 'rolled_until'), 0)"
    )
    for env_id, name, last_seen in conn.execute("SELECT id, name, last_seen FROM envs"):
        catalog.envs[name] = env_id
        catalog.live_envs.seen[env_id] = last_seen
        catalog.label_sets[env_id] = Capped()
        catalog.env_libs[env_id] = EnvLibraries(env_id)
    for source_id, env_id, labels, last_seen in conn.execute(
        "SELECT id, env_id, labels, last_seen FROM sources"
    ):
        catalog.sources[(env_id, labels)] = source_id
        catalog.label_sets[env_id].seen[source_id] = last_seen
    catalog.libs.update(
        (name, lib_id) for lib_id, name in conn.execute("SELECT id, name FROM libs")
    )
    for env_id, lib_id, last in conn.execute(
        "SELECT env_id, lib_id, MAX(last) FROM (SELECT env_id, lib_id, last_seen AS last "
        "FROM total_usage UNION ALL SELECT env_id, importer_id, MAX(bucket) FROM edges "
        "GROUP BY env_id, importer_id UNION ALL SELECT s.env_id, u.lib_id, MAX(u.bucket) "
        f"{live_rows} GROUP BY s.env_id, u.lib_id) GROUP BY env_id, lib_id"
    ):
        if env_id in catalog.env_libs:
            catalog.env_libs[env_id].see(lib_id, last)
            catalog.live_libs.see(lib_id, last)
    for env_id, lib_id, version, last in conn.execute(
        "SELECT env_id, lib_id, version, MAX(last) FROM (SELECT env_id, lib_id, version, "
        "last_seen AS last FROM total_versions UNION ALL SELECT s.env_id, u.lib_id, u.version, "
        f"MAX(u.bucket) {live_rows} GROUP BY s.env_id, u.lib_id, u.version) "
        "GROUP BY env_id, lib_id, version"
    ):
        _load_pair(catalog.versions, (env_id, lib_id), version, last)
    for env_id, lib_id, importer_id, last in conn.execute(
        "SELECT env_id, lib_id, importer_id, MAX(bucket) FROM edges WHERE tier = 0 "
        "GROUP BY env_id, lib_id, importer_id"
    ):
        _load_pair(catalog.importers, (env_id, lib_id), importer_id, last)
    for table, attribute in (
        ("envs", "next_env"),
        ("sources", "next_source"),
        ("libs", "next_lib"),
    ):
        (top,) = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()
        setattr(catalog, attribute, top + 1)
    return catalog


K = TypeVar("K")


def _load_pair(caps: PairCaps[K], pair: Pair, key: K, last: int) -> None:
    """Count ``key`` (seen last in bucket ``last``) under ``pair`` as loaded."""
    capped = caps.pairs.get(pair)
    if capped is None:
        capped = caps.pairs[pair] = Capped()
    elif key not in capped:
        caps.extra += 1
    capped.see(key, last)

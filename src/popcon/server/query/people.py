"""Distinct people: the sketches of a window's buckets merged, per row of an answer.

The collector keeps, per (library, label set, level, bucket), a sketch of the people whose
processes reported the library at that level (``popcon.server.storage.sketch``); the people of
any window and filter are the merge of the sketches it covers. An answer's ``users`` is that
estimate, or ``None`` where no sketch contributed (``popcon/1`` recorders, statsd lines and
processes without a person send none): unknown, never 0.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Optional, TypeVar

from popcon.protocol import DIRECT, ORIGINS, PROGRAM, TRANSITIVE
from popcon.server.query.connection import snapshot
from popcon.server.query.sql import SKETCH_TABLES, usage_statements
from popcon.server.query.window import answered_span
from popcon.server.storage.schema import RAN, SKETCH_KINDS, sketch_code, sketch_kind_of
from popcon.server.storage.sketch import Registers

#: The sketches of people's code, and with the programs' own imports.
PEOPLE = (DIRECT, TRANSITIVE)
WITH_PROGRAMS = (DIRECT, TRANSITIVE, PROGRAM)
RUNS = (RAN,)

Key = TypeVar("Key", bound=Hashable)
#: A row's sketches, one per kind of ``SKETCH_KINDS`` (None where none contributed).
Kinds = list[Optional[Registers]]


def kinds_where(kinds: Sequence[str], origin: str | None = None) -> str:
    """The SQL condition keeping the sketches of ``kinds``, of records of ``origin`` only when
    given."""
    origins = ORIGINS if origin is None else (origin,)
    codes = sorted(sketch_code(kind, each) for kind in kinds for each in origins)
    return f"kind IN ({','.join(map(str, codes))})"


def gather(
    conn: sqlite3.Connection, statements: Iterable[str], key_of: int = 1
) -> dict[tuple[Any, ...], Kinds]:
    """The sketches of ``statements`` (each selecting ``<key columns>, kind, registers``, the
    first ``key_of`` columns the key), merged per key and kind."""
    found: dict[tuple[Any, ...], Kinds] = {}
    width = len(SKETCH_KINDS)
    sketches: Kinds | None
    for statement in statements:
        for row in conn.execute(statement):
            key = tuple(row[:key_of])
            kind, blob = sketch_kind_of(row[key_of]), row[key_of + 1]
            sketches = found.get(key)
            if sketches is None:
                sketches = found[key] = [None] * width
            sketch = sketches[kind]
            if sketch is None:
                sketch = sketches[kind] = Registers()
            sketch.merge(blob)
    return found


def merge_into(into: dict[Key, Kinds], key: Key, sketches: Kinds) -> None:
    """Add one row's sketches to the row ``key`` of ``into`` (for rows that group several)."""
    have = into.get(key)
    if have is None:
        have = into[key] = [None] * len(SKETCH_KINDS)
    for kind, sketch in enumerate(sketches):
        if sketch is None:
            continue
        if have[kind] is None:
            have[kind] = Registers()
        target = have[kind]
        assert target is not None
        target.merge_sketch(sketch)


def users(sketches: Kinds | None, kinds: Sequence[str] = PEOPLE) -> int | None:
    """The people of the union of ``kinds``: None when the row has no sketch of any kind (no
    record of it carried a person), 0 when it has people but none of ``kinds``."""
    if sketches is None or not any(sketch is not None for sketch in sketches):
        return None
    present = [sketches[SKETCH_KINDS.index(kind)] for kind in kinds]
    chosen = [sketch for sketch in present if sketch is not None]
    if not chosen:
        return 0
    if len(chosen) == 1:
        return chosen[0].people()
    union = Registers()
    for sketch in chosen:
        union.merge_sketch(sketch)
    return union.people()


def library_users(
    conn: sqlite3.Connection, start: float, end: float, *, now: float | None = None
) -> dict[str, int]:
    """Per library, the people whose code used it (directly or through other libraries) in
    ``[start, end)``, over every environment: libraries without a sketch are left out. One
    read of the sketch tables, none of the usage tables (``/metrics``' users gauge)."""
    with snapshot(conn) as rolled:
        counted = answered_span(conn, start, end, now)
        found = gather(
            conn,
            usage_statements(
                counted,
                rolled,
                select="lib_id, kind, registers",
                where=kinds_where(PEOPLE),
                tables=SKETCH_TABLES,
            ),
        )
        names = dict(conn.execute("SELECT id, name FROM libs")) if found else {}
    counts = {}
    for (lib_id,), sketches in found.items():
        name = names.get(lib_id)
        people = users(sketches, PEOPLE)
        if name is not None and people:
            counts[name] = people
    return counts

"""Distinct people: the sketches of a window's buckets merged, per row of an answer.

The collector keeps, per (library, label set, level, bucket), a sketch of the people whose
processes reported the library at that level (``popcon.server.storage.sketch``); the people of
any window and filter are the merge of the sketches it covers. An answer's ``users`` is that
estimate, or ``None`` where no sketch contributed (``popcon/1`` recorders, statsd lines and
processes without a person send none): unknown, never 0.

The answers over every library (``top``, ``/metrics``' users gauge) count each library's
people with :func:`window_people`: tallies (a sketch with its estimate's sums) of the buckets
rolled up, kept between answers (:mod:`~.kept`), and the sketches of the finest buckets not
rolled up yet, merged at every answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, NamedTuple, Optional, TypeVar

from popcon.protocol import DIRECT, ORIGINS, PROGRAM, TRANSITIVE
from popcon.server.query.connection import snapshot
from popcon.server.query.kept import rolled_part, sources_key
from popcon.server.query.sql import SKETCH_TABLES, usage_statements
from popcon.server.query.window import Span, answered_span
from popcon.server.storage.schema import RAN, SKETCH_KINDS, sketch_code, sketch_kind_of
from popcon.server.storage.sketch import Registers, Tally, tally

#: The sketches of people's code, and with the programs' own imports.
PEOPLE = (DIRECT, TRANSITIVE)
WITH_PROGRAMS = (DIRECT, TRANSITIVE, PROGRAM)
RUNS = (RAN,)

Key = TypeVar("Key", bound=Hashable)
#: A row's sketches, one per kind of ``SKETCH_KINDS`` (None where none contributed).
Kinds = list[Optional[Registers]]
#: Kinds whose union an answer counts (``PEOPLE``, ``(DIRECT,)``, …).
KindSet = tuple[str, ...]


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


def union(sketches: Kinds, kinds: Sequence[str]) -> Registers | None:
    """The sketch of the people of any of ``kinds`` (one of ``sketches`` itself when only one
    has them), None when none of them has any."""
    chosen = [sketches[SKETCH_KINDS.index(kind)] for kind in kinds]
    present = [sketch for sketch in chosen if sketch is not None]
    if len(present) <= 1:
        return present[0] if present else None
    merged = Registers()
    for sketch in present:
        merged.merge_sketch(sketch)
    return merged


def users(sketches: Kinds | None, kinds: Sequence[str] = PEOPLE) -> int | None:
    """The people of the union of ``kinds``: None when the row has no sketch of any kind (no
    record of it carried a person), 0 when it has people but none of ``kinds``."""
    if sketches is None or not any(sketch is not None for sketch in sketches):
        return None
    merged = union(sketches, kinds)
    return 0 if merged is None else merged.people()


class Tallies(NamedTuple):
    """Per key, one :class:`~popcon.server.storage.sketch.Tally` per kind set (None: no sketch
    of those kinds), for every key that had a sketch of any kind; ``size``: about the bytes
    they hold."""

    rows: dict[tuple[Any, ...], list[Tally | None]]
    size: int


def tallied(
    found: dict[tuple[Any, ...], Kinds],
    kind_sets: Sequence[KindSet],
    onto: Tallies | None = None,
) -> Tallies:
    """The tallies of ``found`` (from :func:`gather`), merged with those of ``onto`` (which
    stay as they are)."""
    rows = dict(onto.rows) if onto is not None else {}
    size = onto.size if onto is not None else 0
    for key, sketches in found.items():
        had = rows.get(key)
        row: list[Tally | None] = []
        for index, kinds in enumerate(kind_sets):
            base = had[index] if had is not None else None
            more = union(sketches, kinds)
            if more is None:
                row.append(base)
                continue
            made = tally(more) if base is None else base.with_registers(more)
            size += made.size() - (base.size() if base is not None else 0)
            row.append(made)
        rows[key] = row
    return Tallies(rows, size)


class WindowPeople:
    """The people of each key of a window, per kind set: the tallies of the buckets of its
    tier, and the sketches of the finest buckets not rolled up yet (``live``)."""

    def __init__(
        self,
        kind_sets: Sequence[KindSet],
        tallies: Tallies,
        live: dict[tuple[Any, ...], Kinds],
    ) -> None:
        self.kind_sets = list(kind_sets)
        self.tallies = tallies.rows
        self.live = live

    @classmethod
    def nobody(cls, kind_sets: Sequence[KindSet]) -> WindowPeople:
        """No sketches: every key's users unknown."""
        return cls(kind_sets, Tallies({}, 0), {})

    def users(self, key: tuple[Any, ...], kinds: KindSet) -> int | None:
        """As :func:`users`: None when the key had no sketch of any kind, 0 when none of
        ``kinds``; ``kinds`` is one of the kind sets asked for."""
        kept = self.tallies.get(key)
        live = self.live.get(key)
        if kept is None and (live is None or live.count(None) == len(live)):
            return None
        base = kept[self.kind_sets.index(kinds)] if kept is not None else None
        more = union(live, kinds) if live is not None else None
        if base is None:
            return 0 if more is None else more.people()
        return base.people_with(more)


def window_people(
    conn: sqlite3.Connection,
    span: Span,
    rolled: int,
    *,
    kind_sets: Sequence[KindSet],
    select: str,
    where: str,
    sources: Sequence[int] | None = None,
    now: float | None = None,
) -> WindowPeople:
    """The people of the sketches of ``span`` (``select``: ``<key column>, kind, registers``
    as :func:`~.sql.usage_statements` reads them), per key and kind set, the tallies of its
    rolled-up buckets kept between answers (:func:`~.kept.rolled_part`); inside the caller's
    :func:`~.connection.snapshot` (``rolled``)."""

    def statements(part: Span, rolled_in: int) -> list[str]:
        return usage_statements(
            part, rolled_in, select=select, sources=sources, where=where, tables=SKETCH_TABLES
        )

    def read(onto: Tallies | None, statements: list[str]) -> Tallies:
        return tallied(gather(conn, statements), kind_sets, onto)

    question = ("people", tuple(kind_sets), select, where, sources_key(sources))
    tallies, unrolled = rolled_part(
        conn,
        span,
        rolled,
        question=question,
        statements=statements,
        read=read,
        size=lambda tallies: tallies.size,
        now=now,
    )
    return WindowPeople(kind_sets, tallies, gather(conn, unrolled))


def library_users(
    conn: sqlite3.Connection, start: float, end: float, *, now: float | None = None
) -> dict[str, int]:
    """Per library, the people whose code used it (directly or through other libraries) in
    ``[start, end)``, over every environment: libraries without a sketch are left out. One
    read of the sketch tables, none of the usage tables (``/metrics``' users gauge)."""
    with snapshot(conn) as rolled:
        counted = answered_span(conn, start, end, now)
        found = window_people(
            conn,
            counted,
            rolled,
            kind_sets=(PEOPLE,),
            select="lib_id, kind, registers",
            where=kinds_where(PEOPLE),
            now=now,
        )
        keys = found.tallies.keys() | found.live.keys()
        names = dict(conn.execute("SELECT id, name FROM libs")) if keys else {}
    counts = {}
    for key in keys:
        name = names.get(key[0])
        people = found.users(key, PEOPLE)
        if name is not None and people:
            counts[name] = people
    return counts

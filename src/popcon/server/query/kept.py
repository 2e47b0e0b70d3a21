"""What answers keep between them: the part of a window the writer has rolled up.

The answers over every library (``top``, ``/metrics``' users gauge) read a month of daily rows
for thousands of libraries, and their people are merges of as many sketches. Rows of buckets
already rolled up change only when records arrive late or something is forgotten, and the
database's :data:`~popcon.server.storage.schema.ROLLED_ROWS` token changes with them. So
:func:`rolled_part` keeps, per database, window and question, what was read of the window's
rows up to ``rolled_until`` (the sums of counts, the tallies of people) while that token stays
the same; when the writer has rolled up more, it adds the finest buckets rolled up since (when
the finest tier still holds them, else it reads the window afresh); every answer reads the
finest buckets not rolled up yet itself. A window is only kept while its tier still holds its
start (the buckets before are being deleted). All kept values together are bounded by
:data:`KEPT_BYTES`, the least recently used dropped first.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple, TypeVar

from popcon.server.query.window import Span, holds, utcnow
from popcon.server.storage.schema import ROLLED_ROWS, Tier, read_tiers

#: Most bytes (about) of the values kept, for every database together.
KEPT_BYTES = 128 * 2**20

Value = TypeVar("Value")
#: The SQL of a part of a window: ``statements(span, rolled)``, as ``sql.usage_statements``.
Statements = Callable[[Span, int], list[str]]


class Kept(NamedTuple):
    """A value of a window's rows rolled up ``until`` then, and about its bytes."""

    value: Any
    until: int
    size: int


class _Kept:
    """Kept values by key, least recently used dropped first past ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[Hashable, Kept] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Kept | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, kept: Kept) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old.size
            if kept.size > self.budget:
                return
            self._entries[key] = kept
            self._size += kept.size
            while self._size > self.budget:
                _key, dropped = self._entries.popitem(last=False)
                self._size -= dropped.size

    def size(self) -> int:
        """About the bytes kept."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0


KEPT = _Kept(KEPT_BYTES)


def rolled_part(
    conn: sqlite3.Connection,
    span: Span,
    rolled: int,
    *,
    question: Hashable,
    statements: Statements,
    read: Callable[[Value | None, list[str]], Value],
    size: Callable[[Value], int],
    now: float | None = None,
) -> tuple[Value, list[str]]:
    """The value of ``span``'s rows rolled up (``read(None, statements)``, or a kept one
    brought up to date with ``read(kept, statements)``, which must leave the kept one as it
    is), and the statements of the finest buckets not rolled up yet; inside the caller's
    :func:`~.connection.snapshot` (``rolled``). ``question`` tells apart what is read of the
    same window (the columns, filters)."""
    now = utcnow() if now is None else now
    tiers = read_tiers(conn)
    rolled_in = min(max(rolled, span.low), span.high)
    stamp = _stamp(conn, tiers[span.tier], span, now)
    key = (stamp, span.tier, span.low, span.high, question)
    kept = KEPT.get(key) if stamp is not None else None
    if kept is not None and kept.until <= rolled_in and holds(tiers[0], kept.until, now):
        value = kept.value
        if kept.until < rolled_in:
            value = read(value, statements(_finest(tiers, span, kept.until, rolled_in), rolled_in))
    else:
        done = statements(span._replace(high=rolled_in), rolled_in) if rolled_in > span.low else []
        value = read(None, done)
    if stamp is not None and (kept is None or kept.until != rolled_in):
        KEPT.put(key, Kept(value, rolled_in, size(value)))
    unrolled = []
    if rolled_in < span.high:
        unrolled = statements(_finest(tiers, span, rolled_in, span.high), rolled_in)
    return value, unrolled


def sources_key(sources: Sequence[int] | None) -> tuple[int, ...] | None:
    """The label sets an answer reads (``sql.source_ids``; None: all), as part of a
    ``question``."""
    return tuple(sources) if sources is not None else None


def _finest(tiers: Sequence[Tier], span: Span, low: int, high: int) -> Span:
    """The finest tier's buckets ``[low, high)`` (edges of finest buckets) of ``span``."""
    return Span(0, tiers[0].width, low, high, span.window)


def _stamp(conn: sqlite3.Connection, tier: Tier, span: Span, now: float) -> tuple[Any, ...] | None:
    """What keeps values of this database's rolled-up rows valid: the file, and its
    :data:`~popcon.server.storage.schema.ROLLED_ROWS` token; None where none may be kept (a
    database in memory, one without the token, a window starting before what its ``tier``
    still holds)."""
    if not holds(tier, span.low, now):
        return None
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    token = conn.execute("SELECT value FROM meta WHERE key = ?", (ROLLED_ROWS,)).fetchone()
    if not path or token is None:
        return None
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return None
    return (path, inode, token[0])

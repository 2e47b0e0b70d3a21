"""Time windows: which tier answers a window, the buckets counted, and the one clock seam.

A window ``[start, end)`` (epoch seconds) is answered from the finest tier that still holds its
start and covers it in at most :data:`MAX_BUCKETS` buckets (``docs/collector-storage.md``: a
30-day window is answered from daily buckets, a 6-hour window from 10-minute buckets). The
window an answer reports (``from``/``until``) is the one actually counted: the asked window
widened to whole buckets of that tier, never past "now".

No function here reads the clock: "now" is a parameter, and :func:`utcnow` is the one place
that reads it, for callers that pass none.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import NamedTuple

from popcon.server.query.params import QueryError, ceil_to, floor_to, iso
from popcon.server.storage.schema import Tier, read_tiers

#: A window is answered from the finest tier that still holds its start and covers it in at
#: most this many buckets (6 h and 24 h: 10 minutes; 7 d: 1 hour; 30 d: 1 day).
MAX_BUCKETS = 200
#: Most points a time series may have.
MAX_POINTS = 10_000


class Span(NamedTuple):
    """The buckets ``[low, high)`` of the tier at index ``tier`` (``width`` seconds each) that
    answer a window, and the window to report (``{"from", "until"}``)."""

    tier: int
    width: int
    low: int
    high: int
    window: dict[str, str]


def utcnow() -> float:
    """The one clock seam of the query layer (used only when a caller passes no ``now``)."""
    return time.time()


def bucket_width(conn: sqlite3.Connection) -> int:
    """The width of the finest time bucket in seconds (default 600)."""
    return read_tiers(conn)[0].width


def check_window(start: float, end: float) -> None:
    if not end > start:
        raise QueryError("from: must be earlier than until")


def holds(tier: Tier, start: float, now: float) -> bool:
    """Whether ``tier`` still has buckets back to ``start``."""
    return start >= floor_to(now - tier.keep, tier.width)


def choose_tier(tiers: Sequence[Tier], start: float, end: float, now: float) -> int:
    """Index of the tier a window ``[start, end)`` is answered from."""
    for index, tier in enumerate(tiers):
        if holds(tier, start, now) and (end - start) / tier.width <= MAX_BUCKETS:
            return index
    for index, tier in enumerate(tiers):
        if holds(tier, start, now):
            return index
    return len(tiers) - 1


def series_tier(
    tiers: Sequence[Tier], start: float, end: float, now: float, step: int | None
) -> tuple[int, int]:
    """(tier index, step) for a time series: the coarsest tier whose width divides ``step``
    and that holds the window start; without ``step``, the tier :func:`choose_tier` picks."""
    if step is None:
        index = choose_tier(tiers, start, end, now)
        return index, tiers[index].width
    if step <= 0:
        raise QueryError("step: expected a positive duration")
    fitting = [i for i, t in enumerate(tiers) if step % t.width == 0 and holds(t, start, now)]
    if fitting:
        return fitting[-1], step
    index = choose_tier(tiers, start, end, now)
    width = tiers[index].width
    return index, max(width, ceil_to(step, width))


def span(tiers: Sequence[Tier], index: int, start: float, end: float, now: float) -> Span:
    """The buckets of tier ``index`` counted for ``[start, end)``; the window reported never
    reaches past ``now`` (rounded up to the finest bucket)."""
    width = tiers[index].width
    low, high = floor_to(start, width), ceil_to(end, width)
    if high == low:
        high = low + width
    shown = high if high <= now else max(min(end, high), ceil_to(now, tiers[0].width))
    return Span(index, width, low, high, {"from": iso(low), "until": iso(min(shown, high))})


def answered_span(conn: sqlite3.Connection, start: float, end: float, now: float | None) -> Span:
    """The :class:`Span` that answers ``[start, end)`` in this database (checked first)."""
    check_window(start, end)
    now = utcnow() if now is None else now
    tiers = read_tiers(conn)
    return span(tiers, choose_tier(tiers, start, end, now), start, end, now)

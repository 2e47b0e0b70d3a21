"""How raw record counts become the counts an answer shows, and the level and origin filters.

From the raw record counts d(irect), t(ransitive), u(pgrade), k (unknown: statsd lines),
p(rogram) and c(laimed) of a library in a window (``docs/protocol.md``): ``direct`` = d + u + c
(processes whose people's code imported it), ``transitive`` = max(0, t - u) (processes whose
people's code used it only through other libraries), ``processes`` = direct + transitive + k:
the processes whose people's code used it, each once, also when its upgrade record falls in
the window and its transitive record before it (``popcon/1`` records, whose cause is unknown,
count with people's code). With the programs included, ``program`` = max(0, p - c) (processes
where only the program used it) is added to ``processes``.

A ``level`` filter keeps one of those parts: ``direct``, ``transitive`` or ``unknown``.
"""

from __future__ import annotations

from collections.abc import Sequence

from popcon.protocol import DIRECT, TRANSITIVE, UNKNOWN
from popcon.server.query.params import QueryError
from popcon.server.storage.schema import ORIGIN_CODES


def parts(
    d: int,
    t: int,
    u: int,
    k: int,
    p: int = 0,
    c: int = 0,
    level: str | None = None,
    *,
    programs: bool = False,
) -> dict[str, int]:
    """``processes``/``direct``/``transitive`` from raw record counts, keeping ``level`` only
    when one is given; with ``programs``, also ``program`` (in ``processes`` too)."""
    direct = d + u + c
    transitive = max(0, t - u)
    program = max(0, p - c) if programs else 0
    if level == DIRECT:
        transitive = k = program = 0
    elif level == TRANSITIVE:
        direct = k = program = 0
    elif level == UNKNOWN:
        direct = transitive = program = 0
    elif level is not None:
        raise QueryError(f"level: expected direct, transitive or unknown, got {level!r}")
    counts = {
        "processes": direct + transitive + k + program,
        "direct": direct,
        "transitive": transitive,
    }
    if programs:
        counts["program"] = program
    return counts


def parts_of(sums: Sequence[int], *, programs: bool = False) -> dict[str, int]:
    """:func:`parts` of summed ``(d, t, u, k, p, c)``."""
    d, t, u, k, p, c = sums
    return parts(d, t, u, k, p, c, programs=programs)


def check_level(level: str | None) -> None:
    """Refuse a ``level`` filter :func:`parts` does not know."""
    parts(0, 0, 0, 0, 0, 0, level)


def origin_code(origin: str | None) -> int | None:
    """The stored code of an ``origin`` filter (``env`` or ``user``); None for no filter."""
    if origin is None:
        return None
    if origin not in ORIGIN_CODES:
        raise QueryError(f"origin: expected env or user, got {origin!r}")
    return ORIGIN_CODES[origin]

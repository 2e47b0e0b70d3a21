"""How raw record counts become the counts an answer shows, and the level and origin filters.

From the raw record counts d(irect), t(ransitive), u(pgrade) and k (unknown: statsd lines) of
a library in a window (``docs/protocol.md``): ``direct`` = d + u (processes that used it from
user code), ``transitive`` = max(0, t - u) (processes that used it only through other
libraries), ``processes`` = direct + transitive + k = d + max(t, u) + k: each process once per
library, also when its upgrade record falls in the window and its transitive record before it.

A ``level`` filter keeps one of those parts: ``direct``, ``transitive`` or ``unknown``.
"""

from __future__ import annotations

from collections.abc import Sequence

from popcon.protocol import DIRECT, TRANSITIVE, UNKNOWN
from popcon.server.query.params import QueryError
from popcon.server.storage.schema import ORIGIN_CODES


def parts(d: int, t: int, u: int, k: int, level: str | None = None) -> dict[str, int]:
    """``processes``/``direct``/``transitive`` from raw record counts, keeping ``level`` only
    when one is given."""
    direct = d + u
    transitive = max(0, t - u)
    if level == DIRECT:
        transitive = k = 0
    elif level == TRANSITIVE:
        direct = k = 0
    elif level == UNKNOWN:
        direct = transitive = 0
    elif level is not None:
        raise QueryError(f"level: expected direct, transitive or unknown, got {level!r}")
    return {"processes": direct + transitive + k, "direct": direct, "transitive": transitive}


def parts_of(sums: Sequence[int]) -> dict[str, int]:
    """:func:`parts` of summed ``(d, t, u, k)``."""
    d, t, u, k = sums
    return parts(d, t, u, k)


def check_level(level: str | None) -> None:
    """Refuse a ``level`` filter :func:`parts` does not know."""
    parts(0, 0, 0, 0, level)


def origin_code(origin: str | None) -> int | None:
    """The stored code of an ``origin`` filter (``env`` or ``user``); None for no filter."""
    if origin is None:
        return None
    if origin not in ORIGIN_CODES:
        raise QueryError(f"origin: expected env or user, got {origin!r}")
    return ORIGIN_CODES[origin]

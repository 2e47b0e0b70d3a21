"""The answers of the API and the CLI: parameters in, JSON-ready dicts out, privacy applied.

Each ``*_answer`` function takes a read-only connection, the query parameters as a plain
mapping (the HTTP query string, or what the CLI built from its options), the current time and
``min_count``; it checks the parameters (raising :class:`~popcon.server.query.params.BadParameter`),
asks :mod:`~.libraries` or :mod:`~.environments` and hides small counts. The HTTP handlers and
``popcon top --db`` both call these, so the two give the same JSON.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Callable, Optional

from popcon.server.query.environments import environments, unused, user_installed
from popcon.server.query.libraries import libraries, library_detail
from popcon.server.query.params import (
    BadParameter,
    Window,
    canonical_library,
    check_known,
    parse_duration,
    parse_filters,
    parse_window,
)
from popcon.server.query.privacy import hide_fields, sort_and_hide
from popcon.server.query.window import bucket_width

Params = Mapping[str, str]
_WINDOW = ("since", "from", "until")
_COUNTS = ("processes", "direct", "transitive")

#: Query parameters each endpoint takes (``token`` is the auth's, accepted everywhere).
ENDPOINT_PARAMS: dict[str, tuple[str, ...]] = {
    "libraries": (*_WINDOW, "env", "label", "level", "origin"),
    "library": (*_WINDOW, "env", "step"),
    "unused": (*_WINDOW, "env"),
    "user-installed": (*_WINDOW, "env"),
    "environments": (),
}
#: Most versions and importers a library's answer lists; the rest are summed in one row
#: named :data:`OTHER_VERSIONS` or :data:`OTHER_IMPORTERS` (no version or distribution name
#: holds a space, so neither can be a real one).
MAX_ROWS = 50
OTHER_VERSIONS = "other versions"
OTHER_IMPORTERS = "other importers"
#: The window an endpoint answers for when the request names none.
DEFAULT_SINCE = {
    "libraries": "6h",
    "library": "30d",
    "unused": "30d",
    "user-installed": "30d",
}


def _checked(endpoint: str, params: Params) -> None:
    check_known(params, (*ENDPOINT_PARAMS[endpoint], "token"))


def _window(endpoint: str, conn: sqlite3.Connection, params: Params, now: float) -> Window:
    return parse_window(
        params,
        now=now,
        bucket_width=bucket_width(conn),
        default_since=DEFAULT_SINCE[endpoint],
    )


def _with_min_count(answer: dict[str, Any], min_count: int) -> dict[str, Any]:
    answer["min_count"] = min_count
    return answer


def fold(
    rows: Sequence[dict[str, Any]], name: str, other: str, keep: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """``rows`` (raw counts, most processes first) with the rows past :data:`MAX_ROWS`, or
    those whose ``name`` is not in ``keep`` when given, summed into one row named ``other``."""
    if keep is None:
        kept, folded = list(rows[:MAX_ROWS]), rows[MAX_ROWS:]
    else:
        kept = [row for row in rows if row[name] in keep]
        folded = [row for row in rows if row[name] not in keep]
    if folded:
        kept.append({name: other, "processes": sum(int(row["processes"]) for row in folded)})
    return kept


def _hide_folded(
    rows: list[dict[str, Any]], name: str, other: str, min_count: int
) -> list[dict[str, object]]:
    """Sorted and hidden as any answer's rows, the ``other`` row last."""
    rest = [row for row in rows if row[name] != other]
    shown = sort_and_hide(
        rest, key="processes", fields=("processes",), min_count=min_count, name=name
    )
    shown.extend(hide_fields(row, ("processes",), min_count) for row in rows if row[name] == other)
    return shown


def libraries_answer(
    conn: sqlite3.Connection, params: Params, *, now: float, min_count: int
) -> dict[str, Any]:
    """``GET /api/v1/libraries``: libraries by processes in the window."""
    _checked("libraries", params)
    filters = parse_filters(params)
    window = _window("libraries", conn, params, now)
    answer = libraries(
        conn,
        window.start,
        window.end,
        env=filters.env,
        labels=filters.labels,
        level=filters.level,
        origin=filters.origin,
        now=now,
    )
    answer["libraries"] = sort_and_hide(
        answer["libraries"], key="processes", fields=_COUNTS, min_count=min_count
    )
    answer["filters"] = filters.as_json()
    return _with_min_count(answer, min_count)


def library_answer(
    conn: sqlite3.Connection,
    name: str,
    params: Params,
    *,
    now: float,
    min_count: int,
    versions: Collection[str] | None = None,
) -> dict[str, Any] | None:
    """``GET /api/v1/libraries/<name>``: series, versions, importers, environments; ``None``
    when the library was never seen.

    Versions and importers past the :data:`MAX_ROWS` with most processes are summed in one
    row; ``versions`` names the versions to list instead (the dashboard's history keeps
    the window's in every slice)."""
    _checked("library", params)
    name = canonical_library(name)
    filters = parse_filters(params, allowed=("env",))
    width = bucket_width(conn)
    window = _window("library", conn, params, now)
    step = None
    if params.get("step") is not None:
        step = parse_duration(params["step"], "step")
        if step < width or step % width:
            raise BadParameter("step", f"expected a multiple of the bucket width ({width} s)")
    answer = library_detail(
        conn, name, window.start, window.end, step=step, env=filters.env, now=now
    )
    if answer is None:
        return None
    totals = {key: sum(int(row[key]) for row in answer["environments"]) for key in _COUNTS}
    answer.update(hide_fields(totals, _COUNTS, min_count))
    answer["series"] = [hide_fields(row, _COUNTS, min_count) for row in answer["series"]]
    answer["versions"] = _hide_folded(
        fold(answer["versions"], "version", OTHER_VERSIONS, versions),
        "version",
        OTHER_VERSIONS,
        min_count,
    )
    answer["importers"] = _hide_folded(
        fold(answer["importers"], "importer", OTHER_IMPORTERS),
        "importer",
        OTHER_IMPORTERS,
        min_count,
    )
    answer["environments"] = sort_and_hide(
        answer["environments"], key="processes", fields=_COUNTS, min_count=min_count, name="env"
    )
    return _with_min_count(answer, min_count)


def unused_answer(
    conn: sqlite3.Connection, params: Params, *, now: float, min_count: int
) -> dict[str, Any]:
    """``GET /api/v1/unused``: installed in an environment's inventory, imported by nobody.

    No count to hide: it names installed packages only.
    """
    _checked("unused", params)
    filters = parse_filters(params, allowed=("env",))
    window = _window("unused", conn, params, now)
    return unused(conn, window.start, window.end, env=filters.env, now=now)


def user_installed_answer(
    conn: sqlite3.Connection, params: Params, *, now: float, min_count: int
) -> dict[str, Any]:
    """``GET /api/v1/user-installed``: imported from user sites, absent from the inventory."""
    _checked("user-installed", params)
    filters = parse_filters(params, allowed=("env",))
    window = _window("user-installed", conn, params, now)
    answer = user_installed(conn, window.start, window.end, env=filters.env, now=now)
    rows = [
        {
            **row,
            "versions": [hide_fields(v, ("processes",), min_count) for v in row["versions"]],
        }
        for row in answer["libraries"]
    ]
    answer["libraries"] = sort_and_hide(
        rows, key="processes", fields=("processes",), min_count=min_count
    )
    return _with_min_count(answer, min_count)


def environments_answer(
    conn: sqlite3.Connection, params: Params, *, now: float, min_count: int
) -> dict[str, Any]:
    """``GET /api/v1/environments``: environments, labels, last seen, inventory size."""
    _checked("environments", params)
    rows = environments(conn)
    return _with_min_count(
        {"environments": [hide_fields(row, ("processes",), min_count) for row in rows]},
        min_count,
    )


Answer = Callable[..., Optional[dict[str, Any]]]
ANSWERS: dict[str, Answer] = {
    "libraries": libraries_answer,
    "unused": unused_answer,
    "user-installed": user_installed_answer,
    "environments": environments_answer,
}

"""The answers of the API and the CLI: parameters in, JSON-ready dicts out, privacy applied.

Each ``*_answer`` function takes a read-only connection, the query parameters as a plain
mapping (the HTTP query string, or what the CLI built from its options), the current time,
``min_count`` and ``min_users``; it checks the parameters (raising
:class:`~popcon.server.query.params.BadParameter`), asks :mod:`~.libraries`,
:mod:`~.environments` or :mod:`~.programs` and hides small counts. The HTTP handlers and
``popcon top --db`` both call these, so the two give the same JSON.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Callable, Optional

from popcon.server.query.environments import (
    QUIET_AFTER,
    environments,
    unused,
    user_installed,
)
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
from popcon.server.query.privacy import (
    hidden_people_text,
    hide_fields,
    hide_people,
    is_hidden,
    sort_by_people_and_hide,
    sort_shown,
)
from popcon.server.query.programs import programs
from popcon.server.query.window import bucket_width

Params = Mapping[str, str]
_WINDOW = ("since", "from", "until")
_COUNTS = ("processes", "direct", "transitive")
_WITH_PROGRAMS = (*_COUNTS, "program")
#: ``include=programs``: count the programs' own imports too.
INCLUDE_PROGRAMS = "programs"

#: Query parameters each endpoint takes (``token`` is the auth's, accepted everywhere).
ENDPOINT_PARAMS: dict[str, tuple[str, ...]] = {
    "libraries": (*_WINDOW, "env", "label", "level", "origin", "include"),
    "library": (*_WINDOW, "env", "step", "include"),
    "programs": (*_WINDOW, "env", "label"),
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
    "programs": "6h",
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


def _with_thresholds(answer: dict[str, Any], min_count: int, min_users: int) -> dict[str, Any]:
    answer["min_count"] = min_count
    answer["min_users"] = min_users
    return answer


def _includes_programs(params: Params) -> bool:
    """``include=programs`` (the only thing ``include`` takes)."""
    include = params.get("include")
    if include is None:
        return False
    if include != INCLUDE_PROGRAMS:
        raise BadParameter("include", f"expected {INCLUDE_PROGRAMS}, got {include!r}")
    return True


def fold_and_hide(
    rows: Sequence[dict[str, Any]],
    name: str,
    other: str,
    min_count: int,
    min_users: int,
    keep: Collection[str] | None = None,
) -> list[dict[str, object]]:
    """``rows`` (raw counts, most processes first) hidden as any answer's rows and sorted by
    processes, with the rows past :data:`MAX_ROWS`, or those whose ``name`` is not in
    ``keep`` when given, summed into one row named ``other``, last.

    The people of the summed row are unknown (its rows' sketches are not at hand), but no
    fewer than those of its row with most people: it is hidden as "fewer than N people"
    unless that row alone reaches ``min_users``, so that it never shows what the hidden rows
    it sums would not."""
    if keep is None:
        kept, folded = list(rows[:MAX_ROWS]), list(rows[MAX_ROWS:])
    else:
        kept = [row for row in rows if row[name] in keep]
        folded = [row for row in rows if row[name] not in keep]
    shown = sort_shown(
        [hide_people(row, ("processes",), min_count, min_users) for row in kept],
        key="processes",
        name=name,
    )
    if folded:
        known = [row["users"] for row in folded if isinstance(row.get("users"), int)]
        summed = {name: other, "users": None, "processes": sum(r["processes"] for r in folded)}
        if known and is_hidden(max(known), min_users) and summed["processes"]:
            shown.append({**summed, "processes": hidden_people_text(min_users)})
        else:
            shown.append(hide_fields(summed, ("processes",), min_count))
    return shown


def _hide_importers(
    rows: Sequence[dict[str, Any]], library_users: object, min_count: int, min_users: int
) -> list[dict[str, object]]:
    """The importers of a library, folded and hidden. No sketch is kept per importer, so an
    importer row's people are unknown, but no more than those of either library of the edge:
    every row is hidden as "fewer than N people" when the imported library (``library_users``)
    had fewer people than ``min_users`` in the window, and a row when its importer
    (``importer_users``) had."""
    marked = [
        {
            "importer": row["importer"],
            "users": _few(row.get("importer_users"), min_users),
            "processes": row["processes"],
        }
        for row in rows
    ]
    shown = fold_and_hide(marked, "importer", OTHER_IMPORTERS, min_count, min_users)
    if isinstance(_few(library_users, min_users), int):
        text = hidden_people_text(min_users)
        shown = [{**row, "processes": text} if row["processes"] else row for row in shown]
    return shown


def _few(users: object, min_users: int) -> int | None:
    """``users`` when it is a count below ``min_users``, else None."""
    if isinstance(users, int) and not isinstance(users, bool) and is_hidden(users, min_users):
        return users
    return None


def libraries_answer(
    conn: sqlite3.Connection,
    params: Params,
    *,
    now: float,
    min_count: int,
    min_users: int,
) -> dict[str, Any]:
    """``GET /api/v1/libraries``: libraries people's code used in the window, by users (then
    processes); ``include=programs`` counts the programs' own imports too."""
    _checked("libraries", params)
    filters = parse_filters(params)
    include_programs = _includes_programs(params)
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
        programs=include_programs,
    )
    answer["libraries"] = sort_by_people_and_hide(
        answer["libraries"],
        fields=_WITH_PROGRAMS if include_programs else _COUNTS,
        min_count=min_count,
        min_users=min_users,
    )
    answer["filters"] = filters.as_json()
    answer["include"] = [INCLUDE_PROGRAMS] if include_programs else []
    return _with_thresholds(answer, min_count, min_users)


def programs_answer(
    conn: sqlite3.Connection,
    params: Params,
    *,
    now: float,
    min_count: int,
    min_users: int,
) -> dict[str, Any]:
    """``GET /api/v1/programs``: the programs processes ran (console scripts and ``python -m``
    of installed distributions), by users (then processes), with their versions."""
    _checked("programs", params)
    filters = parse_filters(params, allowed=("env", "label"))
    window = _window("programs", conn, params, now)
    answer = programs(
        conn, window.start, window.end, env=filters.env, labels=filters.labels, now=now
    )
    rows = [
        {
            **row,
            "versions": [
                hide_people(version, ("processes",), min_count, min_users)
                for version in row["versions"]
            ],
        }
        for row in answer["programs"]
    ]
    answer["programs"] = sort_by_people_and_hide(
        rows, fields=("processes",), min_count=min_count, min_users=min_users
    )
    answer["filters"] = filters.as_json()
    return _with_thresholds(answer, min_count, min_users)


def library_answer(
    conn: sqlite3.Connection,
    name: str,
    params: Params,
    *,
    now: float,
    min_count: int,
    min_users: int,
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
    include_programs = _includes_programs(params)
    answer = library_detail(
        conn,
        name,
        window.start,
        window.end,
        step=step,
        env=filters.env,
        now=now,
        programs=include_programs,
    )
    if answer is None:
        return None
    counts = _WITH_PROGRAMS if include_programs else _COUNTS
    totals: dict[str, object] = {
        key: sum(int(row[key]) for row in answer["environments"]) for key in counts
    }
    library_users = totals["users"] = answer["users"]
    totals["direct_users"] = answer["direct_users"]
    answer.update(hide_people(totals, counts, min_count, min_users))
    answer["series"] = [hide_people(row, counts, min_count, min_users) for row in answer["series"]]
    answer["versions"] = fold_and_hide(
        answer["versions"], "version", OTHER_VERSIONS, min_count, min_users, versions
    )
    answer["importers"] = _hide_importers(answer["importers"], library_users, min_count, min_users)
    answer["environments"] = sort_shown(
        [hide_people(row, counts, min_count, min_users) for row in answer["environments"]],
        key="processes",
        name="env",
    )
    answer["include"] = [INCLUDE_PROGRAMS] if include_programs else []
    return _with_thresholds(answer, min_count, min_users)


def unused_answer(
    conn: sqlite3.Connection,
    params: Params,
    *,
    now: float,
    min_count: int,
    min_users: int,
) -> dict[str, Any]:
    """``GET /api/v1/unused``: installed in an environment's inventory, imported by nobody,
    and why each is installed (:func:`~.environments.why_installed`).

    No count to hide: it names installed packages only.
    """
    _checked("unused", params)
    filters = parse_filters(params, allowed=("env",))
    window = _window("unused", conn, params, now)
    return unused(conn, window.start, window.end, env=filters.env, now=now)


def user_installed_answer(
    conn: sqlite3.Connection,
    params: Params,
    *,
    now: float,
    min_count: int,
    min_users: int,
) -> dict[str, Any]:
    """``GET /api/v1/user-installed``: imported from user sites, absent from the inventory."""
    _checked("user-installed", params)
    filters = parse_filters(params, allowed=("env",))
    window = _window("user-installed", conn, params, now)
    answer = user_installed(conn, window.start, window.end, env=filters.env, now=now)
    rows = [
        {
            **row,
            "versions": [
                hide_people(version, ("processes",), min_count, min_users)
                for version in row["versions"]
            ],
        }
        for row in answer["libraries"]
    ]
    answer["libraries"] = sort_by_people_and_hide(
        rows, fields=("processes",), min_count=min_count, min_users=min_users
    )
    return _with_thresholds(answer, min_count, min_users)


def environments_answer(
    conn: sqlite3.Connection,
    params: Params,
    *,
    now: float,
    min_count: int,
    min_users: int,
    quiet_after: float = QUIET_AFTER,
) -> dict[str, Any]:
    """``GET /api/v1/environments``: environments, labels, last seen, inventory size, and
    whether each is quiet (no report for more than ``quiet_after`` seconds, also answered)."""
    _checked("environments", params)
    rows = environments(conn, now=now, quiet_after=quiet_after)
    return _with_thresholds(
        {
            "environments": [hide_fields(row, ("processes",), min_count) for row in rows],
            "quiet_after": quiet_after,
        },
        min_count,
        min_users,
    )


Answer = Callable[..., Optional[dict[str, Any]]]
ANSWERS: dict[str, Answer] = {
    "libraries": libraries_answer,
    "programs": programs_answer,
    "unused": unused_answer,
    "user-installed": user_installed_answer,
    "environments": environments_answer,
}

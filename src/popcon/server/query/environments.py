"""The answers about environments: the list of them, what each has installed but nobody
imported (``unused``), and what its processes imported from user sites that its inventory
lacks (``user_installed``).

Like :mod:`~.libraries`, each takes a read-only connection and returns JSON-ready dicts with
**raw** counts.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from popcon.server.query.connection import snapshot
from popcon.server.query.counting import parts
from popcon.server.query.params import iso
from popcon.server.query.people import WITH_PROGRAMS, Kinds, gather, kinds_where, merge_into, users
from popcon.server.query.sql import SKETCH_TABLES, SUMS, source_ids, usage, usage_statements
from popcon.server.query.totals import report_totals
from popcon.server.query.window import answered_span, bucket_width
from popcon.server.storage.schema import ORIGIN_CODES, parse_labels

#: Seconds without a report after which an environment that reported is flagged quiet (the
#: default of ``popcon serve --quiet-after``, which is in hours).
QUIET_AFTER = 72 * 3600.0


def unused(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    *,
    env: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Installed in an environment's latest inventory, imported by none of its processes in
    ``[start, end)``, and why it is installed.

    ``{"from", "until", "environments": [{"env", "inventory_id", "inventory_at",
    "reasons_known", "libraries": [{"name", "version", "why", "tool", "required_by",
    "needed_by", "removable"}]}]}``, one entry per environment that has an inventory (only
    ``env`` when given; an unknown ``env`` gives an empty list). Libraries by name; what each
    field says is :func:`why_installed`'s.
    """
    with snapshot(conn) as rolled:
        counted = answered_span(conn, start, end, now)
        sql = "SELECT id, name, inventory_id, inventory_at FROM envs WHERE inventory_id IS NOT NULL"
        envs = (
            conn.execute(sql + " AND name = ?", (env,)) if env is not None else conn.execute(sql)
        ).fetchall()
        answer = []
        for env_id, env_name, inventory_id, inventory_at in sorted(envs, key=lambda r: r[1]):
            sources = [
                r[0] for r in conn.execute("SELECT id FROM sources WHERE env_id = ?", (env_id,))
            ]
            used = {
                name
                for (name,) in conn.execute(
                    "SELECT l.name FROM (SELECT DISTINCT lib_id FROM ("
                    + usage(counted, rolled, columns="lib_id", sources=sources)
                    + ")) AS x JOIN libs l ON l.id = x.lib_id"
                )
            }
            installed = conn.execute(
                "SELECT name, version, requested, requires FROM inventory WHERE env_id = ? "
                "ORDER BY name",
                (env_id,),
            ).fetchall()
            answer.append(
                {
                    "env": env_name,
                    "inventory_id": inventory_id,
                    "inventory_at": iso(inventory_at),
                    "reasons_known": any(row[3] is not None for row in installed),
                    "libraries": why_installed(installed, used),
                }
            )
    return {**counted.window, "environments": answer}


#: Distributions that install packages rather than serve programs: Unused shows them apart.
PACKAGING_TOOLS = frozenset({"pip", "setuptools", "wheel"})
#: What ``why`` says of an unused distribution.
WHY_REQUESTED = "requested"
WHY_DEPENDENCY = "dependency"
WHY_ORPHAN = "orphan"
WHY_UNKNOWN = "unknown"


def why_installed(
    installed: list[tuple[str, str, int | None, str | None]], used: set[str]
) -> list[dict[str, Any]]:
    """The unused ones of an inventory's ``(name, version, requested, requires)`` rows, each
    ``{"name", "version", "why", "tool", "required_by", "needed_by", "removable"}``.

    ``why``: ``requested`` (installed on request: the installer's ``REQUESTED`` marker),
    ``dependency`` (else, required by another installed distribution, named in
    ``required_by``), ``orphan`` (neither, in an inventory where others carry the marker: a
    dependency left behind, or an extra's), or ``unknown`` (the inventory does not say).
    ``tool``: pip, setuptools or wheel. ``needed_by``: the used distributions that require it,
    directly or through others; ``removable``: none does, so removing it with its unused
    dependents breaks nothing used (None when the inventory says nothing of requirements).
    """
    requires = {name: tuple(text.split(",")) if text else () for name, _v, _r, text in installed}
    required_by: dict[str, set[str]] = {}
    for name, names in requires.items():
        for required in names:
            if required in requires and required != name:
                required_by.setdefault(required, set()).add(name)
    markers = any(requested for _n, _v, requested, _t in installed)
    reasons_known = any(text is not None for _n, _v, _r, text in installed)
    found = []
    for name, version, requested, _text in installed:
        if name in used:
            continue
        dependents = required_by.get(name, set())
        if requested:
            why = WHY_REQUESTED
        elif dependents:
            why = WHY_DEPENDENCY
        elif requested is not None and markers:
            why = WHY_ORPHAN
        else:
            why = WHY_UNKNOWN
        needed = sorted(_dependents(name, required_by) & used)
        found.append(
            {
                "name": name,
                "version": version,
                "why": why,
                "tool": name in PACKAGING_TOOLS,
                "required_by": sorted(dependents),
                "needed_by": needed,
                "removable": not needed if reasons_known else None,
            }
        )
    return found


def _dependents(name: str, required_by: dict[str, set[str]]) -> set[str]:
    """Every installed distribution that requires ``name``, directly or through others."""
    found: set[str] = set()
    waiting = [name]
    while waiting:
        for dependent in required_by.get(waiting.pop(), ()):
            if dependent not in found:
                found.add(dependent)
                waiting.append(dependent)
    return found


def user_installed(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    *,
    env: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Libraries imported from user sites (origin ``user``) in ``[start, end)`` that are not in
    their environment's inventory: candidates to add to the image.

    ``{"from", "until", "libraries": [{"name", "env", "users", "processes", "versions",
    "env_has_inventory"}]}``, most processes first; ``versions``: ``[{"version", "users",
    "processes"}]`` seen for that library in that environment from user sites; ``users``: the
    people who imported it from their user site (None where unknown).
    ``env_has_inventory`` is False when the environment never sent an inventory (then
    "absent from the inventory" cannot be checked and every user-site library is listed).
    """
    with snapshot(conn) as rolled:
        counted = answered_span(conn, start, end, now)
        sources = source_ids(conn, env, None)
        rows = conn.execute(
            f"SELECT e.id, e.name, e.inventory_id IS NOT NULL, l.name, x.version, {SUMS} FROM ("
            + usage(
                counted,
                rolled,
                columns="source_id, lib_id, version",
                sources=sources,
                by_source=True,
                where=f"origin = {ORIGIN_CODES['user']}",
            )
            + ") AS x JOIN sources s ON s.id = x.source_id JOIN envs e ON e.id = s.env_id "
            "JOIN libs l ON l.id = x.lib_id "
            "WHERE NOT EXISTS (SELECT 1 FROM inventory i WHERE i.env_id = e.id "
            "AND i.name = l.name) GROUP BY e.id, l.id, x.version"
        ).fetchall()
        people: dict[tuple[Any, ...], Kinds] = {}
        if rows:
            env_of = dict(
                conn.execute("SELECT s.id, e.name FROM sources s JOIN envs e ON e.id = s.env_id")
            )
            lib_of = dict(conn.execute("SELECT id, name FROM libs"))
            for (source_id, lib_id, version), sketches in gather(
                conn,
                usage_statements(
                    counted,
                    rolled,
                    select="source_id, lib_id, version, kind, registers",
                    sources=sources,
                    by_source=True,
                    where=kinds_where(WITH_PROGRAMS, "user"),
                    tables=SKETCH_TABLES,
                ),
                key_of=3,
            ).items():
                env_name, name = env_of.get(source_id), lib_of.get(lib_id)
                merge_into(people, (env_name, name), sketches)
                merge_into(people, (env_name, name, version), sketches)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for _env_id, env_name, has_inventory, name, version, *counts in rows:
        processes = parts(*counts, programs=True)["processes"]
        entry = found.setdefault(
            (env_name, name),
            {
                "name": name,
                "env": env_name,
                "users": users(people.get((env_name, name)), WITH_PROGRAMS),
                "processes": 0,
                "versions": [],
                "env_has_inventory": bool(has_inventory),
            },
        )
        entry["processes"] += processes
        entry["versions"].append(
            {
                "version": version,
                "users": users(people.get((env_name, name, version)), WITH_PROGRAMS),
                "processes": processes,
            }
        )
    answer = list(found.values())
    for entry in answer:
        entry["versions"].sort(key=lambda r: (-r["processes"], r["version"]))
    answer.sort(key=lambda r: (-r["processes"], r["name"], r["env"]))
    return {**counted.window, "libraries": answer}


def environments(
    conn: sqlite3.Connection, *, now: float, quiet_after: float = QUIET_AFTER
) -> list[dict[str, Any]]:
    """Every environment: ``[{"env", "labels": [{key: value}, ...], "first_seen",
    "last_seen", "py", "inventory_size", "inventory_id", "inventory_at", "processes",
    "quiet"}]``.

    Times are bucket starts (ISO-8601; ``inventory_at`` None without an inventory);
    ``labels`` lists each label set seen; ``processes`` is the stored total of processes;
    ``quiet`` is True when even the end of its last report's bucket is more than
    ``quiet_after`` seconds before ``now`` (it reported, then fell silent).
    """
    width = bucket_width(conn)
    with snapshot(conn):
        labels: dict[int, list[dict[str, str]]] = {}
        for env_id, text in conn.execute("SELECT env_id, labels FROM sources ORDER BY labels"):
            labels.setdefault(env_id, []).append(parse_labels(text))
        processes = {row.env: row.processes for row in report_totals(conn)}
        rows = conn.execute(
            "SELECT e.id, e.name, e.first_seen, e.last_seen, e.py, e.inventory_id, "
            "e.inventory_at, (SELECT COUNT(*) FROM inventory i WHERE i.env_id = e.id) "
            "FROM envs e ORDER BY e.name"
        ).fetchall()
    answer = []
    for row in rows:
        env_id, name, first_seen, last_seen, py, inventory_id, inventory_at, size = row
        answer.append(
            {
                "env": name,
                "labels": labels.get(env_id, []),
                "first_seen": iso(first_seen),
                "last_seen": iso(last_seen),
                "py": py,
                "inventory_size": size,
                "inventory_id": inventory_id,
                "inventory_at": iso(inventory_at) if inventory_at is not None else None,
                "processes": processes.get(name, 0),
                "quiet": now - (last_seen + width) > quiet_after,
            }
        )
    return answer

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
from popcon.server.query.sql import SUMS, source_ids, usage
from popcon.server.query.totals import report_totals
from popcon.server.query.window import answered_span
from popcon.server.storage.schema import ORIGIN_CODES, parse_labels


def unused(
    conn: sqlite3.Connection,
    start: float,
    end: float,
    *,
    env: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Installed in an environment's latest inventory, imported by none of its processes in
    ``[start, end)``.

    ``{"from", "until", "environments": [{"env", "inventory_id", "inventory_at",
    "libraries": [{"name", "version"}]}]}``, one entry per environment that has an inventory
    (only ``env`` when given; an unknown ``env`` gives an empty list). Libraries by name.
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
                "SELECT name, version FROM inventory WHERE env_id = ? ORDER BY name", (env_id,)
            )
            answer.append(
                {
                    "env": env_name,
                    "inventory_id": inventory_id,
                    "inventory_at": iso(inventory_at),
                    "libraries": [
                        {"name": name, "version": version}
                        for name, version in installed
                        if name not in used
                    ],
                }
            )
    return {**counted.window, "environments": answer}


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

    ``{"from", "until", "libraries": [{"name", "env", "processes", "versions",
    "env_has_inventory"}]}``, most processes first; ``versions``: ``[{"version",
    "processes"}]`` seen for that library in that environment from user sites.
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
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for _env_id, env_name, has_inventory, name, version, d, t, u, k in rows:
        processes = parts(d, t, u, k)["processes"]
        entry = found.setdefault(
            (env_name, name),
            {
                "name": name,
                "env": env_name,
                "processes": 0,
                "versions": [],
                "env_has_inventory": bool(has_inventory),
            },
        )
        entry["processes"] += processes
        entry["versions"].append({"version": version, "processes": processes})
    answer = list(found.values())
    for entry in answer:
        entry["versions"].sort(key=lambda r: (-r["processes"], r["version"]))
    answer.sort(key=lambda r: (-r["processes"], r["name"], r["env"]))
    return {**counted.window, "libraries": answer}


def environments(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every environment: ``[{"env", "labels": [{key: value}, ...], "first_seen",
    "last_seen", "py", "inventory_size", "inventory_id", "inventory_at", "processes"}]``.

    Times are bucket starts (ISO-8601; ``inventory_at`` None without an inventory);
    ``labels`` lists each label set seen; ``processes`` is the stored total of processes.
    """
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
            }
        )
    return answer

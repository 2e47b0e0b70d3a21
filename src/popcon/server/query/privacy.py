"""Privacy at the output: counts below ``min_count`` are shown as "fewer than N", and every count
of a row that fewer than ``min_users`` people used as "fewer than N people".

Applied to every answer of the API, the CLI and ``/metrics``, except ``unused`` (which names
installed packages only). A hidden count is a string so that no client can mistake it for a
number; zero is shown as it is (it says that nobody used something, about nobody). Where the
people are unknown (``users`` None: ``popcon/1`` and statsd senders), ``min_count`` alone
decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

Count = Union[int, str]


def hidden_text(min_count: int) -> str:
    return f"fewer than {min_count}"


def is_hidden(count: int, min_count: int) -> bool:
    return 0 < count < min_count


def hide(count: int, min_count: int) -> Count:
    """``count``, or ``"fewer than N"`` when ``0 < count < min_count`` (1 disables hiding)."""
    return hidden_text(min_count) if is_hidden(count, min_count) else count


def hide_fields(
    row: Mapping[str, object], fields: Iterable[str], min_count: int
) -> dict[str, object]:
    """A copy of ``row`` with the integer ``fields`` hidden where small."""
    out = dict(row)
    for name in fields:
        value = out.get(name)
        if type(value) is int:
            out[name] = hide(value, min_count)
    return out


def sort_and_hide(
    rows: Sequence[Mapping[str, Any]],
    *,
    key: str,
    fields: Iterable[str],
    min_count: int,
    name: str = "name",
) -> list[dict[str, object]]:
    """Rows sorted by ``key`` (descending) and then ``name``, with small counts hidden.

    Hidden rows sort among themselves by name only, so their order reveals nothing about
    their true counts.
    """
    fields = tuple(fields)

    def order(row: Mapping[str, Any]) -> tuple[int, str]:
        value = int(row[key])
        shown = 0 if is_hidden(value, min_count) else value
        return (-shown, str(row[name]))

    return [hide_fields(row, fields, min_count) for row in sorted(rows, key=order)]


#: The people of a row, and the counts each one covers: a row whose ``users`` are hidden has
#: every count hidden; ``direct_users`` covers the direct counts, ``program_users`` the
#: programs'.
PEOPLE_FIELDS = {
    "direct_users": ("direct_users", "direct"),
    "program_users": ("program_users", "program"),
}


def hidden_people_text(min_users: int) -> str:
    return f"fewer than {min_users} people"


def hide_people(
    row: Mapping[str, object], fields: Iterable[str], min_count: int, min_users: int
) -> dict[str, object]:
    """A copy of ``row`` with ``fields`` hidden below ``min_count`` and, where its people are
    known and fewer than ``min_users``, the counts they cover hidden."""
    out = hide_fields(row, fields, min_count)
    text = hidden_people_text(min_users)
    people = row.get("users")
    if isinstance(people, int) and is_hidden(people, min_users):
        covered: Iterable[str] = (*fields, "users", *PEOPLE_FIELDS)
        for name in covered:
            if _count(row.get(name)):
                out[name] = text
        return out
    for users_field, covered in PEOPLE_FIELDS.items():
        value = row.get(users_field)
        if isinstance(value, int) and is_hidden(value, min_users):
            for name in covered:
                if _count(row.get(name)):
                    out[name] = text
    return out


def _count(value: object) -> bool:
    return type(value) is int and value != 0


def _shown(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def sort_by_people_and_hide(
    rows: Sequence[Mapping[str, Any]],
    *,
    fields: Iterable[str],
    min_count: int,
    min_users: int,
    name: str = "name",
) -> list[dict[str, object]]:
    """Rows with their counts hidden (:func:`hide_people`), sorted by users shown (unknown
    after every known number), then processes shown, then ``name``: hidden rows sort among
    themselves by name only."""
    fields = tuple(fields)
    hidden = [hide_people(row, fields, min_count, min_users) for row in rows]

    def order(row: Mapping[str, Any]) -> tuple[int, int, str]:
        people = row.get("users")
        shown_people = -1 if people is None else _shown(people)
        return (-shown_people, -_shown(row.get("processes")), str(row[name]))

    return sorted(hidden, key=order)


def sort_shown(
    rows: Sequence[dict[str, object]], *, key: str, name: str = "name"
) -> list[dict[str, object]]:
    """Rows already hidden, sorted by the count ``key`` shown (a hidden count as 0), then
    ``name``."""
    return sorted(rows, key=lambda row: (-_shown(row.get(key)), str(row[name])))

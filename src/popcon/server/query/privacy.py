"""Privacy at the output: counts below ``min_count`` are shown as "fewer than N".

Applied to every answer of the API, the CLI and ``/metrics``, except ``unused`` (which names
installed packages only). A hidden count is a string so that no client can mistake it for a
number; zero is shown as it is (it says that nobody used something, about nobody).
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
        if isinstance(value, int) and not isinstance(value, bool):
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
